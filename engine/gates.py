"""Governance gates: checks the controller runs before each Grow, beside the stopping criteria.

Each gate returns a GateResult with the figures it looked at, so a pause or stop is recorded with the
numbers that caused it. Reward unit tests need the reward model, so they run in a worker (see
engine/steps/reward_tests.py); the other gates read the store.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .config import CampaignConfig


@dataclass
class GateResult:
    gate: str
    passed: bool
    message: str
    figures: dict = field(default_factory=dict)


def reward_version(cfg: CampaignConfig) -> str:
    """The content hash of the configured reward, without loading model weights; a callable's module is
    imported only when its function's source cannot be read from the file."""
    from .rewards import reward_version as version

    return version(cfg.reward)


def reward_tests_gate(store, cfg: CampaignConfig, version: str) -> GateResult | None:
    """None when this reward version has no stored test run yet (the controller then runs the suite)."""
    run = store.latest_reward_test_run(version)
    if run is None:
        return None
    results = store.reward_test_results(run["run_id"])
    failed = [
        r["test"] for r in results if r["passed"] is False and r["test"] not in cfg.gates.reward_tests_skip
    ]
    figures = {
        "run_id": run["run_id"],
        "reward_version": version,
        "failed": failed,
        "pass_rates": {r["test"]: r["pass_rate"] for r in results},
    }
    if failed:
        return GateResult(
            "reward_tests", False, f"reward {version} fails its unit tests: {', '.join(failed)}", figures
        )
    return GateResult("reward_tests", True, f"reward {version} passes its unit tests", figures)


def drift_gate(store, cfg: CampaignConfig, cid: str) -> GateResult:
    from .drift import DriftThresholds, default_comparisons, drift_report

    pairs = default_comparisons(store, cid)
    if not pairs:
        return GateResult("drift", True, "fewer than two Grow steps: nothing to compare yet")
    th = DriftThresholds(reward_wasserstein=cfg.gates.drift_reward_wasserstein)
    alarms = []
    for a, b in pairs:
        alarms += [al | {"a": a, "b": b} for al in drift_report(store, cid, a, b, th)["alarms"]]
    if alarms:
        return GateResult("drift", False, "; ".join(al["message"] for al in alarms), {"alarms": alarms})
    return GateResult("drift", True, f"no drift alarm over {pairs}", {"comparisons": pairs})


def human_gate(store, cfg: CampaignConfig, cid: str, latest_policy: str) -> GateResult:
    """Enough ratings of the latest sampled policy against the BC policy, and a human eval diff above the bound."""
    from .ratings import human_eval_diff

    g = cfg.gates
    if latest_policy == "base":
        return GateResult("human", True, "no policy beyond the BC baseline has been sampled yet")
    rows = [r for r in store.ratings(cid) if {r["policy_a"], r["policy_b"]} == {"base", latest_policy}]
    figures = {"policy": latest_policy, "n_ratings": len(rows), "min_ratings": g.human_min_ratings}
    if len(rows) < g.human_min_ratings:
        return GateResult(
            "human",
            False,
            f"{len(rows)} ratings of {latest_policy} vs base, {g.human_min_ratings} required",
            figures,
        )
    if g.human_min_diff is not None and rows:
        d = human_eval_diff(rows, baseline="base")
        figures |= {
            "diff": d["diff"],
            "ci_low": d["ci_low"],
            "ci_high": d["ci_high"],
            "min_diff": g.human_min_diff,
        }
        if d["diff"] < g.human_min_diff:
            return GateResult(
                "human",
                False,
                f"human eval diff {d['diff']:+.3f} of {latest_policy} vs base is below "
                f"{g.human_min_diff:+.3f}",
                figures,
            )
    return GateResult("human", True, f"{len(rows)} ratings of {latest_policy}", figures)
