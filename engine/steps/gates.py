"""Gate checks, run by the controller where the evidence is (no worker: they read the store, except the
reward unit tests, which run as a reward_tests unit):

- after Grow g is scored, before any Improve trains on it (unit `g<g>-gates`, state GATES(g)): the audit
  gate (reward up while an audit metric falls) and the drift gate (length, diversity, KL, ceiling,
  generated beating references);
- before Grow g: the reward unit tests of the reward version about to score it, and the human gate on the
  latest checkpoint;
- after each Improve: the checkpoint's validation audit (a flag, not a pause: it bars the checkpoint from
  being the final policy);
- before the final evaluation: the human gate on the chosen policy; the final policy is the checkpoint with
  the best validation reward that no audit or drift check failed on.

Every check is stored in `gate_checks` with its figures, status pass / fail / override / flag.
"""

from __future__ import annotations

from .. import gates
from ..gates import GateResult

KIND = "gates"


def _decide(
    store, cid: str, stage: str, g: int | None, checks: list[GateResult], overrides: set[str], actor: str
):
    """Store every check; return the first failure that is not overridden (None: go on)."""
    failed = None
    where = f"{stage.replace('-', ' ')} {g}" if g is not None else stage
    for res in checks:
        if res.passed:
            store.add_gate_check(cid, stage, g, res.gate, "pass", res.message, res.figures, res.policy)
        elif res.gate in overrides:
            store.add_gate_check(
                cid, stage, g, res.gate, "override", res.message, res.figures, res.policy, actor
            )
            store.add_event(
                cid, "gate", f"gate {res.gate} overridden {where}: {res.message}", res.figures, actor=actor
            )
        else:
            store.add_gate_check(cid, stage, g, res.gate, "fail", res.message, res.figures, res.policy)
            store.add_event(cid, "gate", f"gate {res.gate} failed {where}: {res.message}", res.figures)
            failed = failed or res
    return failed


def after_grow(store, cfg, cid: str, g: int, overrides: set[str], actor: str) -> GateResult | None:
    checks = []
    if cfg.gates.audit:
        checks.append(gates.audit_gate(store, cfg, cid, g))
    if cfg.gates.drift:
        checks.append(gates.drift_gate(store, cfg, cid, g))
    return _decide(store, cid, "after-grow", g, checks, overrides, actor)


def before_grow(
    controller, cfg, run_dir, cid: str, g: int, overrides: set[str], actor: str
) -> GateResult | None:
    store = controller.store
    checks = []
    if cfg.gates.reward_tests:
        checks.append(reward_tests_check(controller, cfg, run_dir, cid))
    if cfg.gates.human_min_ratings or cfg.gates.human_min_diff is not None:
        from . import policy_after

        checks.append(gates.human_gate(store, cfg, cid, policy_after(store, cid, g - 1)))
    return _decide(store, cid, "before-grow", g, checks, overrides, actor)


def reward_tests_check(controller, cfg, run_dir, cid: str) -> GateResult:
    """The campaign's own suite on the reward version; run in a worker when it has no such run yet."""
    from . import Unit

    version = gates.reward_version(cfg)
    res = gates.reward_tests_gate(controller.store, cfg, version)
    if res is None:
        controller.run_unit(cfg, run_dir, Unit(cid, f"reward-tests-{version}", "reward_tests"))
        res = gates.reward_tests_gate(controller.store, cfg, version)
    return res


def after_checkpoint(store, cfg, cid: str, policy: str, g: int | None) -> None:
    """Flag a checkpoint whose validation audit fell while its reward rose (it will not be the final)."""
    if not cfg.gates.audit:
        return
    res = gates.checkpoint_audit(store, cfg, cid, policy)
    if res is None:
        return
    status = "pass" if res.passed else "flag"
    store.add_gate_check(cid, "checkpoint", g, "audit", status, res.message, res.figures, policy)
    if not res.passed:
        store.add_event(cid, "gate", f"checkpoint {policy} flagged: {res.message}", res.figures)


def before_final(store, cfg, cid: str, policy: str, overrides: set[str], actor: str) -> GateResult | None:
    checks = []
    if cfg.gates.audit and (res := gates.checkpoint_audit(store, cfg, cid, policy)) is not None:
        checks.append(res)  # passes by construction of the choice; stored so the timeline shows it
    if cfg.gates.human_min_ratings or cfg.gates.human_min_diff is not None:
        checks.append(gates.human_gate(store, cfg, cid, policy))
    return _decide(store, cid, "final", None, checks, overrides, actor)


def choose_final(store, cid: str) -> tuple[str, str]:
    """The final policy and why: the best validation reward over base and every Improve checkpoint, among
    those no audit or drift check failed on and whose audit metrics on validation are not below the BC
    policy's (a gain in reward bought with a loss in the audit metric is not shipped, within tolerance or
    not)."""
    figs = store.checkpoint_figures(cid)
    vals = {p: f["reward"] for p, f in figs.items() if f["reward"] is not None}
    known = {c["policy"] for c in store.checkpoints(cid)}
    flagged = dict(store.flagged_policies(cid))
    base_audit = figs.get("base", {}).get("audit", {})
    for p, f in figs.items():
        worse = [m for m, v in f["audit"].items() if m in base_audit and v < base_audit[m]]
        if p != "base" and worse and p not in flagged:
            flagged[p] = f"{', '.join(worse)} below the BC policy's on validation"
    candidates = {p: v for p, v in vals.items() if p in known and p not in flagged}
    if not candidates:
        return "base", "no checkpoint has a validation reward"
    order = [c["policy"] for c in store.checkpoints(cid)]  # oldest first; a tie goes to the later one
    best = max(candidates, key=lambda p: (candidates[p], order.index(p)))
    last = order[-1] if order else best
    why = f"best validation reward {candidates[best]:.4f} of {len(candidates)} eligible checkpoints"
    if flagged:
        why += f"; not eligible: {', '.join(sorted(flagged))}"
    if last != best and last in vals and last not in flagged and vals[last] < candidates[best]:
        why += f"; the last checkpoint {last} regressed to {vals[last]:.4f}"
    return best, why
