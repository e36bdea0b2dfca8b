"""Drift queries in DuckDB between two Grow steps: exact binned CDF distances, summaries, diversity, samples.

Only generated candidates count (sample_idx >= 0): the original pairs mixed into every D_g are the same in
each step and would hide a shift. Every query aggregates in DuckDB; Python gets small results or samples.
"""

from __future__ import annotations

import numpy as np

COLUMNS = ("reward", "n_tokens")  # the only columns a caller may name (they are formatted into SQL)
_GEN = "campaign_id = $cid AND sample_idx >= 0"


def _col(column: str) -> str:
    if column not in COLUMNS:
        raise ValueError(f"column {column!r}: use one of {COLUMNS}")
    return column


class DriftMixin:
    def drift_grows(self, cid: str) -> list[dict]:
        """Grow steps with generated samples: grow, n, policies."""
        return self._rows(
            f"SELECT grow, count(*) AS n, list(DISTINCT policy ORDER BY policy) AS policies FROM samples "
            f"WHERE {_GEN} GROUP BY grow ORDER BY grow",
            {"cid": cid},
        )

    def step_summary(self, cid: str, grow: int) -> dict:
        return self._rows(
            f"SELECT count(*) AS n, avg(reward) AS mean_reward, stddev_pop(reward) AS std_reward, "
            f"avg(n_tokens) AS mean_tokens, stddev_pop(n_tokens) AS std_tokens, "
            f"list(DISTINCT policy ORDER BY policy) AS policies FROM samples WHERE {_GEN} AND grow = $g",
            {"cid": cid, "g": grow},
        )[0]

    def cdf_distance(self, cid: str, a: int, b: int, column: str = "reward", bins: int = 10_000) -> dict:
        """Wasserstein-1 and the KS statistic between Grow a and Grow b, exactly from binned CDFs over all rows.

        W1 = integral |F_a - F_b| dx. Values go to `bins` equal bins over [min, max] of both steps; each value
        moves down by less than one bin width h, so W1 is exact to within 2h (2e-4 of the range at 10,000 bins).
        """
        c = _col(column)
        sql = f"""
        WITH s AS (SELECT grow, {c}::DOUBLE AS x FROM samples WHERE {_GEN} AND grow IN ($a, $b) AND {c} IS NOT NULL),
        r AS (SELECT min(x) AS lo, max(x) AS hi, count(*) FILTER (WHERE grow = $a) AS na,
                     count(*) FILTER (WHERE grow = $b) AS nb FROM s),
        h AS (SELECT CASE WHEN r.hi > r.lo THEN least(floor((x - r.lo) / (r.hi - r.lo) * $bins), $bins - 1) ELSE 0 END::BIGINT
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
        """A uniform reservoir sample of (reward, n_tokens) of one step; every row when the step has fewer than n."""
        # The sample clause takes constants only, hence int() formatting; it must wrap the filtered subquery
        # (USING SAMPLE applies before WHERE in the same SELECT).
        cur = self.cursor().execute(
            f"SELECT reward, coalesce(n_tokens::DOUBLE, 'nan'::DOUBLE) AS n_tokens FROM (SELECT reward, n_tokens FROM samples WHERE campaign_id = ? AND grow = ? "
            f"AND sample_idx >= 0) USING SAMPLE reservoir({int(n)} ROWS) REPEATABLE ({int(seed)})",
            [cid, grow],
        )
        t = cur.fetchnumpy()
        return {
            "reward": np.asarray(t["reward"], dtype=float),
            "n_tokens": np.asarray(t["n_tokens"], dtype=float),
        }

    def distinct_n(self, cid: str, grow: int, n_texts: int, seed: int = 0) -> dict:
        """distinct-1 and distinct-2 (distinct n-grams / all n-grams, whitespace tokens) on a sample of n_texts.

        Both ratios fall as more text is pooled, so compare steps only at the same n_texts.
        """
        sql = f"""
        WITH t AS (SELECT regexp_split_to_array(trim(text), '\\s+') AS w FROM (SELECT text FROM samples
                   WHERE campaign_id = $cid AND grow = $g AND sample_idx >= 0)
                   USING SAMPLE reservoir({int(n_texts)} ROWS) REPEATABLE ({int(seed)})),
        u AS (SELECT unnest(w) AS tok FROM t),
        bi AS (SELECT w[i] || ' ' || w[i + 1] AS bg FROM t, unnest(range(1, len(w))) AS r(i))
        SELECT (SELECT count(*) FROM t) AS n_texts,
               (SELECT count(DISTINCT tok) FROM u WHERE tok <> '') AS uni_distinct,
               (SELECT count(*) FROM u WHERE tok <> '') AS uni_total,
               (SELECT count(DISTINCT bg) FROM bi) AS bi_distinct, (SELECT count(*) FROM bi) AS bi_total"""
        r = self._rows(sql, {"cid": cid, "g": grow})[0]
        return {
            "n_texts": r["n_texts"],
            "distinct_1": r["uni_distinct"] / r["uni_total"] if r["uni_total"] else float("nan"),
            "distinct_2": r["bi_distinct"] / r["bi_total"] if r["bi_total"] else float("nan"),
        }

    def unique_share(self, cid: str, grow: int) -> float:
        """Mean over sources of count(distinct candidate) / count(candidates), over every row of the step."""
        # hash(text) instead of text: 64-bit hashes keep the distinct-count state small at 16M rows,
        # and a collision among one source's ~100 candidates is negligible.
        (v,) = (
            self.cursor()
            .execute(
                "SELECT avg(k) FROM (SELECT count(DISTINCT hash(text)) / count(*) AS k FROM samples "
                "WHERE campaign_id = ? AND grow = ? AND sample_idx >= 0 GROUP BY source_id)",
                [cid, grow],
            )
            .fetchone()
        )
        return float(v) if v is not None else float("nan")

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
