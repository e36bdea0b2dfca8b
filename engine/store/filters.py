"""The Improve filter in SQL: the kept pairs of a Grow step written to Parquet for the worker, and the
decision (rule, parameter, tau, kept) recorded per Improve step. The plan of parameters is engine/filters.py.
"""

from __future__ import annotations

from pathlib import Path

from .core import _named, _sql_path, now

SCHEMA = """
CREATE TABLE IF NOT EXISTS filters (
    campaign_id VARCHAR, grow INTEGER, improve INTEGER, rule VARCHAR NOT NULL, param DOUBLE, tau DOUBLE,
    n_total BIGINT, kept BIGINT, kept_mean_reward DOUBLE, created_at TIMESTAMP,
    PRIMARY KEY (campaign_id, grow, improve));
"""


class FiltersMixin:
    SCHEMA = SCHEMA

    _KEEP = {
        # F(x, y; tau) = 1[R > tau], the paper's filter.
        "thresholds": "s.reward > $param",
        # Per source: keep rewards at or above the source's p-th percentile (param in [0, 100)).
        "percentile": "s.reward >= quantile_cont(s.reward, $param / 100.0) OVER (PARTITION BY s.source_id)",
        # Per source: tau(x) = gamma * max + (1 - gamma) * mean.
        # least(max, ...) and the 1e-12 slack: avg() can land an ulp above max when all rewards are equal.
        "interpolation": "s.reward >= least(max(s.reward) OVER (PARTITION BY s.source_id), "
        "$param * max(s.reward) OVER (PARTITION BY s.source_id) "
        "+ (1 - $param) * avg(s.reward) OVER (PARTITION BY s.source_id)) - 1e-12",
        # RAFT: one global quantile of the step's rewards.
        "quantile": "s.reward >= (SELECT quantile_cont(reward, $param) FROM samples "
        "WHERE campaign_id = $cid AND grow = $grow)",
        # ReST-EM: binary reward, keep the correct ones.
        "binary": "s.reward >= 1.0 - 1e-9",
    }

    def _kept_sql(self, rule: str) -> str:
        keep = self._KEEP[rule]
        where = "s.campaign_id = $cid AND s.grow = $grow"
        if rule in ("percentile", "interpolation"):
            return f"SELECT s.* FROM samples s WHERE {where} QUALIFY {keep}"
        return f"SELECT s.* FROM samples s WHERE {where} AND {keep}"

    def apply_filter(
        self, cid: str, grow: int, improve: int, rule: str, param: float | None, out_path: str | Path
    ) -> dict:
        """Write the kept pairs of Grow step `grow` to Parquet (source, target, reward) and record the
        decision."""
        params = {"cid": cid, "grow": grow, "param": param if param is not None else 0.0}
        kept = self._kept_sql(rule)
        cur = self.cursor()
        out_path = Path(out_path)
        tmp = out_path.with_suffix(".tmp.parquet")
        cur.execute(
            f"COPY (SELECT p.source, k.text AS target, k.reward, k.source_id, k.sample_idx FROM ({kept}) k "
            "JOIN prompts p ON p.campaign_id = k.campaign_id AND p.split = 'train' "
            "AND p.source_id = k.source_id "
            f"ORDER BY k.source_id, k.sample_idx) TO '{_sql_path(tmp)}' (FORMAT parquet)",
            _named(kept, params),
        )
        tmp.replace(out_path)
        # Stats from the file just written: re-running the keep query (a window over 16M rows) costs seconds.
        stats = self._rows(
            "SELECT (SELECT count(*) FROM samples WHERE campaign_id = ? AND grow = ?) AS n_total, "
            "count(*) AS kept, "
            "avg(reward) AS kept_mean_reward, count(DISTINCT source_id) AS kept_sources FROM read_parquet(?)",
            [cid, grow, str(out_path)],
        )[0]
        tau = param if rule == "thresholds" else None
        if rule == "quantile":
            (tau,) = cur.execute(
                "SELECT quantile_cont(reward, ?) FROM samples WHERE campaign_id = ? AND grow = ?",
                [param, cid, grow],
            ).fetchone()
        cur.execute(
            "INSERT INTO filters VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET "
            "rule = excluded.rule, param = excluded.param, tau = excluded.tau, n_total = excluded.n_total, "
            "kept = excluded.kept, kept_mean_reward = excluded.kept_mean_reward, "
            "created_at = excluded.created_at",
            [
                cid,
                grow,
                improve,
                rule,
                param,
                tau,
                stats["n_total"],
                stats["kept"],
                stats["kept_mean_reward"],
                now(),
            ],
        )
        return stats | {"tau": tau, "rule": rule, "param": param}

    def filters(self, cid: str) -> list[dict]:
        return self._rows("SELECT * FROM filters WHERE campaign_id = ? ORDER BY grow, improve", [cid])
