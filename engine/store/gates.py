"""Governance gate checks and the figures they read: every check is stored with its figures, so the
governance timeline (what ran where, passed, failed or was overridden, and why) is a query.
"""

from __future__ import annotations

import json

from .core import now

SCHEMA = """
CREATE SEQUENCE IF NOT EXISTS gate_check_seq;
CREATE TABLE IF NOT EXISTS gate_checks (
    id BIGINT DEFAULT nextval('gate_check_seq') PRIMARY KEY, campaign_id VARCHAR NOT NULL,
    stage VARCHAR NOT NULL,       -- where in the loop: after-grow, before-grow, checkpoint, final
    grow INTEGER, gate VARCHAR NOT NULL,
    status VARCHAR NOT NULL,      -- pass | fail | override | flag (a checkpoint barred from being final)
    message VARCHAR, figures JSON, policy VARCHAR,  -- the checkpoint the check judged, if one
    actor VARCHAR NOT NULL, ts TIMESTAMP NOT NULL);
"""

# Gates whose failure bars the judged checkpoint from being the final policy, even when overridden.
BARRING_GATES = ("audit", "drift")


class GatesMixin:
    SCHEMA = SCHEMA

    def add_gate_check(
        self,
        cid: str,
        stage: str,
        grow: int | None,
        gate: str,
        status: str,
        message: str,
        figures: dict | None = None,
        policy: str | None = None,
        actor: str = "controller",
    ) -> None:
        self.cursor().execute(  # type: ignore[attr-defined]
            "INSERT INTO gate_checks "
            "(campaign_id, stage, grow, gate, status, message, figures, policy, actor, ts) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                cid,
                stage,
                grow,
                gate,
                status,
                message,
                json.dumps(figures or {}, default=str),
                policy,
                actor,
                now(),
            ],
        )

    def gate_checks(self, cid: str) -> list[dict]:
        rows = self._rows(  # type: ignore[attr-defined]
            "SELECT * FROM gate_checks WHERE campaign_id = ? ORDER BY id", [cid]
        )
        for r in rows:
            r["figures"] = json.loads(r["figures"]) if r["figures"] else {}
        return rows

    def flagged_policies(self, cid: str) -> dict[str, str]:
        """Checkpoints an audit or drift check failed on (overridden or not): {policy: first message}."""
        rows = (
            self.cursor()
            .execute(  # type: ignore[attr-defined]
                "SELECT policy, message FROM gate_checks WHERE campaign_id = ? AND policy IS NOT NULL "
                "AND list_contains(?, gate) AND status IN ('fail', 'override', 'flag') ORDER BY id",
                [cid, list(BARRING_GATES)],
            )
            .fetchall()
        )
        out: dict[str, str] = {}
        for policy, message in rows:
            out.setdefault(policy, message)
        return out

    def grow_summaries(self, cid: str) -> dict[int, dict]:
        """Per Grow step, over generated candidates: policy, count, mean reward, mean tokens, audit means."""
        rows = self._rows(  # type: ignore[attr-defined]
            "SELECT grow, any_value(policy) AS policy, count(*) AS n, avg(reward) AS reward, "
            "avg(n_tokens) AS tokens FROM samples WHERE campaign_id = ? AND sample_idx >= 0 "
            "GROUP BY grow ORDER BY grow",
            [cid],
        )
        out = {r["grow"]: r | {"audit": {}} for r in rows}
        for g, metric, v in (
            self.cursor()
            .execute(  # type: ignore[attr-defined]
                "SELECT grow, metric, avg(value) FROM sample_audits "
                "WHERE campaign_id = ? AND sample_idx >= 0 GROUP BY grow, metric",
                [cid],
            )
            .fetchall()
        ):
            if g in out:
                out[g]["audit"][metric] = v
        return out

    def checkpoint_figures(self, cid: str, split: str = "validation") -> dict[str, dict]:
        """Per checkpoint on `split`: mean reward, mean tokens and audit means (from the evals table)."""
        out: dict[str, dict] = {}
        for policy, metric, value in (
            self.cursor()
            .execute(  # type: ignore[attr-defined]
                "SELECT policy, metric, value FROM evals WHERE campaign_id = ? AND split = ? AND n = 0 "
                "AND step_key <> 'final'",
                [cid, split],
            )
            .fetchall()
        ):
            d = out.setdefault(policy, {"reward": None, "tokens": None, "audit": {}})
            if metric == "mean_reward":
                d["reward"] = value
            elif metric == "mean_tokens":
                d["tokens"] = value
            elif metric.startswith("audit:"):
                d["audit"][metric[6:]] = value
        return out
