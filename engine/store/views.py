"""The dashboard's aggregations: every chart's numbers come out of DuckDB already binned or summarised.

A page never pulls samples row by row: each query here filters one campaign (and one Grow step where it
can) and returns at most a few thousand rows however many candidates the step holds (16M in the paper).
"""

from __future__ import annotations

from .core import _named, now
from .ratings import _taken


def _tau_params(taus: list[float]) -> tuple[str, dict]:
    """`count(*) FILTER (WHERE reward > $t0) AS k0, ...`: one column per threshold, values as parameters."""
    cols = ", ".join(f"count(*) FILTER (WHERE reward > $t{i}) AS k{i}" for i in range(len(taus)))
    return cols, {f"t{i}": float(t) for i, t in enumerate(taus)}


class ViewsMixin:
    # ---------------------------------------------------------------- campaign list and events
    def campaign_list(self) -> list[dict]:
        """Campaigns with their sample counts (from the shards table: no scan of samples)."""
        return self._rows(
            "SELECT c.id, c.name, c.mode, c.state, c.stop_reason, c.created_at, c.updated_at, "
            "coalesce(s.n, 0)::BIGINT AS n_samples FROM campaigns c LEFT JOIN "
            "(SELECT campaign_id, sum(n_rows) AS n FROM shards WHERE kind = 'samples' GROUP BY 1) s "
            "ON s.campaign_id = c.id "
            "ORDER BY c.created_at DESC"
        )

    def recent_events(self, cid: str | None, limit: int = 200, kinds: list[str] | None = None) -> list[dict]:
        """The newest events first; cid None gives the events of no campaign (accounts)."""
        where = "campaign_id = $cid" if cid is not None else "campaign_id IS NULL"
        if kinds:
            where += " AND list_contains($kinds, kind)"
        sql = (
            "SELECT id, ts, actor, kind, state, message, payload FROM events "
            f"WHERE {where} ORDER BY id DESC LIMIT $limit"
        )
        return self._rows(sql, _named(sql, {"cid": cid, "kinds": kinds, "limit": limit}))

    # ---------------------------------------------------------------- reward distributions
    def reward_grows(self, cid: str) -> list[int]:
        """Grow steps that have scored samples (a running Grow appears as soon as its first shard lands)."""
        rows = (
            self.cursor()
            .execute("SELECT DISTINCT grow FROM samples WHERE campaign_id = ? ORDER BY grow", [cid])
            .fetchall()
        )
        return [int(r[0]) for r in rows]

    def reward_histogram(self, cid: str, bins: int = 50, generated_only: bool = False) -> list[dict]:
        """Per Grow step and reward bin [lo, hi): count, share of the step, and the ECDF at hi.

        The ECDF is the cumulative sum of the binned counts, so both curves cost one GROUP BY.
        """
        sql = """
        WITH h AS (
            SELECT grow, least(greatest(CAST(floor(reward * $bins) AS INTEGER), 0), $bins - 1) AS bin,
                   count(*) AS n
            FROM samples WHERE campaign_id = $cid AND (NOT $gen OR sample_idx >= 0)
            GROUP BY grow, bin)
        SELECT grow, bin, bin / $bins AS lo, (bin + 1) / $bins AS hi, n,
               n / sum(n) OVER (PARTITION BY grow) AS share,
               sum(n) OVER (PARTITION BY grow ORDER BY bin ROWS UNBOUNDED PRECEDING)
                 / sum(n) OVER (PARTITION BY grow) AS ecdf
        FROM h ORDER BY grow, bin
        """
        return self._rows(sql, {"cid": cid, "bins": int(bins), "gen": bool(generated_only)})

    def kept_shares(self, cid: str, grow: int, taus: list[float], generated_only: bool = False) -> list[dict]:
        """For each threshold tau: how many pairs of D_g the filter 1[R > tau] keeps, and their share of the
        pairs counted (all pairs of D_g, or with `generated_only` the generated candidates alone)."""
        if not taus:
            return []
        cols, params = _tau_params(taus)
        sql = (
            f"SELECT count(*) AS n_total, {cols} FROM samples WHERE campaign_id = $cid AND grow = $grow "
            "AND (NOT $gen OR sample_idx >= 0)"
        )
        row = self._rows(sql, params | {"cid": cid, "grow": int(grow), "gen": bool(generated_only)})[0]
        n = row["n_total"]
        return [
            {"tau": t, "kept": row[f"k{i}"], "n_total": n, "share": row[f"k{i}"] / n if n else None}
            for i, t in enumerate(taus)
        ]

    def source_percentiles(
        self,
        cid: str,
        grow: int,
        bands: int = 50,
        taus: list[float] | None = None,
        generated_only: bool = True,
        max_sources: int = 20000,
        seed: int = 0,
    ) -> dict:
        """Per-source reward percentiles, summarised across sources.

        Sources are ranked by their median reward and cut into `bands` equal groups; each band gives the mean
        of its sources' p10 / p50 / p90 / max. `empty_at[tau]` is the share of sources whose best candidate is
        <= tau: the sources a global threshold would leave with no training data (REST.md, appendix A.7).
        A step with more than `max_sources` sources is summarised on a seeded uniform sample of that many
        (`n_sources` of `n_sources_total`): the shares are then estimates, to about 0.4 percentage points.
        """
        taus = list(taus or [])
        empty = "".join(f", count(*) FILTER (WHERE mx <= $t{i}) AS e{i}" for i in range(len(taus)))
        sql = f"""
        WITH ids AS (SELECT DISTINCT source_id FROM samples
                     WHERE campaign_id = $cid AND grow = $grow AND (NOT $gen OR sample_idx >= 0)),
        src AS (SELECT source_id FROM ids ORDER BY hash(source_id, $seed) LIMIT $max),
        per AS (
            SELECT source_id, quantile_cont(reward, [0.1, 0.5, 0.9]) AS q, max(reward) AS mx,
                   avg(reward) AS mean
            FROM samples WHERE campaign_id = $cid AND grow = $grow AND (NOT $gen OR sample_idx >= 0)
              AND source_id IN (SELECT source_id FROM src)
            GROUP BY source_id),
        r AS (SELECT *, ntile($bands) OVER (ORDER BY q[2], mean, source_id) AS band FROM per)
        SELECT band, count(*) AS n_sources, avg(q[1]) AS p10, avg(q[2]) AS p50, avg(q[3]) AS p90,
               avg(mx) AS max, avg(mean) AS mean, (SELECT count(*) FROM ids) AS n_total{empty}
        FROM r GROUP BY band ORDER BY band
        """
        params = {
            "cid": cid,
            "grow": int(grow),
            "bands": int(bands),
            "gen": bool(generated_only),
            "seed": int(seed),
            "max": int(max_sources),
        }
        params |= {f"t{i}": float(t) for i, t in enumerate(taus)}
        rows = self._rows(sql, params)
        n_sources = sum(r["n_sources"] for r in rows)
        n_total = rows[0].pop("n_total") if rows else 0
        for r in rows[1:]:
            r.pop("n_total")
        empty_at = [{"tau": t, "sources": sum(r.pop(f"e{i}") for r in rows)} for i, t in enumerate(taus)]
        for e in empty_at:
            e["share"] = e["sources"] / n_sources if n_sources else None
        return {"bands": rows, "n_sources": n_sources, "n_sources_total": n_total, "empty_at": empty_at}

    def reward_vs_length(self, cid: str, grow: int, reward_bins: int = 20, length_bins: int = 24) -> dict:
        """2-D counts of generated candidates by output length (tokens) and reward, plus mean reward per
        length bin."""
        # One scan groups by (exact length, reward bin): a few thousand groups; lengths are binned afterwards.
        sql = """
        WITH g AS (SELECT n_tokens AS t,
                          least(greatest(CAST(floor(reward * $rbins) AS INTEGER), 0), $rbins - 1) AS rbin,
                          count(*) AS n, sum(reward) AS sr
                   FROM samples WHERE campaign_id = $cid AND grow = $grow AND sample_idx >= 0
                     AND n_tokens IS NOT NULL
                   GROUP BY ALL),
        w AS (SELECT greatest(CAST(ceil((coalesce(max(t), 0) + 1) / $lbins) AS INTEGER), 1) AS width FROM g),
        b AS (SELECT (t // width) * width AS len_lo, width, rbin, n, sr FROM g, w)
        SELECT len_lo, any_value(width) AS width, rbin, sum(n)::BIGINT AS n, sum(sr) / sum(n) AS mean_reward
        FROM b GROUP BY GROUPING SETS ((len_lo, rbin), (len_lo)) ORDER BY len_lo, rbin NULLS FIRST
        """
        rows = self._rows(
            sql, {"cid": cid, "grow": int(grow), "rbins": int(reward_bins), "lbins": int(length_bins)}
        )
        cells = [r for r in rows if r["rbin"] is not None]
        by_length = [
            {"len_lo": r["len_lo"], "width": r["width"], "n": r["n"], "mean_reward": r["mean_reward"]}
            for r in rows
            if r["rbin"] is None
        ]
        return {"cells": cells, "by_length": by_length, "reward_bins": int(reward_bins)}

    def grow_best_of_n(
        self, cid: str, grow: int, ns: list[int], max_sources: int = 10000, seed: int = 0
    ) -> list[dict]:
        """Expected best reward of n candidates drawn without replacement from a source's K samples,
        averaged over sources.

        With a source's rewards sorted ascending r_(1..K), E[max of n] = sum_i r_(i) C(i-1, n-1) / C(K, n):
        exact for each source. Steps with more than `max_sources` sources use a seeded uniform sample of that
        many sources (10,000 give the mean to about 1e-3 and keep a 16M-sample step under a second);
        `sources` says how many.
        """
        ns = sorted({int(n) for n in ns if int(n) >= 1})
        if not ns:
            return []
        # One weight column per n, computed once per (K, i) on a tiny table: the 16M-row side only multiplies.
        wcols = ", ".join(
            f"CASE WHEN i >= $n{j} AND k >= $n{j} "
            f"THEN exp(lgamma(i) - lgamma($n{j}) - lgamma(i - $n{j} + 1) - lgamma(k + 1) "
            f"+ lgamma($n{j} + 1) + lgamma(k - $n{j} + 1)) ELSE 0 END AS w{j}"
            for j in range(len(ns))
        )
        per = ", ".join(f"sum(s.reward * w.w{j}) AS b{j}" for j in range(len(ns)))
        sums = ", ".join(
            f"sum(b{j}) FILTER (WHERE k >= $n{j}) AS s{j}, count(*) FILTER (WHERE k >= $n{j}) AS c{j}"
            for j in range(len(ns))
        )
        sql = f"""
        WITH src AS (SELECT source_id FROM (SELECT DISTINCT source_id FROM samples
                                            WHERE campaign_id = $cid AND grow = $grow AND sample_idx >= 0)
                     ORDER BY hash(source_id, $seed) LIMIT $max),
        s AS (SELECT source_id, reward, row_number() OVER (PARTITION BY source_id ORDER BY reward) AS i,
                     count(*) OVER (PARTITION BY source_id) AS k
              FROM samples WHERE campaign_id = $cid AND grow = $grow AND sample_idx >= 0
                AND source_id IN (SELECT source_id FROM src)),
        ks AS (SELECT DISTINCT k FROM s),
        w AS (SELECT k, i, {wcols} FROM (SELECT k, unnest(range(1, k + 1)) AS i FROM ks)),
        per AS (SELECT s.source_id, any_value(s.k) AS k, {per} FROM s JOIN w USING (k, i)
                GROUP BY s.source_id)
        SELECT {sums} FROM per
        """
        params = {"cid": cid, "grow": int(grow), "seed": int(seed), "max": int(max_sources)}
        params |= {f"n{j}": n for j, n in enumerate(ns)}
        row = self._rows(sql, params)[0]
        return [
            {"n": n, "sources": row[f"c{j}"], "best_of_n": row[f"s{j}"] / row[f"c{j}"]}
            for j, n in enumerate(ns)
            if row[f"c{j}"]
        ]

    def samples_between(
        self, cid: str, grow: int, lo: float, hi: float, limit: int = 20, generated_only: bool = False
    ) -> list[dict]:
        """A few candidates with lo <= reward <= hi (highest first), with their source, to read what a
        reward means; `origin` says whether each is a generated candidate or an original pair of D (the
        reference, sample_idx -1), which `generated_only` leaves out."""
        return self._rows(
            "WITH top AS (SELECT source_id, sample_idx, text, reward, n_tokens, policy FROM samples "
            "WHERE campaign_id = ? AND grow = ? AND reward BETWEEN ? AND ? AND (NOT ? OR sample_idx >= 0) "
            "ORDER BY reward DESC, source_id, sample_idx LIMIT ?) "
            "SELECT t.source_id, t.sample_idx, "
            "CASE WHEN t.sample_idx >= 0 THEN 'generated' ELSE 'reference' END AS origin, "
            "p.source, t.text, t.reward, t.n_tokens, t.policy FROM top t "
            "LEFT JOIN prompts p ON p.campaign_id = ? AND p.split = 'train' AND p.source_id = t.source_id "
            "ORDER BY t.reward DESC, t.source_id, t.sample_idx",
            [cid, int(grow), float(lo), float(hi), bool(generated_only), int(limit), cid],
        )

    def grow_pair_counts(self, cid: str) -> list[dict]:
        """Per Grow step: the pairs of D_g (`n_total`), how many are generated candidates (`n_generated`)
        and how many are original pairs of D mixed in (`n_reference`, sample_idx -1)."""
        return self._rows(
            "SELECT grow, count(*) AS n_total, count(*) FILTER (WHERE sample_idx >= 0) AS n_generated, "
            "count(*) FILTER (WHERE sample_idx < 0) AS n_reference FROM samples WHERE campaign_id = ? "
            "GROUP BY grow ORDER BY grow",
            [cid],
        )

    def filter_counts(self, cid: str) -> list[dict]:
        """Each Improve step's filter decision (the `filters` row) with its kept set split by origin:
        `kept_generated` of `n_generated` generated candidates and `kept_reference` of `n_reference` original
        pairs of D. The kept set is reproduced from `samples` by the filter's own SQL (Store.apply_filter),
        one scan of the step per Improve."""
        counts = {r["grow"]: r for r in self.grow_pair_counts(cid)}
        out = []
        for f in self._rows("SELECT * FROM filters WHERE campaign_id = ? ORDER BY grow, improve", [cid]):
            kept_sql = self._kept_sql(f["rule"])  # type: ignore[attr-defined]
            sql = (
                "SELECT count(*) AS kept_all, count(*) FILTER (WHERE sample_idx >= 0) AS kept_generated "
                f"FROM ({kept_sql})"
            )
            params = {"cid": cid, "grow": f["grow"], "param": f["param"] if f["param"] is not None else 0.0}
            (row,) = self._rows(sql, _named(sql, params))
            c = counts.get(f["grow"], {"n_generated": 0, "n_reference": 0})
            kg = int(row["kept_generated"])
            out.append(
                f
                | {
                    "kept_generated": kg,
                    "n_generated": int(c["n_generated"]),
                    "kept_reference": int(row["kept_all"]) - kg,
                    "n_reference": int(c["n_reference"]),
                }
            )
        return out

    # ---------------------------------------------------------------- rating progress (the Rate page)
    def annotator_progress(self, annotator: str, skipped_since=None) -> dict:
        """What one annotator sees as progress: tasks rated (ever), skipped since `skipped_since` (None:
        ever), and open tasks still left for them: with a free place counting other annotators' live leases
        (the places next_task can give them), not rated nor skipped by them."""
        sql = f"""
        WITH {_taken("true")},
        k AS (SELECT DISTINCT task_id FROM rating_skips WHERE annotator = $who
              AND ($since::TIMESTAMP IS NULL OR ts >= $since::TIMESTAMP))
        SELECT (SELECT count(*) FROM ratings WHERE annotator = $who) AS rated,
               (SELECT count(*) FROM k) AS skipped,
               (SELECT count(*) FROM rating_tasks t LEFT JOIN c USING (task_id)
                WHERE coalesce(c.taken, 0) < t.required_ratings AND NOT coalesce(c.mine, false)
                  AND t.task_id NOT IN (SELECT task_id FROM k)) AS left
        """
        return self._rows(sql, {"who": annotator, "since": skipped_since, "now": now()})[0]

    # ---------------------------------------------------------------- reward-model versions, unit tests
    def campaign_reward_versions(self, cid: str, extra: list[str] | tuple[str, ...] = ()) -> list[str]:
        """The reward-model versions that belong to campaign `cid`: those its samples and its references
        were scored with, those its own unit-test runs tested, both sides of its reward refreshes, `extra`
        (the version of its config's reward, which only the caller can compute), and every version tested
        as a refresh of one of these. Other campaigns' rewards are left out."""
        sql = """
        WITH own AS (
            SELECT DISTINCT reward_version AS v FROM samples WHERE campaign_id = $cid
            UNION SELECT DISTINCT reward_version FROM reference_rewards WHERE campaign_id = $cid
            UNION SELECT reward_version FROM reward_test_runs
                  WHERE json_extract_string(config, '$.campaign') = $cid
            UNION SELECT json_extract_string(payload, '$.' || k) FROM events, (VALUES ('version'),
                  ('parent_version')) t(k) WHERE campaign_id = $cid AND kind = 'reward_refresh'
            UNION SELECT unnest($extra::VARCHAR[]))
        SELECT v FROM own WHERE v IS NOT NULL
        UNION SELECT reward_version FROM reward_test_runs
              WHERE json_extract_string(config, '$.refresh_of') IN (SELECT v FROM own)
        ORDER BY 1
        """
        rows = self.cursor().execute(sql, {"cid": cid, "extra": [str(x) for x in extra if x]}).fetchall()
        return [r[0] for r in rows]

    def reward_test_history(self, versions: list[str] | None = None) -> list[dict]:
        """Every reward test run, newest first, with the tests that failed and where the run came from;
        only the runs of `versions` when given (a campaign's own: campaign_reward_versions)."""
        sql = (
            "WITH f AS (SELECT run_id, list(test ORDER BY pos) FILTER (WHERE passed = false) AS failed "
            "FROM reward_test_results GROUP BY run_id) "
            "SELECT r.run_id, r.reward_name, r.reward_version, r.created_at, r.verdict, r.n_tests, "
            "r.n_failed, r.n_pairs, r.mean_reward, json_extract_string(r.config, '$.campaign') AS campaign, "
            "json_extract_string(r.config, '$.reference_set') AS reference_set, "
            "coalesce(f.failed, []) AS failed_tests "
            "FROM reward_test_runs r LEFT JOIN f USING (run_id) "
            "WHERE $versions::VARCHAR[] IS NULL OR list_contains($versions::VARCHAR[], r.reward_version) "
            "ORDER BY r.created_at DESC, r.run_id DESC"
        )
        return self._rows(sql, {"versions": None if versions is None else list(versions)})

    def reward_test_matrix(self, limit_runs: int = 30, versions: list[str] | None = None) -> list[dict]:
        """Pass rate of each test in each of the newest `limit_runs` runs (oldest first), of `versions` only
        when given: the history as a grid."""
        sql = (
            "WITH r AS (SELECT run_id, reward_version, created_at FROM reward_test_runs "
            "WHERE $versions::VARCHAR[] IS NULL OR list_contains($versions::VARCHAR[], reward_version) "
            "ORDER BY created_at DESC, run_id DESC LIMIT $limit) "
            "SELECT r.run_id, r.reward_version, r.created_at, t.pos, t.test, t.pass_rate, t.passed "
            "FROM r JOIN reward_test_results t USING (run_id) ORDER BY r.created_at, r.run_id, t.pos"
        )
        return self._rows(
            sql, {"limit": int(limit_runs), "versions": None if versions is None else list(versions)}
        )

    def reward_versions(self, cid: str | None = None, extra: list[str] | tuple[str, ...] = ()) -> list[dict]:
        """Reward-model versions with the verdict of their latest unit-test run: campaign `cid`'s own
        (campaign_reward_versions, `extra` included), or with cid None every version registered or tested.
        `used_in_grows` / `n_samples` say where campaign `cid` used each one."""
        scope = self.campaign_reward_versions(cid, extra) if cid is not None else None
        sql = """
        WITH f AS (SELECT run_id, list(test ORDER BY pos) FILTER (WHERE passed = false) AS failed
                   FROM reward_test_results GROUP BY run_id),
        latest AS (SELECT *, row_number() OVER (PARTITION BY reward_version
                                                ORDER BY created_at DESC, run_id DESC) AS k,
                          count(*) OVER (PARTITION BY reward_version) AS n_runs FROM reward_test_runs),
        used AS (SELECT reward_version AS version, list(DISTINCT grow ORDER BY grow) AS grows, count(*) AS n
                 FROM samples WHERE campaign_id = $cid GROUP BY 1),
        v AS (SELECT unnest($scope::VARCHAR[]) AS version WHERE $scope::VARCHAR[] IS NOT NULL
              UNION SELECT version FROM reward_models WHERE $scope::VARCHAR[] IS NULL
              UNION SELECT reward_version FROM reward_test_runs WHERE $scope::VARCHAR[] IS NULL)
        SELECT v.version, coalesce(m.name, l.reward_name) AS name, m.kind, m.path,
               m.created_at AS registered_at,
               u.grows AS used_in_grows, u.n AS n_samples, l.run_id AS latest_run, l.created_at AS tested_at,
               coalesce(l.verdict, 'untested') AS verdict, l.n_tests, l.n_failed,
               coalesce(f.failed, []) AS failed_tests,
               coalesce(l.n_runs, 0) AS n_runs
        FROM v LEFT JOIN reward_models m USING (version) LEFT JOIN used u USING (version)
        LEFT JOIN latest l ON l.reward_version = v.version AND l.k = 1 LEFT JOIN f ON f.run_id = l.run_id
        ORDER BY u.version IS NULL, coalesce(m.created_at, l.created_at) DESC NULLS LAST, v.version
        """
        return self._rows(sql, {"cid": cid, "scope": scope})

    # ---------------------------------------------------------------- rating-task sources, step timings
    def rateable_policies(self, cid: str) -> dict[str, list[str]]:
        """The policies a rating task can pair, per origin: `samples` (checkpoints that sampled generated
        candidates in a Grow step) and `validation` (checkpoints with greedy validation outputs), each in
        checkpoint order (BC first, latest last)."""
        sql = """
        WITH s AS (SELECT DISTINCT policy FROM samples WHERE campaign_id = $cid AND sample_idx >= 0),
        e AS (SELECT DISTINCT policy FROM eval_outputs WHERE campaign_id = $cid AND split = 'validation'
              AND text IS NOT NULL),
        o AS (SELECT policy, created_at FROM checkpoints WHERE campaign_id = $cid)
        SELECT 'samples' AS origin, s.policy, o.created_at FROM s LEFT JOIN o USING (policy)
        UNION ALL SELECT 'validation', e.policy, o.created_at FROM e LEFT JOIN o USING (policy)
        ORDER BY origin, created_at NULLS LAST, policy
        """
        out: dict[str, list[str]] = {"samples": [], "validation": []}
        for r in self._rows(sql, {"cid": cid}):
            out[r["origin"]].append(r["policy"])
        return out

    def step_timings(self, cid: str) -> list[dict]:
        """Campaign `cid`'s steps (finished and running) with their measured seconds and their work so far:
        `sources` of a Grow with samples ingested (from source_stats, one row per source: no scan of the
        samples) and the optimizer `train_steps` of its curve; oldest first."""
        sql = """
        WITH g AS (SELECT grow, count(*) AS sources FROM source_stats WHERE campaign_id = $cid GROUP BY grow),
        c AS (SELECT step_key, max(step) AS train_steps FROM curves WHERE campaign_id = $cid
              AND loss IS NOT NULL GROUP BY step_key)
        SELECT s.step_key, s.kind, s.status, s.grow, s.improve, s.started_at, s.seconds, s.finished_at,
               CASE WHEN s.kind = 'grow' THEN coalesce(g.sources, 0) END AS sources, c.train_steps
        FROM steps s LEFT JOIN g ON g.grow = s.grow LEFT JOIN c USING (step_key)
        WHERE s.campaign_id = $cid
        ORDER BY s.started_at
        """
        return self._rows(sql, {"cid": cid})
