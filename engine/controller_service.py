"""The dashboard server's controller: runs campaigns in background threads and keeps their live progress.

DuckDB lets one process open the file read-write, so the dashboard's server process owns the store and
runs `Controller.run(cid)` in one thread per running campaign (steps themselves run in worker processes).
The latest worker event of each campaign is kept in memory for the live bar, ETA, loss and samples/s;
everything that matters (states, steps, samples, curves) is in the store, so a server restart loses only
that live view. Thread-safe: pages call it from Streamlit's script threads.
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import threading
import time
import tomllib
from collections import deque
from functools import partial
from pathlib import Path

from .campaign import CRITERIA_SECTIONS, Controller, new_campaign, update_criteria
from .config import CampaignConfig, config_from_dict
from .recipes import BUDGETS as RECIPE_BUDGETS  # small, full, tiny (tiny writes its overrides into the TOML)
from .recipes import PREFLIGHT_REWARD_TESTS, TINY_OVERRIDES  # noqa: F401  (TINY_OVERRIDES: re-exported)
from .state import FINISHED, State
from .store import Store

ROOT = Path(__file__).resolve().parent.parent


def open_store(path: str | Path) -> Store:
    from .store import open_store as _open

    return _open(path, create=True)


class ControllerService:
    """One per server process (the dashboard keeps it in st.cache_resource)."""

    def __init__(
        self,
        db_path: str | Path,
        run_root: str | Path | None = None,
        keep_losses: int = 2000,
        watch_s: float | None = 5.0,
    ):
        self.db_path = Path(db_path)
        self.store = open_store(self.db_path)
        self.run_root = Path(run_root) if run_root else self.db_path.resolve().parent / "runs"
        self.recipe_root = self.db_path.resolve().parent / "recipes"
        self._lock = threading.Lock()
        self._runs: dict[str, tuple[Controller, threading.Thread]] = {}
        self._live: dict[str, dict] = {}
        self._jobs: dict[str, dict] = {}
        self._keep = keep_losses
        self._closing = threading.Event()
        self._watcher = None
        if watch_s:
            self._watcher = threading.Thread(
                target=self._watch, args=(watch_s,), name="rating-gate-watch", daemon=True
            )
            self._watcher.start()
        atexit.register(self.shutdown)

    # ---------------------------------------------------------------- creating
    def recipe_config(self, name: str, budget: str = "small") -> tuple[CampaignConfig, Path]:
        """Write demo recipe `name` under <db folder>/recipes/<budget>/ and load its config.

        The recipe is written by a child process: toy-mt trains its reward head with torch, which stays out
        of the server process (a crash or an out-of-memory there must not take the dashboard down).
        """
        if budget not in RECIPE_BUDGETS:
            raise ValueError(f"budget {budget!r}: one of {list(RECIPE_BUDGETS)}")
        root = self.recipe_root / budget
        code = (
            "import sys; from engine.recipes import prepare; "
            "print(prepare(sys.argv[1], sys.argv[2], budget=sys.argv[3]))"
        )
        proc = subprocess.run(
            [sys.executable, "-c", code, name, str(root), budget],
            capture_output=True,
            text=True,
            cwd=str(ROOT),
            env=os.environ | {"HF_HUB_OFFLINE": "1"},
            timeout=3600,
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"recipe {name!r} could not be written: {proc.stderr.strip().splitlines()[-1:]}"
            )
        path = Path(proc.stdout.strip().splitlines()[-1])
        # The file as written is the config that runs (a budget's overrides are in it).
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
        return config_from_dict(raw, base_dir=path.parent), path

    def create(self, cfg: CampaignConfig, actor: str) -> str:
        """Register a validated campaign (its data are checked and copied into the run directory)."""
        return new_campaign(self.store, cfg, self.run_root, actor=actor)

    def launch_recipe(self, name: str, budget: str, actor: str, start: bool = True) -> str:
        """Prepare, create (and start) a demo campaign in the background; returns a job id for `jobs()`."""
        job = f"{name}-{budget}-{len(self._jobs) + 1}"
        with self._lock:
            self._jobs[job] = {
                "job": job,
                "recipe": name,
                "budget": budget,
                "actor": actor,
                "status": "preparing",
                "cid": None,
                "error": None,
                "t": time.time(),
            }

        def work() -> None:
            try:
                cfg, _ = self.recipe_config(name, budget)
                cid = self.create(cfg, actor)
                if name in PREFLIGHT_REWARD_TESTS:  # the reward's unit tests first, in a worker
                    with self._lock:
                        self._jobs[job].update(status="running the reward's unit tests", cid=cid)
                    self.preflight(cid, actor)
                if start:
                    self.start(cid, actor)
                with self._lock:  # the campaign id is published once it runs, so a page sees it running
                    self._jobs[job].update(cid=cid, status="started" if start else "created")
            except Exception as e:  # shown on the page
                with self._lock:
                    self._jobs[job].update(status="failed", error=f"{type(e).__name__}: {e}")

        threading.Thread(target=work, name=f"recipe-{job}", daemon=True).start()
        return job

    def preflight(self, cid: str, actor: str) -> dict:
        """Run the campaign reward's unit tests on its validation references (in a worker) and store them."""
        from .steps.reward_tests import run_outside_campaign, validation_pairs

        row = self.store.campaign(cid)
        cfg = config_from_dict(row["config"])
        run_dir = Path(row["run_dir"])
        pairs = validation_pairs(run_dir, cfg.eval.max_sources)
        step_dir = run_dir / "steps" / "preflight-reward-tests"
        return run_outside_campaign(self.store, cfg, pairs, step_dir, cid=cid, actor=actor)

    def jobs(self) -> list[dict]:
        """Recipe launches of this server, newest first."""
        with self._lock:
            return sorted((dict(j) for j in self._jobs.values()), key=lambda j: -j["t"])

    # ---------------------------------------------------------------- running
    def running(self, cid: str | None = None) -> bool | list[str]:
        with self._lock:
            alive = [c for c, (_, t) in self._runs.items() if t.is_alive()]
        return cid in alive if cid is not None else alive

    def can_start(self, cid: str) -> bool:
        row = self.store.campaign(cid)
        return row is not None and not self.running(cid) and row["state"] not in FINISHED

    def start(self, cid: str, actor: str, override_gates: tuple[str, ...] = ()) -> bool:
        """Start (or resume) a campaign in a background thread; False when it is running or finished.

        `override_gates` lets the named failing gates through once (the controller logs it with `actor`).
        """
        row = self.store.campaign(cid)
        if row is None:
            raise KeyError(f"no campaign {cid!r}")
        with self._lock:
            if cid in self._runs and self._runs[cid][1].is_alive():
                return False
            if row["state"] in FINISHED:
                return False
            ctl = Controller(self.store, on_event=partial(self._on_event, cid))
            th = threading.Thread(
                target=self._run,
                args=(cid, ctl, tuple(override_gates), actor),
                name=f"campaign-{cid}",
                daemon=True,
            )
            self._runs[cid] = (ctl, th)
            self._live[cid] = {
                "step_key": None,
                "desc": None,
                "losses": deque(maxlen=self._keep),
                "error": None,
                "started_at": time.time(),
                "finished": None,
            }
        verb = "started" if row["state"] == "CREATED" else f"resumed from {row['state']}"
        extra = f", overriding gate(s) {', '.join(override_gates)} once" if override_gates else ""
        self.store.add_event(cid, "request", f"campaign {verb} from the dashboard{extra}", actor=actor)
        th.start()
        return True

    def _run(self, cid: str, ctl: Controller, override_gates: tuple[str, ...], actor: str) -> None:
        state = State.FAILED
        try:
            state = ctl.run(cid, override_gates=override_gates, actor=actor)
        except Exception as e:  # a controller bug must not leave the campaign looking alive
            msg = f"controller error: {type(e).__name__}: {e}"
            self.store.set_state(cid, State.FAILED, msg, reason=msg)
            with self._lock:
                self._live[cid]["error"] = msg
        finally:
            with self._lock:
                if cid in self._live:
                    self._live[cid]["finished"] = state

    def update_criteria(self, cid: str, section: str, values: dict, actor: str) -> dict:
        """Write the fields of one criteria table ([stop] or [gates]) that differ from the campaign's config.

        Goes through engine.campaign.update_criteria (whole-config validation, one logged event); a running
        campaign picks the change up before its next unit. Returns {field: [before, after]} of what changed.
        Raises engine.config.ConfigError naming the field.
        """
        if section not in CRITERIA_SECTIONS:
            raise ValueError(
                f"section {section!r}: only {list(CRITERIA_SECTIONS)} can be changed on a campaign"
            )
        row = self.store.campaign(cid)
        if row is None:
            raise KeyError(f"no campaign {cid!r}")
        current = row["config"].get(section, {})
        changed = {k: [current.get(k), v] for k, v in values.items() if current.get(k) != v}
        if changed:
            update_criteria(self.store, cid, {f"{section}.{k}": v for k, (_, v) in changed.items()}, actor)
        return changed

    def pause(self, cid: str, actor: str) -> bool:
        """Ask a running campaign to pause: the worker is stopped and the step resumes later from its
        shards."""
        return self._request(cid, State.PAUSED, actor)

    def stop(self, cid: str, actor: str) -> bool:
        """Stop for good. A campaign that is not running (created, paused, failed) is marked STOPPED at
        once."""
        if self._request(cid, State.STOPPED, actor):
            return True
        row = self.store.campaign(cid)
        if row is None or row["state"] in FINISHED:
            return False
        self.store.set_state(
            cid, State.STOPPED, f"campaign stopped by {actor}", actor=actor, reason=f"stopped by {actor}"
        )
        return True

    def _request(self, cid: str, state: str, actor: str) -> bool:
        with self._lock:
            run = self._runs.get(cid)
        if run is None or not run[1].is_alive():
            return False
        run[0].request_stop(cid, state, actor=actor)
        return True

    def wait(self, cid: str, timeout: float | None = None) -> bool:
        """Join a campaign's thread (tests, shutdown); True when it is no longer running."""
        with self._lock:
            run = self._runs.get(cid)
        if run is not None:
            run[1].join(timeout)
        return not self.running(cid)

    def resume_waiting(self) -> list[str]:
        """Start the campaigns the human gate paused to wait for ratings, once enough have come in.

        Returns the ids started. The watcher thread calls this every few seconds; a page may call it
        right after a rating is submitted.
        """
        from .gates import human_gate

        started = []
        for c in self.store.campaigns():
            cid = c["id"]
            if c["state"] != State.PAUSED or self.running(cid):
                continue
            # The transition into PAUSED carries the failing gate's figures: a wait for ratings says so.
            pause = self.store.events(cid, ["state"])[-1]
            figures = json.loads(pause["payload"]) if isinstance(pause["payload"], str) else pause["payload"]
            if not figures or "waiting_for" not in figures:
                continue
            cfg = config_from_dict(self.store.campaign(cid)["config"])
            if not human_gate(self.store, cfg, cid, figures["policy"]).passed:
                continue
            self.store.add_event(cid, "request", "ratings are in: resuming the campaign", actor="rating gate")
            if self.start(cid, "rating gate"):
                started.append(cid)
        return started

    def _watch(self, every: float) -> None:
        while not self._closing.wait(every):
            try:
                self.resume_waiting()
            except Exception as e:  # a store hiccup must not end the watcher; the next round retries
                print(f"rating-gate watcher: {type(e).__name__}: {e}", file=sys.stderr)

    def shutdown(self, timeout: float = 20.0) -> None:
        """Pause every running campaign (at exit), so a restart resumes them instead of finding them
        orphaned."""
        self._closing.set()
        if self._watcher is not None and self._watcher is not threading.current_thread():
            self._watcher.join(timeout)  # it may be in the middle of a query on the store
        for cid in self.running():
            self._request(cid, State.PAUSED, "server shutdown")
        deadline = time.time() + timeout
        for cid in self.running():
            self.wait(cid, max(0.0, deadline - time.time()))

    # ---------------------------------------------------------------- live progress
    def _on_event(self, cid: str, step_key: str, ev: dict) -> None:
        with self._lock:
            live = self._live.get(cid)
            if live is None:
                return
            if step_key != live["step_key"]:
                live.update(step_key=step_key, desc=None, losses=deque(maxlen=self._keep))
            kind = ev.get("kind")
            if kind == "progress":
                if ev.get("desc") != live["desc"]:  # a new phase: its own rate and ETA
                    live.update(desc=ev.get("desc"), t0=ev.get("t", time.time()), done0=ev.get("done", 0))
                live.update(
                    {k: ev.get(k) for k in ("done", "total", "samples_per_s", "val_reward")}
                    | {"t": ev.get("t")}
                )
                if ev.get("loss") is not None:
                    live["loss"] = ev["loss"]
                    live["losses"].append({"step_key": step_key, "step": ev.get("done"), "loss": ev["loss"]})
            elif kind == "error":
                live["error"] = ev.get("message")
            elif kind == "start":
                live.update(desc=None, done=None, total=None)

    def live(self, cid: str) -> dict | None:
        """The latest progress of a campaign run by this process: step, phase, done/total, ETA, loss
        history."""
        with self._lock:
            live = self._live.get(cid)
            if live is None:
                return None
            out = {k: v for k, v in live.items() if k != "losses"}
            out["losses"] = list(live["losses"])
            out["running"] = cid in self._runs and self._runs[cid][1].is_alive()
        done, total = out.get("done"), out.get("total")
        out["eta_s"] = None
        if done is not None and total and out.get("t") and out.get("t0") is not None:
            rate = (done - out.get("done0", 0)) / max(out["t"] - out["t0"], 1e-9)
            if rate > 0 and done < total:
                out["eta_s"] = max(0.0, (total - done) / rate - (time.time() - out["t"]))
        return out
