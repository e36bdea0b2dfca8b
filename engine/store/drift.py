"""Drift queries in DuckDB between two Grow steps: per-source figures kept at ingest, exact binned CDF
distances, diversity, the reward ceiling, generated against reference rewards, samples.

Only generated candidates count (sample_idx >= 0): the original pairs mixed into every D_g are the same in
each step and would hide a shift. Every query aggregates in DuckDB; Python gets small results or samples.

`source_stats` holds one row per (campaign, Grow step, source), computed from the generated candidates of
a samples shard inside the transaction that ingests it (`record_source_stats`, called by `ingest_shard`).
A shard holds whole sources and samples are append-only, so those rows never need updating; every
per-step figure (size, mean and spread of reward and length, unique share, KL sums) reads these ~N/K rows
instead of the N candidates.
"""

from __future__ import annotations

import threading

import duckdb
import numpy as np

from .core import _named

SCHEMA = """
CREATE TABLE IF NOT EXISTS source_stats (  -- per (Grow step, source), over its generated candidates
    campaign_id VARCHAR NOT NULL, grow INTEGER NOT NULL, source_id VARCHAR NOT NULL,
    n BIGINT NOT NULL,                    -- generated candidates (sample_idx >= 0)
    n_unique BIGINT NOT NULL,             -- distinct texts among them (64-bit hash of the text)
    mean_reward DOUBLE, std_reward DOUBLE, min_reward DOUBLE, max_reward DOUBLE,  -- std: population
    n_with_tokens BIGINT NOT NULL, mean_tokens DOUBLE, std_tokens DOUBLE,  -- over non-null n_tokens
    kl_n BIGINT NOT NULL,                 -- candidates with both sum_logprob and base_logprob
    kl_sum DOUBLE,                        -- sum of sum_logprob - base_logprob over those, nats
    policy VARCHAR, reward_version VARCHAR,  -- one of each per Grow step by construction
    shard_id VARCHAR NOT NULL,
    PRIMARY KEY (campaign_id, grow, source_id));
CREATE TABLE IF NOT EXISTS reference_rewards (  -- the reward of each source's reference, per Grow step
    campaign_id VARCHAR, grow INTEGER, source_id VARCHAR, reward DOUBLE, reward_version VARCHAR,
    shard_id VARCHAR);
"""

COLUMNS = ("reward", "n_tokens")  # the only columns a caller may name (they are formatted into SQL)
_GEN = "campaign_id = $cid AND sample_idx >= 0"

# One row per source of the generated candidates of `_src` (a samples subquery); $kl is the KL term.
_SOURCE_STATS = """
SELECT campaign_id, grow, source_id, count(*), count(DISTINCT hash(text)),
       avg(reward), stddev_pop(reward), min(reward), max(reward),
       count(n_tokens), avg(n_tokens), stddev_pop(n_tokens),
       count({kl}), sum({kl}), min(policy), min(reward_version), min(shard_id)
FROM samples WHERE campaign_id = ? AND {where} AND sample_idx >= 0
GROUP BY campaign_id, grow, source_id"""

# Figures of one step pooled from its per-source rows; variances add within- and between-source parts.
_STEP = """
WITH s AS (SELECT * FROM source_stats WHERE campaign_id = $cid AND grow = $g),
m AS (SELECT sum(n) AS total, sum(n * mean_reward) / sum(n) AS mr,
             sum(n_with_tokens * mean_tokens) / nullif(sum(n_with_tokens), 0) AS mt FROM s)
SELECT m.total::BIGINT AS n, count(*) AS n_sources, m.mr AS mean_reward,
       sqrt(sum(s.n * (std_reward ^ 2 + (mean_reward - m.mr) ^ 2)) / m.total) AS std_reward,
       min(min_reward) AS min_reward, max(max_reward) AS max_reward,
       m.mt AS mean_tokens,
       sqrt(sum(n_with_tokens * (std_tokens ^ 2 + (mean_tokens - m.mt) ^ 2))
            / nullif(sum(n_with_tokens), 0)) AS std_tokens,
       avg(n_unique / s.n) AS unique_share,
       sum(kl_n)::BIGINT AS kl_n, sum(kl_sum) / nullif(sum(kl_n), 0) AS kl_mean,
       list(DISTINCT policy ORDER BY policy) AS policies,
       list(DISTINCT reward_version ORDER BY reward_version) AS reward_versions
FROM s, m GROUP BY m.total, m.mr, m.mt"""


def _col(column: str) -> str:
    if column not in COLUMNS:
        raise ValueError(f"column {column!r}: use one of {COLUMNS}")
    return column


