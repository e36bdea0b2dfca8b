"""Governance gates: the checks that decide whether a campaign may go on, each returning the figures it
looked at, so a pause is recorded with the numbers that caused it. engine/steps/gates.py runs them where the
evidence is: after each Grow is scored (audit, drift), before each Grow (reward tests, human ratings) and
before the final policy is accepted. Reward unit tests need the reward model, so they run in a worker
(engine/steps/reward_tests.py); the other gates read the store.
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
    policy: str | None = None  # the checkpoint judged; a failed audit or drift check bars it from being final
    waiting: bool = False  # the gate waits for something to arrive (human ratings), not for a decision


def reward_version(cfg: CampaignConfig) -> str:
    """The content hash of the configured reward, without loading model weights; a callable's module is
    imported only when its function's source cannot be read from the file."""
    from .rewards import reward_version as version

    return version(cfg.reward)


def reward_tests_gate(store, cfg: CampaignConfig, version: str) -> GateResult | None:
    """The latest run of the campaign's own suite on this reward version: the default tests plus the
    reward config's, with the campaign's skip list and pass rate at tolerance scale 1. A run made with
    other settings (a skip list, --only, --tol) does not count. None when there is no such run yet (the
    controller then runs the suite in a worker)."""
    from .steps.reward_tests import campaign_settings

    want = campaign_settings(cfg)
    run = next((r for r in store.reward_test_runs(version) if _same_settings(r["config"], want)), None)
    if run is None:
        return None
    results = store.reward_test_results(run["run_id"])
    failed = [r["test"] for r in results if r["passed"] is False]
    figures = {
        "run_id": run["run_id"],
        "reward_version": version,
        "failed": failed,
        "settings": want,
        "pass_rates": {r["test"]: r["pass_rate"] for r in results},
    }
    if failed:
        return GateResult(
            "reward_tests", False, f"reward {version} fails its unit tests: {', '.join(failed)}", figures
        )
    return GateResult("reward_tests", True, f"reward {version} passes its unit tests", figures)


def _same_settings(run_config: dict, want: dict) -> bool:
    return (
        sorted(run_config.get("skip") or []) == want["skip"]
        and sorted(run_config.get("only") or []) == want["only"]
        and float(run_config.get("tol_scale", -1)) == float(want["tol_scale"])
        and float(run_config.get("min_pass_rate", -1)) == float(want["min_pass_rate"])
        and run_config.get("std_given") is None
        and run_config.get("max_examples_per_test") is None
    )


def audit_gate(store, cfg: CampaignConfig, cid: str, g: int) -> GateResult:
    """Reward up while an audit metric falls: Grow g's samples against the BC policy's Grow (1) and the
    previous Grow, and the validation outputs of the policy that sampled Grow g against the BC policy's.

    Fails when, in any of these comparisons, the mean reward rose and an audit metric fell by more than
    `gates.audit_tolerance`. The figures name each comparison's reward delta, audit deltas and length ratio.
    """
    tol = cfg.gates.audit_tolerance
    grows = store.grow_summaries(cid)
    cur = grows.get(g)
    if cur is None:
        return GateResult("audit", True, f"grow {g} has no generated samples")
    policy = cur["policy"]
    comparisons = []
    for ref in sorted({1, g - 1}):
        if ref < 1 or ref == g or ref not in grows:
            continue
        comparisons.append((f"grow {g} vs grow {ref}", grows[ref], cur))
    ckpts = store.checkpoint_figures(cid)
    if policy != "base" and policy in ckpts and "base" in ckpts:
        comparisons.append((f"{policy} vs base on validation", ckpts["base"], ckpts[policy]))
    figures: dict = {"policy": policy, "tolerance": tol, "comparisons": {}}
    failures = []
    for name, a, b in comparisons:
        d_reward = _delta(b["reward"], a["reward"])
        d_audit = {m: _delta(b["audit"].get(m), a["audit"].get(m)) for m in a["audit"] if m in b["audit"]}
        ratio = b["tokens"] / a["tokens"] if a.get("tokens") and b.get("tokens") is not None else None
        figures["comparisons"][name] = {
            "reward_delta": d_reward,
            "audit_delta": d_audit,
            "length_ratio": ratio,
        }
        for m, d in d_audit.items():
            if d_reward is not None and d is not None and d_reward > 0 and d < -tol:
                length = f", length x{ratio:.2f}" if ratio is not None else ""
                failures.append(f"{name}: reward {d_reward:+.4f} while {m} {d:+.4f}{length}")
    if not cfg.audit:
        return GateResult("audit", True, "no audit metric configured", figures, policy)
    if failures:
        return GateResult(
            "audit", False, "reward rose while the audit metric fell: " + "; ".join(failures), figures, policy
        )
    if not comparisons:
        return GateResult(
            "audit", True, f"grow {g}: nothing to compare yet (the BC policy's own samples)", figures, policy
        )
    return GateResult(
        "audit",
        True,
        f"grow {g}: no audit metric fell by more than {tol} as the reward rose",
        figures,
        policy,
    )


