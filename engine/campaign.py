"""The controller: owns the store, advances a campaign one unit at a time, runs each unit in a worker.

CREATED -> BOOTSTRAP -> GROW(g) -> GATES(g) -> IMPROVE(g, i) -> ... -> EVAL(final) -> DONE | STOPPED | FAILED
(engine/state.py).
The next unit is derived from the steps recorded as done, never from memory, so `resume` after a crash
(of the worker or of this process) continues from the last completed unit. What each unit prepares, runs
and records is its module in engine/steps/; the worker's file contract is engine/worker.py.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from . import filters, steps
from .config import CampaignConfig, config_from_dict, config_to_dict
from .data import load_split
from .probe import PROBE_PAIRS, check_models
from .state import FINISHED, State
from .steps import EndCampaign, StepFailed, Unit
from .steps import gates as gate_steps
from .stopping import Progress, stop_reason
from .store import Store
from .store.core import shard_kind
from .worker import WorkerFailed, WorkerStopped, spawn

OnEvent = Callable[[str, dict], None]  # (step_key, worker event)


class CampaignStopped(RuntimeError):
    """The campaign was stopped for good by an operator; running it again needs `reopen`."""


class StopRequested(RuntimeError):
    """An operator asked the running campaign to stop or pause; the message is the state to enter."""


def new_campaign(store: Store, cfg: CampaignConfig, run_root: str | Path, actor: str = "cli") -> str:
    """Validate the data (errors name file and line) and the models (ConfigError naming the field: the
    policy directory, the reward and each audit metric scored on a few validation pairs), then copy the
    splits into the run dir and register the campaign. Nothing is written before both checks pass."""
    splits = {s: load_split(cfg.data, s) for s in ("train", "validation", "test", "bootstrap")}
    check_models(cfg, [(e.source, e.reference) for e in splits["validation"][:PROBE_PAIRS]])
    slug = re.sub(r"[^a-z0-9]+", "-", cfg.name.lower()).strip("-")[:32] or "campaign"
    cid = f"{slug}-{uuid.uuid4().hex[:6]}"
    run_dir = Path(run_root).resolve() / cid
    (run_dir / "inputs").mkdir(parents=True)
    for split, exs in splits.items():
        if not exs:
            continue
        pq.write_table(
            pa.table(
                {
                    "source_id": [e.id for e in exs],
                    "source": [e.source for e in exs],
                    "reference": [e.reference for e in exs],
                }
            ),
            run_dir / "inputs" / f"{split}.parquet",
        )
        store.add_prompts(cid, split, [(e.id, e.source, e.reference) for e in exs])
    store.create_campaign(cid, cfg.name, cfg.mode, config_to_dict(cfg), str(run_dir), actor=actor)
    return cid


CRITERIA_SECTIONS = ("stop", "gates")


def update_criteria(store: Store, cid: str, changes: dict[str, object], actor: str) -> CampaignConfig:
    """Change stopping criteria or gates (`{"stop.max_grow_steps": 3}`) of a campaign, running or not.

    The new config is validated as a whole before it is written; the event records who changed what.
    """
    row = store.campaign(cid)
    if row is None:
        raise KeyError(f"no campaign {cid!r} in {store.path}")
    new = json.loads(json.dumps(row["config"]))
    before = {}
    for key, value in changes.items():
        section, _, name = key.partition(".")
        if section not in CRITERIA_SECTIONS or not name:
            raise ValueError(
                f"{key}: only stop.* and gates.* criteria can be changed on an existing campaign"
            )
        before[key] = new.setdefault(section, {}).get(name)
        if value is None:
            new[section].pop(name, None)
        else:
            new[section][name] = value
    cfg = config_from_dict(new)  # raises ConfigError naming the field
    clean = config_to_dict(cfg)
    summary = ", ".join(f"{k}: {before[k]!r} -> {v!r}" for k, v in changes.items())
    store.update_config(
        cid,
        clean,
        actor,
        f"criteria changed by {actor}: {summary}",
        {"before": before, "after": dict(changes)},
    )
    return cfg


class Controller:
    """Runs campaigns stored in `store`. Thread-safe to request stops from another thread."""

    def __init__(self, store: Store, on_event: OnEvent | None = None, poll_s: float = 0.25):
        self.store = store
        self.on_event = on_event or (lambda key, ev: None)
        self.poll_s = poll_s
        self._stop: dict[str, str] = {}  # campaign id -> requested state (STOPPED or PAUSED)
        self._lock = threading.Lock()

    def request_stop(self, cid: str, state: str = State.STOPPED, actor: str = "operator") -> None:
        with self._lock:
            self._stop[cid] = state
        self.store.add_event(cid, "request", f"{state.lower()} requested", actor=actor)

    # ------------------------------------------------------------------ planning
    def _cfg(self, cid: str) -> tuple[dict, CampaignConfig]:
        row = self.store.campaign(cid)
        if row is None:
            raise KeyError(f"no campaign {cid!r} in {self.store.path}")
        return row, config_from_dict(row["config"])

    def improve_plan(self, cid: str, cfg: CampaignConfig, g: int) -> list[float | None]:
        """The filter parameter of each Improve step of Grow g (engine/filters.py)."""
        return filters.plan(cfg, self.store.grow_stats(cid, g)["mean"])

    def val_by_grow(self, done: dict[str, dict]) -> list[float]:
        """Validation reward after bootstrap and after each Grow's last Improve (input of the stopping
        criteria)."""
        vals = [done["bootstrap"]["val_reward"]] if "bootstrap" in done else []
        g = 1
        while f"g{g}-grow" in done:
            keys = sorted((k for k in done if k.startswith(f"g{g}-i")), key=lambda k: int(k.split("-i")[1]))
            got = [done[k]["val_reward"] for k in keys if done[k].get("val_reward") is not None]
            vals.append(got[-1] if got else vals[-1])
            g += 1
        return vals

    def next_unit(self, cid: str, cfg: CampaignConfig) -> Unit | str | None:
        """The next unit to run; a stop reason (str) when a criterion says stop; None when finished.

        Budgets and the Grow count are consulted before a pending Improve too, so a criterion changed
        while a Grow's Improve steps are under way applies at the next unit, not after them.
        """
        done = self.store.done_steps(cid)
        if "final" in done:
            return None
        if "bootstrap" not in done:
            return Unit(cid, "bootstrap", "bootstrap")
        seconds = sum(r.get("seconds", 0.0) for r in done.values() if r)
        generated = self.store.samples_generated(cid)
        g = 1
        while f"g{g}-grow" in done:
            if f"g{g}-gates" not in done:
                return Unit(cid, f"g{g}-gates", "gates", g)
            plan = self.improve_plan(cid, cfg, g)
            for i in range(1, len(plan) + 1):
                if f"g{g}-i{i}" not in done:
                    reason = stop_reason(cfg.stop, Progress(g, [], generated, seconds))
                    return reason or Unit(cid, f"g{g}-i{i}", "improve", g, i)
            g += 1
        reason = stop_reason(cfg.stop, Progress(g, self.val_by_grow(done), generated, seconds))
        if reason:
            return reason
        return Unit(cid, f"g{g}-grow", "grow", g)

    # ------------------------------------------------------------------ running
    def run(
        self,
        cid: str,
        override_gates: tuple[str, ...] = (),
        actor: str = "operator",
        reopen: bool = False,
    ) -> str:
        """Advance the campaign until it finishes, pauses, stops or fails. Returns the final state.

        The config is re-read before every unit, so criteria changed while it runs apply at the next
        check. `override_gates` lets the named gates through once (logged with `actor`). A campaign an
        operator STOPPED runs again only with `reopen`.
        """
        row, cfg = self._cfg(cid)
        done = self.store.done_steps(cid)
        if "final" in done:
            if row["state"] not in FINISHED:  # killed between recording the final step and the transition
                reason = (done["final"] or {}).get("stop_reason") or "final evaluation done"
                self.store.set_state(cid, State.DONE, f"campaign finished: {reason}", reason=reason)
                return State.DONE
            return row["state"]
        if row["state"] == State.STOPPED and not reopen:
            raise CampaignStopped(
                f"campaign {cid} was stopped ({row['stop_reason'] or 'no reason recorded'}); "
                "reopen it explicitly to run it again"
            )
        with self._lock:
            self._stop.pop(cid, None)
        run_dir = Path(row["run_dir"])
        overrides = set(override_gates)
        try:
            while True:
                row, cfg = self._cfg(cid)
                unit = self.next_unit(cid, cfg)
                if isinstance(unit, str):
                    return self._final(cid, cfg, run_dir, unit, overrides, actor)
                if unit is None:
                    return State.DONE
                self._check_stop(cid)
                if unit.kind == "gates":
                    self.store.set_state(cid, State.gates(unit.grow), f"gates after grow {unit.grow}")
                    self.store.start_step(cid, unit.key, "gates", unit.grow, None)
                    failed = gate_steps.after_grow(self.store, cfg, cid, unit.grow, overrides, actor)
                    overrides.clear()
                    if failed:
                        return self._gate_failed(cid, cfg, run_dir, failed, f"after grow {unit.grow}")
                    self.store.finish_step(cid, unit.key, {"passed": True}, 0.0)
                    continue
                if unit.kind == "grow":
                    failed = gate_steps.before_grow(self, cfg, run_dir, cid, unit.grow, overrides, actor)
                    overrides.clear()
                    if failed:
                        return self._gate_failed(cid, cfg, run_dir, failed, f"before grow {unit.grow}")
                try:
                    result = self.run_unit(cfg, run_dir, unit)
                except EndCampaign as e:
                    self.store.finish_step(cid, unit.key, {"skipped": str(e), "ended": True}, 0.0)
                    return self._final(cid, cfg, run_dir, str(e), overrides, actor)
                if unit.kind == "improve" and not result.get("skipped"):
                    gate_steps.after_checkpoint(self.store, cfg, cid, unit.key, unit.grow)
        except StopRequested as e:
            state = str(e)
            reason = "stopped by operator" if state == State.STOPPED else None
            self.store.set_state(
                cid, state, f"campaign {state.lower()} by request", actor="operator", reason=reason
            )
            return state
        except StepFailed as e:
            self.store.set_state(cid, State.FAILED, str(e), reason=str(e))
            return State.FAILED

    def _gate_failed(self, cid: str, cfg: CampaignConfig, run_dir: Path, failed, where: str) -> str:
        msg = f"gate {failed.gate}: {failed.message}"
        if cfg.gates.action == "stop" and not failed.waiting:
            self._final(cid, cfg, run_dir, msg, set(), "controller", state=State.STOPPED)
            return State.STOPPED
        self.store.set_state(cid, State.PAUSED, f"paused {where}: {msg}", reason=msg, payload=failed.figures)
        return State.PAUSED

    def _check_stop(self, cid: str) -> None:
        with self._lock:
            state = self._stop.pop(cid, None)
        if state:
            raise StopRequested(state)

    def _stopping(self, cid: str) -> bool:
        with self._lock:
            return cid in self._stop

    def _final(
        self,
        cid: str,
        cfg: CampaignConfig,
        run_dir: Path,
        reason: str,
        overrides: set[str],
        actor: str,
        state: str = State.DONE,
    ) -> str:
        """Choose the final policy, check it, evaluate it on test; then DONE (or `state`)."""
        if "final" not in self.store.done_steps(cid):
            policy, why = gate_steps.choose_final(self.store, cid)
            failed = gate_steps.before_final(self.store, cfg, cid, policy, overrides, actor)
            overrides.clear()
            if failed and state == State.DONE:
                return self._gate_failed(cid, cfg, run_dir, failed, "before the final evaluation")
            self.store.add_event(cid, "stop_criterion", reason)
            self.store.add_event(cid, "final_policy", f"final policy {policy}: {why}", {"policy": policy})
            self.run_unit(cfg, run_dir, Unit(cid, "final", "final", reason=reason))
        self.store.set_state(cid, state, f"campaign finished: {reason}", reason=reason)
        return state

    def run_unit(self, cfg: CampaignConfig, run_dir: Path, u: Unit) -> dict:
        """Prepare the unit, run it in a worker (ingesting its shards as they land), record its result."""
        step = steps.module(u.kind)
        self.store.set_state(u.cid, u.state, f"start {u.key}")
        self.store.start_step(u.cid, u.key, u.kind, u.grow, u.improve)
        step_dir = run_dir / "steps" / u.key
        task = steps.base_task(u, config_to_dict(cfg), run_dir) | step.prepare(self.store, u, cfg, run_dir)
        if task.get("skip"):  # nothing for a worker to do (an Improve whose filter kept nothing)
            self.store.add_event(u.cid, "skip", task["skip"])
            result = {"skipped": task["skip"], "val_reward": None, "seconds": 0.0}
            self.store.finish_step(u.cid, u.key, result, 0.0)
            return result
        try:
            result = spawn(
                step_dir,
                task,
                on_event=lambda ev: self.on_event(u.key, ev),
                on_poll=(lambda: self._ingest(u, step_dir)) if u.kind == "grow" else (lambda: None),
                should_stop=lambda: self._stopping(u.cid),
                keep=("train.parquet", "pairs.parquet"),
                poll_s=self.poll_s,
            )
        except WorkerStopped:
            self._check_stop(u.cid)
            raise
        except WorkerFailed as e:
            raise StepFailed(str(e)) from e
        self._ingest(u, step_dir)
        step.record(self.store, u, task, result)
        self.store.finish_step(u.cid, u.key, result, result.get("seconds", 0.0))
        return result

    def _ingest(self, u: Unit, step_dir: Path) -> None:
        shard_dir = step_dir / "shards"
        if not shard_dir.exists():
            return
        for p in sorted(shard_dir.glob("*.parquet")):
            self.store.ingest_shard(u.cid, shard_kind(p.name), f"{u.cid}/{u.key}/{p.name}", p)
