"""The units of a ReST campaign, one module each, read in loop order:

    bootstrap -> (grow -> improve x n) x G -> final            plus reward_tests, run for the reward gate

Each module owns the three parts of its unit:
- `prepare(store, unit, cfg, run_dir) -> dict`: in the controller, the unit's task (what the worker needs, as
  plain JSON: paths of Parquet inputs and checkpoints, hyper-parameters);
- `run(ctx) -> dict`: in the worker process (engine/worker.py), which never opens the database;
- `record(store, unit, task, result)`: back in the controller, the result written to the store.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

from ..state import State


class StepFailed(RuntimeError):
    """A unit could not run or its worker failed; the campaign is marked FAILED with this message."""


class EndCampaign(RuntimeError):
    """A unit found a reason to end the campaign (`improve.on_empty = "stop"`): final evaluation, DONE."""


@dataclass
class Unit:
    cid: str  # campaign id ("" for a reward-test run outside a campaign)
    key: str  # step key in the store: bootstrap, g1-grow, g1-i2, final, reward-tests-<version>
    kind: str  # bootstrap | grow | improve | final | reward_tests
    grow: int | None = None
    improve: int | None = None
    reason: str | None = None  # why the campaign ends (final unit only)

    @property
    def state(self) -> str:
        if self.kind == "bootstrap":
            return State.BOOTSTRAP
        if self.kind == "grow":
            return State.grow(self.grow)
        if self.kind == "improve":
            return State.improve(self.grow, self.improve)
        if self.kind == "final":
            return State.eval("final")
        return State.gate(self.kind)


def module(kind: str) -> ModuleType:
    """The step module of a unit kind (imported on demand: the worker needs only its own)."""
    from . import bootstrap, final, grow, improve, reward_tests

    steps = {m.KIND: m for m in (bootstrap, grow, improve, final, reward_tests)}
    if kind not in steps:
        raise StepFailed(f"unknown unit kind {kind!r}; known: {sorted(steps)}")
    return steps[kind]


def checkpoint_path(store, cid: str, policy: str) -> str:
    for c in store.checkpoints(cid):
        if c["policy"] == policy:
            return c["path"]
    raise StepFailed(f"checkpoint {policy!r} of campaign {cid} is not recorded")


def policy_after(store, cid: str, g: int) -> str:
    """Checkpoint id of the policy in force after Grow g: its last Improve, else an earlier one, else base."""
    last = None
    for c in store.checkpoints(cid):
        if c["improve"] and c["grow"] <= g and (last is None or (c["grow"], c["improve"]) > key(last)):
            last = c
    return last["policy"] if last else "base"


def latest_before(store, cid: str, g: int, i: int) -> str:
    """The latest checkpoint before Improve (g, i) (an Improve skipped for an empty filter has none)."""
    before = [c for c in store.checkpoints(cid) if c["improve"] and key(c) < (g, i)]
    return max(before, key=key)["policy"] if before else "base"


def key(c: dict) -> tuple[int, int]:
    return (c["grow"], c["improve"])


def base_task(unit: Unit, cfg_dict: dict, run_dir) -> dict:
    """What every task carries: its kind and step, the campaign config and the campaign's input splits."""
    inputs = {}
    for s in ("train", "validation", "test", "bootstrap"):
        p = run_dir / "inputs" / f"{s}.parquet"
        if p.exists():
            inputs[s] = str(p)
    return {
        "kind": unit.kind,
        "step_key": unit.key,
        "config": cfg_dict,
        "grow": unit.grow,
        "improve": unit.improve,
        "inputs": inputs,
    }
