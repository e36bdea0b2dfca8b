"""The dashboard's aggregations: every chart's numbers come out of DuckDB already binned or summarised.

A page never pulls samples row by row: each query here filters one campaign (and one Grow step where it
can) and returns at most a few thousand rows however many candidates the step holds (16M in the paper).
"""

from __future__ import annotations

import json
import time

import duckdb

from .core import _named, now


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
            "(SELECT campaign_id, sum(n_rows) AS n FROM shards WHERE kind = 'samples' GROUP BY 1) s ON s.campaign_id = c.id "
            "ORDER BY c.created_at DESC"
        )

    def recent_events(self, cid: str | None, limit: int = 200, kinds: list[str] | None = None) -> list[dict]:
        """The newest events first; cid None gives the events of no campaign (accounts)."""
        where = "campaign_id = $cid" if cid is not None else "campaign_id IS NULL"
        if kinds:
            where += " AND list_contains($kinds, kind)"
        sql = f"SELECT id, ts, actor, kind, state, message, payload FROM events WHERE {where} ORDER BY id DESC LIMIT $limit"
        return self._rows(sql, _named(sql, {"cid": cid, "kinds": kinds, "limit": limit}))

    # ---------------------------------------------------------------- reward distributions
    def reward_grows(self, cid: str) -> list[int]:
        """Grow steps that have scored samples (a running Grow appears as soon as its first shard lands)."""
        rows = self.cursor().execute(
            "SELECT DISTINCT grow FROM samples WHERE campaign_id = ? ORDER BY grow", [cid]
        ).fetchall()
        return [int(r[0]) for r in rows]

    def reward_histogram(self, cid: str, bins: int = 50, generated_only: bool = False) -> list[dict]:
        """Per Grow step and reward bin [lo, hi): count, share of the step, and the ECDF at hi.

        The ECDF is the cumulative sum of the binned counts, so both curves cost one GROUP BY.
        """
        sql = """
        WITH h AS (
            SELECT grow, least(greatest(CAST(floor(reward * $bins) AS INTEGER), 0), $bins - 1) AS bin, count(*) AS n
            FROM samples WHERE campaign_id = $cid AND (NOT $gen OR sample_idx >= 0)
            GROUP BY grow, bin)
        SELECT grow, bin, bin / $bins AS lo, (bin + 1) / $bins AS hi, n,
               n / sum(n) OVER (PARTITION BY grow) AS share,
               sum(n) OVER (PARTITION BY grow ORDER BY bin ROWS UNBOUNDED PRECEDING) / sum(n) OVER (PARTITION BY grow) AS ecdf
        FROM h ORDER BY grow, bin
        """
        return self._rows(sql, {"cid": cid, "bins": int(bins), "gen": bool(generated_only)})

    def kept_shares(self, cid: str, grow: int, taus: list[float]) -> list[dict]:
        """For each threshold tau: how many pairs of D_g the filter 1[R > tau] keeps, and their share."""
        if not taus:
            return []
        cols, params = _tau_params(taus)
        sql = f"SELECT count(*) AS n_total, {cols} FROM samples WHERE campaign_id = $cid AND grow = $grow"
        row = self._rows(sql, params | {"cid": cid, "grow": int(grow)})[0]
        n = row["n_total"]
        return [{"tau": t, "kept": row[f"k{i}"], "n_total": n, "share": row[f"k{i}"] / n if n else None}
                for i, t in enumerate(taus)]

    def source_percentiles(self, cid: str, grow: int, bands: int = 50, taus: list[float] | None = None,
                           generated_only: bool = True) -> dict:
        """Per-source reward percentiles, summarised across sources.

        Sources are ranked by their median reward and cut into `bands` equal groups; each band gives the mean
        of its sources' p10 / p50 / p90 / max. `empty_at[tau]` is the share of sources whose best candidate is
        <= tau: the sources a global threshold would leave with no training data (REST.md, appendix A.7).
        """
        taus = list(taus or [])
        empty = "".join(f", count(*) FILTER (WHERE mx <= $t{i}) AS e{i}" for i in range(len(taus)))
        sql = f"""
        WITH per AS (
            SELECT source_id, quantile_cont(reward, [0.1, 0.5, 0.9]) AS q, max(reward) AS mx, avg(reward) AS mean
            FROM samples WHERE campaign_id = $cid AND grow = $grow AND (NOT $gen OR sample_idx >= 0)
            GROUP BY source_id),
        r AS (SELECT *, ntile($bands) OVER (ORDER BY q[2], mean, source_id) AS band FROM per)
        SELECT band, count(*) AS n_sources, avg(q[1]) AS p10, avg(q[2]) AS p50, avg(q[3]) AS p90, avg(mx) AS max,
               avg(mean) AS mean{empty}
        FROM r GROUP BY band ORDER BY band
        """
        params = {"cid": cid, "grow": int(grow), "bands": int(bands), "gen": bool(generated_only)}
        params |= {f"t{i}": float(t) for i, t in enumerate(taus)}
        rows = self._rows(sql, params)
        n_sources = sum(r["n_sources"] for r in rows)
        empty_at = [{"tau": t, "sources": sum(r.pop(f"e{i}") for r in rows)} for i, t in enumerate(taus)]
        for e in empty_at:
            e["share"] = e["sources"] / n_sources if n_sources else None
        return {"bands": rows, "n_sources": n_sources, "empty_at": empty_at}

    def reward_vs_length(self, cid: str, grow: int, reward_bins: int = 20, length_bins: int = 24) -> dict:
        """2-D counts of generated candidates by output length (tokens) and reward, plus mean reward per length bin."""
        sql = """
        WITH s AS (SELECT reward, n_tokens FROM samples
                   WHERE campaign_id = $cid AND grow = $grow AND sample_idx >= 0 AND n_tokens IS NOT NULL),
        w AS (SELECT greatest(CAST(ceil((coalesce(max(n_tokens), 0) + 1) / $lbins) AS INTEGER), 1) AS width FROM s),
        b AS (SELECT (n_tokens // width) * width AS len_lo, width,
                     least(greatest(CAST(floor(reward * $rbins) AS INTEGER), 0), $rbins - 1) AS rbin, reward FROM s, w)
        SELECT len_lo, any_value(width) AS width, rbin, count(*) AS n, avg(reward) AS mean_reward
        FROM b GROUP BY GROUPING SETS ((len_lo, rbin), (len_lo)) ORDER BY len_lo, rbin NULLS FIRST
        """
        rows = self._rows(sql, {"cid": cid, "grow": int(grow), "rbins": int(reward_bins), "lbins": int(length_bins)})
        cells = [r for r in rows if r["rbin"] is not None]
        by_length = [{"len_lo": r["len_lo"], "width": r["width"], "n": r["n"], "mean_reward": r["mean_reward"]}
                     for r in rows if r["rbin"] is None]
        return {"cells": cells, "by_length": by_length, "reward_bins": int(reward_bins)}

    def grow_best_of_n(self, cid: str, grow: int, ns: list[int]) -> list[dict]:
        """Expected best reward of n candidates drawn without replacement from each source's K samples.

        With a source's rewards sorted ascending r_(1..K), E[max of n] = sum_i r_(i) C(i-1, n-1) / C(K, n): the
        exact Best-of-N curve of the Grow step, from the stored samples, averaged over sources with K >= n.
        """
        sql = """
        WITH s AS (SELECT reward, row_number() OVER (PARTITION BY source_id ORDER BY reward) AS i,
                          count(*) OVER (PARTITION BY source_id) AS k
                   FROM samples WHERE campaign_id = $cid AND grow = $grow AND sample_idx >= 0),
        n AS (SELECT unnest($ns::INTEGER[]) AS n),
        w AS (SELECT n.n, s.k, s.reward * exp(lgamma(s.i) - lgamma(n.n) - lgamma(s.i - n.n + 1)
                    - lgamma(s.k + 1) + lgamma(n.n + 1) + lgamma(s.k - n.n + 1)) AS part
              FROM s JOIN n ON s.i >= n.n AND s.k >= n.n)
        SELECT n, sum(part) AS s FROM w GROUP BY n ORDER BY n
        """
        # The number of sources with K >= n, for the mean over sources.
        cnt_sql = """
        WITH k AS (SELECT count(*) AS k FROM samples WHERE campaign_id = $cid AND grow = $grow AND sample_idx >= 0
                   GROUP BY source_id)
        SELECT n, count(*) FILTER (WHERE k >= n) AS sources FROM k, (SELECT unnest($ns::INTEGER[]) AS n) GROUP BY n
        """
        params = {"cid": cid, "grow": int(grow), "ns": [int(x) for x in ns]}
        sums = {r["n"]: r["s"] for r in self._rows(sql, params)}
        counts = {r["n"]: r["sources"] for r in self._rows(cnt_sql, params)}
        return [{"n": n, "sources": counts.get(n, 0), "best_of_n": sums[n] / counts[n]}
                for n in params["ns"] if counts.get(n) and n in sums]

    def samples_between(self, cid: str, grow: int, lo: float, hi: float, limit: int = 20) -> list[dict]:
        """A few candidates with lo <= reward <= hi, joined with their source, for reading what a reward means."""
        return self._rows(
            "SELECT s.source_id, s.sample_idx, p.source, s.text, s.reward, s.n_tokens, s.policy FROM samples s "
            "LEFT JOIN prompts p ON p.campaign_id = s.campaign_id AND p.split = 'train' AND p.source_id = s.source_id "
            "WHERE s.campaign_id = ? AND s.grow = ? AND s.reward BETWEEN ? AND ? "
            "ORDER BY s.reward DESC, s.source_id, s.sample_idx LIMIT ?",
            [cid, int(grow), float(lo), float(hi), int(limit)],
        )

    # ---------------------------------------------------------------- stopping criteria and gates
    EDITABLE_SECTIONS = ("stop", "gates")  # criteria an operator may change on a live campaign; nothing else

    def update_stop_config(self, cid: str, stop: dict, actor: str) -> dict:
        """Replace the campaign's [stop] table; see update_config_section."""
        return self.update_config_section(cid, "stop", stop, actor)

    def update_config_section(self, cid: str, section: str, values: dict, actor: str) -> dict:
        """Replace one criteria table of the campaign's config after validating the whole config; log who changed what.

        None values mean "not set". Returns {field: [before, after]} for the fields that changed (empty when none
        did). Raises engine.config.ConfigError naming the field on a bad value, KeyError for an unknown campaign.
        """
        from ..config import config_from_dict, config_to_dict

        if section not in self.EDITABLE_SECTIONS:
            raise ValueError(f"section {section!r}: only {list(self.EDITABLE_SECTIONS)} can be changed on a campaign")
        row = self.campaign(cid)
        if row is None:
            raise KeyError(f"no campaign {cid!r}")
        before = dict(row["config"].get(section, {}))
        new_cfg = config_to_dict(config_from_dict(row["config"] | {section: {k: v for k, v in values.items() if v is not None}}))
        after = new_cfg.get(section, {})
        changed = {k: [before.get(k), after.get(k)] for k in sorted(set(before) | set(after)) if before.get(k) != after.get(k)}
        if not changed:
            return {}
        msg = "{} criteria changed by {}: {}".format(
            section, actor, ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changed.items()))
        payload = {"section": section, "changed": changed, "before": before, "after": after}
        for attempt in range(5):  # the controller thread may be updating the same row (its state) right now
            cur = self.cursor()
            try:
                cur.execute("BEGIN")
                cur.execute("UPDATE campaigns SET config = ?, updated_at = ? WHERE id = ?", [json.dumps(new_cfg), now(), cid])
                self._event(cur, cid, "config", msg, payload, actor, None)
                cur.execute("COMMIT")
                return changed
            except duckdb.TransactionException:
                cur.execute("ROLLBACK")
                if attempt == 4:
                    raise
                time.sleep(0.05 * (attempt + 1))
        return changed  # pragma: no cover
