"""Store mixin for reward-model unit tests: one row per run (keyed to the reward's version, so versions can
be compared) and one per test in the run; plus the campaign-sample draw the tests run on.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from typing import Any

from .core import now

SCHEMA = """
CREATE TABLE IF NOT EXISTS reward_test_runs (
    run_id VARCHAR PRIMARY KEY, reward_name VARCHAR NOT NULL, reward_version VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL, verdict VARCHAR NOT NULL, n_tests INTEGER NOT NULL,
    n_failed INTEGER NOT NULL, n_pairs INTEGER, mean_reward DOUBLE, std DOUBLE, config JSON);
CREATE TABLE IF NOT EXISTS reward_test_results (
    run_id VARCHAR NOT NULL, pos INTEGER NOT NULL, test VARCHAR NOT NULL, expectation VARCHAR NOT NULL,
    tol DOUBLE NOT NULL, n INTEGER NOT NULL, pass_rate DOUBLE, mean_delta DOUBLE, worst_delta DOUBLE,
    passed BOOLEAN, worst_examples JSON, PRIMARY KEY (run_id, test));
"""


def _plain(report: Any) -> dict:
    """A SuiteReport (dataclass) or its JSON dict as one plain dict with a `tests` list."""
    d = report if isinstance(report, dict) else dataclasses.asdict(report)
    tests = d.get("tests", d.get("results"))
    if tests is None:
        raise ValueError("a reward test report needs 'tests' (or 'results')")
    return d | {"tests": tests}


class RewardTestsMixin:
    """Adds reward_test_runs and reward_test_results to a CoreStore subclass."""

    SCHEMA = SCHEMA

    def save_reward_test_run(self, report: Any) -> str:
        """Record a run and its per-test results in one transaction; returns the new run id."""
        d = _plain(report)
        tests = d["tests"]
        n_failed = sum(t["verdict"] == "fail" for t in tests)
        created = now()
        run_id = f"rt-{created:%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
        with self.transaction() as cur:  # type: ignore[attr-defined]
            cur.execute(
                "INSERT INTO reward_test_runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    run_id,
                    d["reward_name"],
                    d["reward_version"] or "",
                    created,
                    "fail" if n_failed else "pass",
                    len(tests),
                    n_failed,
                    d.get("n_pairs"),
                    d.get("mean_reward"),
                    d.get("std"),
                    json.dumps(d.get("config") or {}, default=str),
                ],
            )
            for pos, t in enumerate(tests):
                passed = None if t["verdict"] == "skip" else t["verdict"] == "pass"
                cur.execute(
                    "INSERT INTO reward_test_results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        run_id,
                        pos,
                        t["name"],
                        t["expectation"],
                        t["tol"],
                        t["n"],
                        t["pass_rate"],
                        t["mean_delta"],
                        t["worst_delta"],
                        passed,
                        json.dumps(t.get("worst_examples") or [], default=str),
                    ],
                )
        return run_id

    def reward_test_runs(self, reward_version: str | None = None) -> list[dict]:
        """Runs, newest first; only those of one reward version when given."""
        sql = "SELECT * FROM reward_test_runs"
        params: list = []
        if reward_version is not None:
            sql += " WHERE reward_version = ?"
            params.append(reward_version)
        rows = self._rows(sql + " ORDER BY created_at DESC, run_id DESC", params)  # type: ignore[attr-defined]
        for r in rows:
            r["config"] = json.loads(r["config"]) if r["config"] else {}
        return rows

    def latest_reward_test_run(self, reward_version: str) -> dict | None:
        """The newest run of this reward version (what a gate checks), or None if it was never tested."""
        rows = self.reward_test_runs(reward_version)
        return rows[0] if rows else None

    def reward_test_results(self, run_id: str) -> list[dict]:
        """The run's tests in suite order, worst examples parsed."""
        rows = self._rows("SELECT * FROM reward_test_results WHERE run_id = ? ORDER BY pos", [run_id])  # type: ignore[attr-defined]
        for r in rows:
            r["worst_examples"] = json.loads(r["worst_examples"]) if r["worst_examples"] else []
        return rows

    def reward_test_pairs(
        self, campaign_id: str, n: int, seed: int = 0, min_reward: float | None = None
    ) -> list[tuple[str, str, str, str | None]]:
        """N generated samples of the campaign's latest Grow step as ("source_id/sample_idx", source, text,
        reference).

        Drawn in a seeded hash order inside DuckDB, so the draw is reproducible and never loads a whole step.
        `min_reward` keeps only samples scored at least that (the good outputs the tests should start from).
        """
        rows = (
            self.cursor()
            .execute(  # type: ignore[attr-defined]
                "SELECT s.source_id, s.sample_idx, p.source, s.text, p.reference FROM samples s "
                "JOIN prompts p ON p.campaign_id = s.campaign_id AND p.split = 'train' "
                "AND p.source_id = s.source_id "
                "WHERE s.campaign_id = ? AND s.sample_idx >= 0 "
                "AND s.grow = (SELECT max(grow) FROM samples WHERE campaign_id = ? AND sample_idx >= 0) "
                "AND (CAST(? AS DOUBLE) IS NULL OR s.reward >= ?) "
                "ORDER BY hash(s.source_id, s.sample_idx, ?), s.source_id, s.sample_idx LIMIT ?",
                [campaign_id, campaign_id, min_reward, min_reward, seed, n],
            )
            .fetchall()
        )
        return [(f"{sid}/{idx}", src, text, ref) for sid, idx, src, text, ref in rows]