def checkpoint_audit(store, cfg: CampaignConfig, cid: str, policy: str) -> GateResult | None:
    """A checkpoint's validation figures against the BC policy's; None when there is nothing to compare."""
    ckpts = store.checkpoint_figures(cid)
    if not cfg.audit or policy not in ckpts or "base" not in ckpts or policy == "base":
        return None
    a, b = ckpts["base"], ckpts[policy]
    d_reward = _delta(b["reward"], a["reward"])
    d_audit = {m: _delta(b["audit"].get(m), a["audit"].get(m)) for m in a["audit"] if m in b["audit"]}
    figures = {
        "policy": policy,
        "reward_delta": d_reward,
        "audit_delta": d_audit,
        "tolerance": cfg.gates.audit_tolerance,
    }
    bad = [
        m
        for m, d in d_audit.items()
        if d is not None and d_reward is not None and d_reward > 0 and d < -cfg.gates.audit_tolerance
    ]
    if bad:
        msg = f"{policy} vs base on validation: reward {d_reward:+.4f} while " + ", ".join(
            f"{m} {d_audit[m]:+.4f}" for m in bad
        )
        return GateResult("audit", False, msg, figures, policy)
    return GateResult("audit", True, f"{policy}: no audit metric fell as the reward rose", figures, policy)


def _delta(b, a):
    return None if a is None or b is None else b - a


def drift_gate(store, cfg: CampaignConfig, cid: str, g: int) -> GateResult:
    """Signs of hacking or collapse in Grow g against the BC policy's Grow 1 (engine/drift.py)."""
    from .drift import hacking_report, hacking_thresholds

    grows = sorted(store.grow_summaries(cid))
    if g not in grows or 1 not in grows or g == 1:
        return GateResult("drift", True, "the BC policy's own Grow: nothing to compare yet")
    rep = hacking_report(store, cid, 1, g, hacking_thresholds(cfg.gates))
    policy = store.grow_policy(cid, g)
    figures = {"a": 1, "b": g, "figures": rep["figures"], "alarms": rep["alarms"]}
    if rep["alarms"]:
        return GateResult("drift", False, "; ".join(al["message"] for al in rep["alarms"]), figures, policy)
    return GateResult("drift", True, f"grow {g} vs grow 1: no drift alarm", figures, policy)


def human_gate(store, cfg: CampaignConfig, cid: str, policy: str) -> GateResult:
    """Enough human ratings of `policy` against the BC policy on validation outputs, and a human eval diff
    above the bound. Missing tasks are built from both policies' validation outputs; too few ratings make
    the gate wait (the campaign pauses until they come in)."""
    from .ratings import human_eval_diff

    g = cfg.gates
    if policy == "base":
        return GateResult("human", True, "no policy beyond the BC baseline to rate yet")
    pair = {"base", policy}
    try:  # tops the pair's tasks up to human_tasks; sources already tasked are not asked again
        store.create_gate_tasks(cid, policy, baseline="base", n=g.human_tasks, required_ratings=1)
    except ValueError as e:  # no validation outputs of one of the two policies
        return GateResult(
            "human", False, f"no rating tasks for {policy} vs base: {e}", {"policy": policy}, policy
        )
    rows = [r for r in store.ratings(cid) if {r["policy_a"], r["policy_b"]} == pair]
    figures = {
        "policy": policy,
        "n_ratings": len(rows),
        "n_simulated": sum(bool(r.get("simulated")) for r in rows),
        "min_ratings": g.human_min_ratings,
    }
    if len(rows) < g.human_min_ratings:
        need = g.human_min_ratings - len(rows)
        msg = f"waiting for {need} ratings of {policy} vs base ({len(rows)} of {g.human_min_ratings})"
        return GateResult("human", False, msg, figures | {"waiting_for": need}, policy, waiting=True)
    if g.human_min_diff is not None and rows:
        d = human_eval_diff(rows, baseline="base")
        figures |= {
            "diff": d["diff"],
            "ci_low": d["ci_low"],
            "ci_high": d["ci_high"],
            "min_diff": g.human_min_diff,
        }
        if d["diff"] < g.human_min_diff:
            msg = f"human eval diff {d['diff']:+.3f} of {policy} vs base is below {g.human_min_diff:+.3f}"
            return GateResult("human", False, msg, figures, policy)
    return GateResult("human", True, f"{len(rows)} ratings of {policy} vs base", figures, policy)
