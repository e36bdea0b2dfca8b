"""The controller: owns the store, advances a campaign one unit at a time, runs units in workers.

CREATED -> BOOTSTRAP -> GROW(g) -> IMPROVE(g, i) -> ... -> FINAL -> DONE | STOPPED | FAILED.
The next unit is derived from the steps recorded as done, never from memory, so `resume` after a
crash (of the worker or of this process) continues from the last completed unit.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .config import CampaignConfig, config_from_dict, config_to_dict
from .data import load_split
from .stopping import Progress, stop_reason
from .store import Store

TERMINAL = ("DONE", "STOPPED", "FAILED")
OnEvent = Callable[[str, dict], None]  # (step_key, worker event)


class StepFailed(RuntimeError):
    pass


class StopRequested(RuntimeError):
    pass


@dataclass
class Unit:
    key: str
    kind: str  # bootstrap | grow | improve | final
    grow: int | None = None
    improve: int | None = None


def new_campaign(store: Store, cfg: CampaignConfig, run_root: str | Path, actor: str = "cli") -> str:
    """Validate the data (errors name file and line), copy the splits into the run dir, register the campaign."""
    splits = {s: load_split(cfg.data, s) for s in ("train", "validation", "test", "bootstrap")}
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
        self._stop: dict[str, str] = {}  # campaign id -> requested terminal state (STOPPED or PAUSED)
        self._lock = threading.Lock()

    def request_stop(self, cid: str, state: str = "STOPPED", actor: str = "operator") -> None:
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
        """The filter parameter of each Improve step of Grow g (thresholds above the mean reward V)."""
        imp = cfg.improve
        if imp.rule == "thresholds":
            v = self.store.grow_stats(cid, g)["mean"] or 0.0
            plan = [t for t in imp.thresholds if t > v]
        elif imp.rule == "percentile":
            plan = list(imp.percentiles)
        elif imp.rule == "interpolation":
            plan = list(imp.gammas)
        elif imp.rule == "quantile":
            plan = [imp.quantile]
        else:
            plan = [None]
        return plan[: imp.max_improve_steps] if imp.max_improve_steps else plan

    def policy_after(self, cid: str, g: int) -> str:
        """Checkpoint id of the policy in force after Grow g: its last Improve, else an earlier one, else base."""
        last = None
        for c in self.store.checkpoints(cid):
            if (
                c["improve"]
                and c["grow"] <= g
                and (last is None or (c["grow"], c["improve"]) > (last["grow"], last["improve"]))
            ):
                last = c
        return last["policy"] if last else "base"

    def val_by_grow(self, cid: str, done: dict[str, dict]) -> list[float]:
        vals = [done["bootstrap"]["val_reward"]] if "bootstrap" in done else []
        g = 1
        while f"g{g}-grow" in done:
            imps = [
                done[k]["val_reward"]
                for k in sorted(
                    (k for k in done if k.startswith(f"g{g}-i")), key=lambda k: int(k.split("-i")[1])
                )
            ]
            vals.append(imps[-1] if imps else vals[-1])
            g += 1
        return vals

    def next_unit(self, cid: str, cfg: CampaignConfig) -> Unit | str | None:
        """The next unit to run; a stop reason (str) when a criterion says stop; None when finished."""
        done = self.store.done_steps(cid)
        if "final" in done:
            return None
        if "bootstrap" not in done:
            return Unit("bootstrap", "bootstrap")
        g = 1
        while f"g{g}-grow" in done:
            plan = self.improve_plan(cid, cfg, g)
            for i in range(1, len(plan) + 1):
                if f"g{g}-i{i}" not in done:
                    return Unit(f"g{g}-i{i}", "improve", g, i)
            g += 1
        seconds = sum(r.get("seconds", 0.0) for r in done.values() if r)
        reason = stop_reason(
            cfg.stop, Progress(g, self.val_by_grow(cid, done), self.store.samples_generated(cid), seconds)
        )
        if reason:
            return reason
        return Unit(f"g{g}-grow", "grow", g)

    # ------------------------------------------------------------------ running
    def run(self, cid: str, override_gates: tuple[str, ...] = (), actor: str = "operator") -> str:
        """Advance the campaign until it finishes, pauses, stops or fails. Returns the final state.

        The config is re-read before every unit, so criteria changed while it runs apply at the next
        check. `override_gates` lets the named gates through once (logged with `actor`).
        """
        row, cfg = self._cfg(cid)
        if row["state"] in ("DONE", "STOPPED") and "final" in self.store.done_steps(cid):
            return row["state"]
        with self._lock:
            self._stop.pop(cid, None)
        run_dir = Path(row["run_dir"])
        overrides = set(override_gates)
        try:
            while True:
                row, cfg = self._cfg(cid)
                unit = self.next_unit(cid, cfg)
                if isinstance(unit, str):
                    self._final(cid, cfg, run_dir, unit)
                    return "DONE"
                if unit is None:
                    return "DONE"
                self._check_stop(cid)
                if unit.kind == "grow":
                    failed = self._check_gates(cid, cfg, run_dir, unit.grow, overrides, actor)
                    overrides.clear()
                    if failed:
                        msg = f"gate {failed.gate}: {failed.message}"
                        if cfg.gates.action == "stop":
                            self._final(cid, cfg, run_dir, msg, state="STOPPED")
                            return "STOPPED"
                        self.store.set_state(
                            cid,
                            "PAUSED",
                            f"paused before grow {unit.grow}: {msg}",
                            reason=msg,
                            payload=failed.figures,
                        )
                        return "PAUSED"
                self._run_unit(cid, cfg, run_dir, unit)
        except StopRequested as e:
            state = str(e)
            self.store.set_state(
                cid,
                state,
                f"campaign {state.lower()} by request",
                actor="operator",
                reason="stopped by operator" if state == "STOPPED" else None,
            )
            return state
        except StepFailed as e:
            self.store.set_state(cid, "FAILED", str(e), reason=str(e))
            return "FAILED"

    def _check_stop(self, cid: str) -> None:
        with self._lock:
            state = self._stop.pop(cid, None)
        if state:
            raise StopRequested(state)

    def _final(self, cid: str, cfg: CampaignConfig, run_dir: Path, reason: str, state: str = "DONE") -> None:
        done = self.store.done_steps(cid)
        if "final" not in done:
            self.store.add_event(cid, "stop_criterion", reason)
            self._run_unit(cid, cfg, run_dir, Unit("final", "final"), reason=reason)
        self.store.set_state(cid, state, f"campaign finished: {reason}", reason=reason)

    def _check_gates(
        self, cid: str, cfg: CampaignConfig, run_dir: Path, g: int, overrides: set[str], actor: str
    ):
        """The first failing gate before Grow g (its figures recorded as an event), or None."""
        from . import gates

        checks = []
        if cfg.gates.reward_tests:
            version = gates.reward_version(cfg)
            res = gates.reward_tests_gate(self.store, cfg, version)
            if res is None:  # never tested: run the suite in a worker, store it, then decide
                u = Unit(f"reward-tests-{version}", "reward_tests")
                self._run_unit(cid, cfg, run_dir, u)
                res = gates.reward_tests_gate(self.store, cfg, version)
            checks.append(res)
        if cfg.gates.drift:
            checks.append(gates.drift_gate(self.store, cfg, cid))
        if cfg.gates.human_min_ratings or cfg.gates.human_min_diff is not None:
            latest = self.store.grow_policy(cid, g - 1) if g > 1 else "base"
            checks.append(gates.human_gate(self.store, cfg, cid, latest))
        for res in checks:
            if res.passed:
                continue
            if res.gate in overrides:
                self.store.add_event(
                    cid,
                    "gate",
                    f"gate {res.gate} overridden before grow {g}: {res.message}",
                    res.figures,
                    actor=actor,
                )
                continue
            self.store.add_event(
                cid, "gate", f"gate {res.gate} failed before grow {g}: {res.message}", res.figures
            )
            return res
        return None

    def _run_unit(
        self, cid: str, cfg: CampaignConfig, run_dir: Path, u: Unit, reason: str | None = None
    ) -> None:
        state = {
            "bootstrap": "BOOTSTRAP",
            "grow": f"GROW({u.grow})",
            "improve": f"IMPROVE({u.grow},{u.improve})",
            "final": "EVAL(final)",
            "reward_tests": "GATE(reward_tests)",
        }[u.kind]
        self.store.set_state(cid, state, f"start {u.key}")
        self.store.start_step(cid, u.key, u.kind, u.grow, u.improve)
        step_dir = run_dir / "steps" / u.key
        task = {
            "kind": u.kind,
            "step_key": u.key,
            "config": config_to_dict(cfg),
            "grow": u.grow,
            "improve": u.improve,
            "inputs": {
                s: str(p)
                for s in ("train", "validation", "test", "bootstrap")
                if (p := run_dir / "inputs" / f"{s}.parquet").exists()
            },
        }
        ckpt = run_dir / "checkpoints"
        if u.kind == "bootstrap":
            task["out_checkpoint"] = str(ckpt / "base")
        elif u.kind == "grow":
            pol = self.policy_after(cid, u.grow - 1)
            task |= {"policy": pol, "policy_path": self._ckpt_path(cid, pol)}
        elif u.kind == "improve":
            task |= self._prepare_improve(cid, cfg, u, step_dir)
        else:
            final = self.policy_after(cid, 10**6)
            task["policies"] = {"base": self._ckpt_path(cid, "base")}
            if final != "base":
                task["policies"][final] = self._ckpt_path(cid, final)
        result = self._spawn(cid, u, step_dir, task)
        self._ingest_outputs(cid, u, step_dir)
        self._record(cid, u, task, result, run_dir, reason)
        self.store.finish_step(cid, u.key, result, result.get("seconds", 0.0))

    def _ckpt_path(self, cid: str, policy: str) -> str:
        for c in self.store.checkpoints(cid):
            if c["policy"] == policy:
                return c["path"]
        raise StepFailed(f"checkpoint {policy!r} of campaign {cid} is not recorded")

    def _prepare_improve(self, cid: str, cfg: CampaignConfig, u: Unit, step_dir: Path) -> dict:
        """Apply the filter in SQL (written as the worker's Parquet input) and pick the initial weights."""
        plan = self.improve_plan(cid, cfg, u.grow)
        param = plan[u.improve - 1]
        step_dir.mkdir(parents=True, exist_ok=True)
        stats = self.store.apply_filter(
            cid, u.grow, u.improve, cfg.improve.rule, param, step_dir / "train.parquet"
        )
        self.store.add_event(
            cid,
            "filter",
            f"{u.key}: rule {cfg.improve.rule} param {param} kept {stats['kept']} of {stats['n_total']}",
            stats,
        )
        if not stats["kept"]:
            raise StepFailed(f"{u.key}: the filter ({cfg.improve.rule}, {param}) kept no samples")
        prev = f"g{u.grow}-i{u.improve - 1}" if u.improve > 1 else self.policy_after(cid, u.grow - 1)
        init = "base" if cfg.improve.init == "restart_from_base" else prev
        n_before = sum(
            1
            for c in self.store.checkpoints(cid)
            if c["improve"] and (c["grow"], c["improve"]) < (u.grow, u.improve)
        )
        lr = cfg.improve.lr * cfg.improve.lr_decay**n_before
        return {
            "train_path": str(step_dir / "train.parquet"),
            "init_path": self._ckpt_path(cid, init),
            "init": init,
            "policy": u.key,
            "lr": lr,
            "out_checkpoint": str(step_dir.parent.parent / "checkpoints" / u.key),
        }

    def _spawn(self, cid: str, u: Unit, step_dir: Path, task: dict) -> dict:
        """Run the worker to completion, streaming its events and ingesting Grow shards as they land."""
        step_dir.mkdir(parents=True, exist_ok=True)
        result_path = step_dir / "result.json"
        if result_path.exists():  # the worker finished before this controller last died
            return json.loads(result_path.read_text())
        if u.kind != "grow":  # non-Grow units restart from scratch; Grow keeps its finished shards
            for p in step_dir.iterdir():
                if p.name != "train.parquet":
                    shutil.rmtree(p) if p.is_dir() else p.unlink()
        (step_dir / "task.json").write_text(json.dumps(task, indent=2))
        events_path = step_dir / "events.jsonl"
        offset = events_path.stat().st_size if events_path.exists() else 0
        env = os.environ | {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        with open(step_dir / "worker.log", "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "engine.worker", str(step_dir)],
                stdout=log,
                stderr=log,
                env=env,
                cwd=str(Path(__file__).resolve().parent.parent),
            )
        last_error = None
        try:
            while True:
                code = proc.poll()
                offset, events = _read_events(events_path, offset)
                for ev in events:
                    if ev["kind"] == "error":
                        last_error = ev["message"]
                    self.on_event(u.key, ev)
                if u.kind == "grow":
                    self._ingest_outputs(cid, u, step_dir)
                if code is not None:
                    break
                with self._lock:
                    stopping = cid in self._stop
                if stopping:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(timeout=30)
                    self._check_stop(cid)
                time.sleep(self.poll_s)
        except BaseException:
            if proc.poll() is None:
                proc.kill()
            raise
        if code != 0 or not result_path.exists():
            tail = (step_dir / "worker.log").read_text(errors="replace")[-2000:]
            raise StepFailed(
                f"{u.key} failed: {last_error or f'worker exited with code {code}'}"
                + ("" if last_error else f"\n{tail}")
            )
        return json.loads(result_path.read_text())

    def _ingest_outputs(self, cid: str, u: Unit, step_dir: Path) -> None:
        shard_dir = step_dir / "shards"
        if not shard_dir.exists():
            return
        for p in sorted(shard_dir.glob("*.parquet")):
            kind = "curves" if p.name.startswith("curve") else "samples"
            self.store.ingest_shard(cid, kind, f"{cid}/{u.key}/{p.name}", p)

    def _record(self, cid: str, u: Unit, task: dict, result: dict, run_dir: Path, reason: str | None) -> None:
        s = self.store
        if u.kind == "bootstrap":
            s.add_checkpoint(cid, "base", task["out_checkpoint"], None, 0, None)
            s.add_eval(cid, u.key, "base", "validation", "mean_reward", result["val_reward"])
            s.add_reward_model(
                result["reward_version"],
                result["reward_name"],
                task["config"]["reward"]["kind"],
                task["config"]["reward"].get("path"),
            )
        elif u.kind == "improve":
            s.add_checkpoint(cid, u.key, task["out_checkpoint"], task["init"], u.grow, u.improve)
            s.add_eval(cid, u.key, u.key, "validation", "mean_reward", result["val_reward"])
        elif u.kind == "grow":
            stats = s.grow_stats(cid, u.grow)
            result |= {"n_samples": stats["n"], "mean_reward": stats["mean"]}
            s.add_event(
                cid,
                "grow",
                f"grow {u.grow}: {stats['n']} scored pairs, mean reward {stats['mean']:.4f}",
                stats,
            )
        elif u.kind == "reward_tests":
            run_id = s.save_reward_test_run(result["report"])
            s.add_event(
                cid,
                "reward_tests",
                f"reward {result['report']['reward_version']}: {result['report']['verdict']}",
                {"run_id": run_id, "failed": result["report"]["failed"]},
            )
        elif u.kind == "final":
            result["stop_reason"] = reason
            for pol, r in result["policies"].items():
                s.add_eval(cid, u.key, pol, result["split"], "mean_reward", r["mean_reward"])
                for n, v in r["best_of_n"].items():
                    s.add_eval(cid, u.key, pol, result["split"], "best_of_n", v, int(n))


def _read_events(path: Path, offset: int) -> tuple[int, list[dict]]:
    """Complete JSONL lines appended since `offset`; a partial last line is left for the next poll."""
    if not path.exists():
        return offset, []
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read()
    end = data.rfind(b"\n") + 1
    events = [json.loads(line) for line in data[:end].splitlines() if line.strip()]
    return offset + end, events