def _kl_term(cur: duckdb.DuckDBPyConnection) -> str:
    """sum_logprob - base_logprob where samples has base_logprob (NULL per row when not computed)."""
    (has,) = cur.execute(
        "SELECT count(*) FROM duckdb_columns() WHERE table_name = 'samples' AND column_name = 'base_logprob'"
    ).fetchone()
    return "sum_logprob - base_logprob" if has else "NULL::DOUBLE"


class DriftMixin:
    SCHEMA = SCHEMA

    # ---------------------------------------------------------------- per-source figures
    def record_source_stats(self, cur: duckdb.DuckDBPyConnection, cid: str, shard_id: str) -> int:
        """Insert the per-source rows of one samples shard, inside the caller's transaction (ingest_shard).

        Raises ValueError when a source of the shard already has a row for its Grow step: a samples shard
        must hold whole sources, or the per-source figures (the unique share above all) would be wrong.
        """
        sql = _SOURCE_STATS.format(kl=_kl_term(cur), where="shard_id = ?")
        try:
            cur.execute(f"INSERT INTO source_stats {sql}", [cid, shard_id])
        except duckdb.ConstraintException as e:
            raise ValueError(
                f"samples shard {shard_id} repeats sources already ingested for the same Grow step from "
                f"another shard; a samples shard must hold whole sources ({e})"
            ) from e
        (n,) = cur.execute(
            "SELECT count(*) FROM source_stats WHERE campaign_id = ? AND shard_id = ?", [cid, shard_id]
        ).fetchone()
        return int(n)

    def _source_stats_ready(self, cid: str) -> None:
        """Fill source_stats for samples shards ingested before it existed (or by a store without this mixin).

        Checked once per campaign and process; from then on ingest_shard keeps it current.
        """
        ready = self.__dict__.setdefault("_source_stats_checked", set())
        if cid in ready:
            return
        with self.__dict__.setdefault("_source_stats_lock", threading.Lock()), self.transaction() as cur:
            missing = [
                r[0]
                for r in cur.execute(
                    "SELECT shard_id FROM shards WHERE campaign_id = ? AND kind = 'samples' "
                    "AND shard_id NOT IN (SELECT DISTINCT shard_id FROM source_stats WHERE campaign_id = ?)",
                    [cid, cid],
                ).fetchall()
            ]
            if missing:
                sql = _SOURCE_STATS.format(kl=_kl_term(cur), where="list_contains(?, shard_id)")
                cur.execute(f"INSERT OR IGNORE INTO source_stats {sql}", [cid, missing])
            ready.add(cid)

    def source_stats(self, cid: str, grow: int) -> list[dict]:
        """The per-source rows of one Grow step, ordered by source id."""
        self._source_stats_ready(cid)
        return self._rows(
            "SELECT * FROM source_stats WHERE campaign_id = ? AND grow = ? ORDER BY source_id", [cid, grow]
        )

    def drift_grows(self, cid: str) -> list[dict]:
        """Grow steps with generated samples: grow, n, policies."""
        self._source_stats_ready(cid)
        return self._rows(
            "SELECT grow, sum(n)::BIGINT AS n, list(DISTINCT policy ORDER BY policy) AS policies "
            "FROM source_stats WHERE campaign_id = ? GROUP BY grow ORDER BY grow",
            [cid],
        )

    def step_summary(self, cid: str, grow: int) -> dict:
        """Figures of one step's generated candidates from source_stats: n, n_sources, mean/std/min/max of
        the reward, mean/std of n_tokens, unique_share (mean over sources of distinct texts / candidates),
        kl_n and kl_mean (mean of sum_logprob - base_logprob where both exist), policies, reward_versions.
        """
        self._source_stats_ready(cid)
        rows = self._rows(_STEP, {"cid": cid, "g": grow})
        if rows:
            return rows[0]
        nan = float("nan")
        return {
            "n": 0,
            "n_sources": 0,
            "mean_reward": nan,
            "std_reward": nan,
            "min_reward": nan,
            "max_reward": nan,
            "mean_tokens": nan,
            "std_tokens": nan,
            "unique_share": nan,
            "kl_n": 0,
            "kl_mean": None,
            "policies": [],
            "reward_versions": [],
        }

    def unique_share(self, cid: str, grow: int) -> float:
        """Mean over sources of count(distinct candidate) / count(candidates) (texts compared by 64-bit hash;
        a collision among one source's candidates is negligible)."""
        v = self.step_summary(cid, grow)["unique_share"]
        return float(v) if v is not None else float("nan")

    # ---------------------------------------------------------------- queries over the candidates
    def cdf_distance(self, cid: str, a: int, b: int, column: str = "reward", bins: int = 10_000) -> dict:
        """Wasserstein-1 and the KS statistic between Grow a and Grow b, exactly from binned CDFs over all
        rows.

        W1 = integral |F_a - F_b| dx. Values go to `bins` equal bins over [min, max] of both steps; each
        value moves down by less than one bin width h, so W1 is exact to within 2h (2e-4 of the range at
        10,000 bins).
        """
        c = _col(column)
        sql = f"""
        WITH s AS (SELECT grow, {c}::DOUBLE AS x FROM samples
                   WHERE {_GEN} AND grow IN ($a, $b) AND {c} IS NOT NULL),
        r AS (SELECT min(x) AS lo, max(x) AS hi, count(*) FILTER (WHERE grow = $a) AS na,
                     count(*) FILTER (WHERE grow = $b) AS nb FROM s),
        h AS (SELECT CASE WHEN r.hi > r.lo
                          THEN least(floor((x - r.lo) / (r.hi - r.lo) * $bins), $bins - 1) ELSE 0 END::BIGINT
                     AS bin, count(*) FILTER (WHERE grow = $a) AS ca, count(*) FILTER (WHERE grow = $b) AS cb
              FROM s, r GROUP BY bin),
        f AS (SELECT bin, sum(ca) OVER w / r.na AS fa, sum(cb) OVER w / r.nb AS fb,
                     coalesce(lead(bin) OVER (ORDER BY bin), bin) - bin AS width
              FROM h, r WINDOW w AS (ORDER BY bin ROWS UNBOUNDED PRECEDING))
        SELECT (SELECT na FROM r) AS n_a, (SELECT nb FROM r) AS n_b,
               coalesce(sum(abs(fa - fb) * width), 0) * (SELECT (hi - lo) / $bins FROM r) AS wasserstein,
               max(abs(fa - fb)) AS ks_binned FROM f"""
        row = self._rows(sql, {"cid": cid, "a": a, "b": b, "bins": int(bins)})[0]
        if not row["n_a"] or not row["n_b"]:
            raise ValueError(
                f"no generated samples with {column} in grow {a if not row['n_a'] else b} of campaign {cid}"
            )
        return row | {"wasserstein": float(row["wasserstein"] or 0.0), "bins": int(bins)}

    def value_sample(self, cid: str, grow: int, n: int = 200_000, seed: int = 0) -> dict[str, np.ndarray]:
        """A uniform reservoir sample of (reward, n_tokens) of one step; every row when the step has fewer
        than n."""
        # The sample clause takes constants only, hence int() formatting; it must wrap the filtered subquery
        # (USING SAMPLE applies before WHERE in the same SELECT).
        cur = self.cursor().execute(
            "SELECT reward, coalesce(n_tokens::DOUBLE, 'nan'::DOUBLE) AS n_tokens FROM (SELECT reward, "
            "n_tokens FROM samples WHERE campaign_id = ? AND grow = ? AND sample_idx >= 0) "
            f"USING SAMPLE reservoir({int(n)} ROWS) REPEATABLE ({int(seed)})",
            [cid, grow],
        )
        t = cur.fetchnumpy()
        return {
            "reward": np.asarray(t["reward"], dtype=float),
            "n_tokens": np.asarray(t["n_tokens"], dtype=float),
        }

    def distinct_n(self, cid: str, grow: int, n_texts: int, seed: int = 0, per_source: int = 10) -> dict:
        """distinct-1 and distinct-2 (distinct n-grams / all n-grams, whitespace tokens) on n_texts
        candidates.

        The sample: sources in an order fixed by hash(source_id, seed), the first c candidates of each
        (sample_idx < c, c = per_source, or more when the step has too few sources for n_texts), until
        n_texts. Grow numbers a source's candidates 0..K-1 in sampling order, so these are c random ones.
        Every step of a campaign is sampled on the same sources, so two steps are compared on the same
        prompts; many sources with a few candidates each speak for the step better than all candidates
        of a few, and collapse within a source still shows among its c. Both ratios fall as more text is
        pooled: compare steps at the same n_texts.
        """
        self._source_stats_ready(cid)
        sql = """
        WITH c AS (SELECT greatest($per, ceil($k / count(*)))::BIGINT AS c FROM source_stats
                   WHERE campaign_id = $cid AND grow = $g),
        pick AS (SELECT source_id, rank FROM (
                 SELECT source_id, row_number() OVER o AS rank,
                        sum(least(n, c.c)) OVER o - least(n, c.c) AS before
                 FROM source_stats, c WHERE campaign_id = $cid AND grow = $g
                 WINDOW o AS (ORDER BY hash(source_id, $seed), source_id ROWS UNBOUNDED PRECEDING))
             WHERE before < $k),
        t AS MATERIALIZED (SELECT regexp_split_to_array(trim(s.text), '\\s+') AS w
              FROM samples s JOIN pick USING (source_id)
              WHERE s.campaign_id = $cid AND s.grow = $g AND s.sample_idx >= 0
                    AND s.sample_idx < (SELECT c FROM c)
              ORDER BY pick.rank, s.sample_idx LIMIT $k),
        u AS (SELECT unnest(w) AS tok FROM t),
        bi AS (SELECT w[i] || ' ' || w[i + 1] AS bg FROM t, unnest(range(1, len(w))) AS r(i))
        SELECT (SELECT count(*) FROM t) AS n_texts,
               (SELECT count(DISTINCT tok) FROM u WHERE tok <> '') AS uni_distinct,
               (SELECT count(*) FROM u WHERE tok <> '') AS uni_total,
               (SELECT count(DISTINCT bg) FROM bi) AS bi_distinct, (SELECT count(*) FROM bi) AS bi_total"""
        params = {"cid": cid, "g": grow, "k": int(n_texts), "seed": int(seed), "per": int(per_source)}
        r = self._rows(sql, params)[0]
        return {
            "n_texts": r["n_texts"],
            "distinct_1": r["uni_distinct"] / r["uni_total"] if r["uni_total"] else float("nan"),
            "distinct_2": r["bi_distinct"] / r["bi_total"] if r["bi_total"] else float("nan"),
        }

    def reward_at_least(self, cid: str, grow: int, floor: float) -> dict:
        """Generated candidates of one step: n, n_at_least (reward >= floor), n_graded (reward not 0 or 1)."""
        return self._rows(
            f"SELECT count(*) AS n, count(*) FILTER (WHERE reward >= $floor) AS n_at_least, "
            f"count(*) FILTER (WHERE reward <> 0 AND reward <> 1) AS n_graded "
            f"FROM samples WHERE {_GEN} AND grow = $g",
            {"cid": cid, "g": grow, "floor": float(floor)},
        )[0]

    def reference_comparison(self, cid: str, grow: int) -> dict:
        """Mean generated reward against the mean reference reward at one Grow step, over the sources that
        have both, scored by the same reward version: n_sources, mean_generated (over their candidates),
        mean_reference, share_beaten (sources whose mean candidate reward exceeds their reference's),
        n_reference (reference rewards at that step, any version)."""
        self._source_stats_ready(cid)
        sql = """
        WITH r AS (SELECT source_id, reward_version, avg(reward) AS ref FROM reference_rewards
                   WHERE campaign_id = $cid AND grow = $g AND reward IS NOT NULL GROUP BY ALL),
        s AS (SELECT source_id, reward_version, n, mean_reward FROM source_stats
              WHERE campaign_id = $cid AND grow = $g)
        SELECT count(*) AS n_sources, sum(s.n * s.mean_reward) / sum(s.n) AS mean_generated,
               avg(r.ref) AS mean_reference, avg((s.mean_reward > r.ref)::DOUBLE) AS share_beaten,
               (SELECT count(*) FROM r) AS n_reference
        FROM s JOIN r USING (source_id, reward_version)"""
        return self._rows(sql, _named(sql, {"cid": cid, "g": grow}))[0]

    def text_sample(self, cid: str, grow: int, n: int, seed: int = 0) -> list[dict]:
        """n random generated candidates of one step with their source text and stored sum log-probability."""
        return self._rows(
            f"SELECT k.source_id, k.sample_idx, p.source, k.text, k.n_tokens, k.sum_logprob, k.policy FROM "
            f"(SELECT * FROM (SELECT source_id, sample_idx, text, n_tokens, sum_logprob, policy FROM samples "
            f"WHERE campaign_id = $cid AND grow = $g AND sample_idx >= 0) "
            f"USING SAMPLE reservoir({int(n)} ROWS) REPEATABLE ({int(seed)})) k "
            f"JOIN prompts p ON p.campaign_id = $cid AND p.split = 'train' AND p.source_id = k.source_id "
            f"ORDER BY k.source_id, k.sample_idx",
            {"cid": cid, "g": grow},
        )
