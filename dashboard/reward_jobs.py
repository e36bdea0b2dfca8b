"""Reward unit tests run from the Reward tests page: each run is a worker process, watched from a background
thread of the server, never from the page.

A job draws the reference set (the campaign's validation references from its run directory, or N samples of
its latest Grow step from the store), then hands it to engine.steps.reward_tests.run_outside_campaign: the
campaign's reward is loaded and the suite run in a worker under `<run_dir>/steps/reward-tests-<job id>`, so
a reward model that crashes or runs out of memory ends that worker, not the dashboard. The run is stored
with its reward version and a "reward_tests" event naming who ran it. The page polls `jobs()` from an
st.fragment. Plain Python: no Streamlit here, so tests can drive it directly.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

from engine.config import RewardConfig, config_from_dict
from engine.steps.reward_tests import campaign_settings, run_outside_campaign, validation_pairs
from reward_tests.suite import for_reward

REFERENCE_SETS = {
    "validation": "Validation references of the campaign (the good outputs the reward-tests gate uses)",
    "samples": "Generated samples of the campaign's latest Grow step (drawn from the store)",
}
Pair = tuple[str, str, str, str | None]


def campaign_config(store, cid: str):
    row = store.campaign(cid)
    if row is None:
        raise KeyError(f"no campaign {cid!r}")
    return config_from_dict(row["config"]), row


def test_names(reward: RewardConfig) -> list[str]:
    """The suite the campaign's gate would run: the default tests plus the reward config's own."""
    return [t.name for t in for_reward(reward)]


def unknown_tests(reward: RewardConfig, names) -> str | None:
    """Why a list of test names (a skip list) is refused: the names the reward's suite does not have and
    the ones it does; None when every name is known."""
    valid = test_names(reward)
    unknown = [n for n in names if n not in valid]
    if not unknown:
        return None
    return f"unknown test(s) {', '.join(unknown)}; the suite of this reward has: {', '.join(valid)}"


def reference_pairs(
    store, cid: str, kind: str, n: int, seed: int = 0, min_reward: float | None = None
) -> list[Pair]:
    """(id, source, candidate, reference) pairs: the first `n` validation references (the candidates are the
    references themselves, as the gate does), or `n` seeded samples of the latest Grow step."""
    if kind == "validation":
        run_dir = Path(store.campaign(cid)["run_dir"])
        pairs = validation_pairs(run_dir, n)
        if not pairs:
            path = run_dir / "inputs" / "validation.parquet"
            raise ValueError(f"campaign {cid} has no validation references ({path} is missing or empty)")
        return pairs
    if kind == "samples":
        pairs = store.reward_test_pairs(cid, n, seed, min_reward)
        if not pairs:
            floor = "" if min_reward is None else f" with reward >= {min_reward}"
            raise ValueError(f"campaign {cid} has no generated samples{floor} yet")
        return pairs
    raise ValueError(f"reference set {kind!r}: one of {list(REFERENCE_SETS)}")


class RewardTestJobs:
    """The reward-test runs this server started (one at a time per campaign), newest first in `jobs()`."""

    def __init__(self, store):
        self.store = store
        self._lock = threading.Lock()
        self._jobs: dict[str, dict] = {}

    def start(
        self,
        cid: str,
        kind: str,
        n: int,
        actor: str,
        seed: int = 0,
        skip: list[str] | tuple[str, ...] = (),
        min_reward: float | None = None,
        tol_scale: float = 1.0,
        only: list[str] | tuple[str, ...] = (),
    ) -> str:
        """Start a run in a background thread and return its job id (ValueError if this campaign has one
        running)."""
        if kind not in REFERENCE_SETS:
            raise ValueError(f"reference set {kind!r}: one of {list(REFERENCE_SETS)}")
        for what, names in (("tests to leave out", skip), ("tests to run", only)):
            if why := unknown_tests(campaign_config(self.store, cid)[0].reward, names):
                raise ValueError(f"{what}: {why}")
        with self._lock:
            if any(j["cid"] == cid and j["status"] not in ("done", "failed") for j in self._jobs.values()):
                raise ValueError(f"a reward test run of campaign {cid} is already running")
            job = f"rtjob-{uuid.uuid4().hex[:8]}"
            self._jobs[job] = {
                "job": job,
                "cid": cid,
                "kind": kind,
                "n": int(n),
                "actor": actor,
                "status": "queued",
                "run_id": None,
                "verdict": None,
                "failed": [],
                "error": None,
                "step_dir": None,
                "t0": time.time(),
                "t1": None,
            }
        args = (job, cid, kind, int(n), actor, seed, tuple(skip), tuple(only), min_reward, tol_scale)
        threading.Thread(target=self._work, args=args, name=f"reward-tests-{cid}", daemon=True).start()
        return job

    def _set(self, job: str, **kw) -> None:
        with self._lock:
            self._jobs[job].update(kw)

    def _work(self, job, cid, kind, n, actor, seed, skip, only, min_reward, tol_scale) -> None:
        try:
            cfg, row = campaign_config(self.store, cid)
            self._set(job, status="drawing the reference set")
            pairs = reference_pairs(self.store, cid, kind, n, seed, min_reward)
            step_dir = Path(row["run_dir"]) / "steps" / f"reward-tests-{job}"
            settings = campaign_settings(cfg) | {
                "skip": sorted(skip),
                "only": sorted(only),
                "tol_scale": float(tol_scale),
                "seed": int(seed),
            }
            self._set(
                job,
                status=f"starting a worker for the reward ({cfg.reward.kind}) on {len(pairs)} pairs",
                step_dir=str(step_dir),
            )
            report = run_outside_campaign(
                self.store,
                cfg,
                pairs,
                step_dir,
                settings=settings,
                cid=cid,
                actor=actor,
                report_extra={
                    "reward": {
                        "kind": cfg.reward.kind,
                        "path": cfg.reward.path,
                        "function": cfg.reward.function,
                    },
                    "campaign": cid,
                    "reference_set": kind,
                    "actor": actor,
                },
                on_event=lambda ev: self._on_event(job, cfg.reward.kind, len(pairs), ev),
            )
            self._set(
                job,
                status="done",
                run_id=report["run_id"],
                verdict=report["verdict"],
                failed=report["failed"],
                t1=time.time(),
            )
        except Exception as e:  # shown on the page; a worker's failure names its error
            self._set(job, status="failed", error=f"{type(e).__name__}: {e}", t1=time.time())

    def _on_event(self, job: str, reward_kind: str, n_pairs: int, ev: dict) -> None:
        if ev["kind"] == "start":
            self._set(job, status=f"worker {ev.get('pid')} started")
        elif ev["kind"] == "progress" and ev.get("done", 0) < ev.get("total", 1):
            self._set(
                job,
                status=f"worker: loading the {reward_kind} reward, scoring {n_pairs} pairs and their "
                "perturbations",
            )

    def jobs(self, cid: str | None = None) -> list[dict]:
        with self._lock:
            rows = [dict(j) for j in self._jobs.values() if cid is None or j["cid"] == cid]
        return sorted(rows, key=lambda j: -j["t0"])

    def running(self, cid: str | None = None) -> bool:
        return any(j["status"] not in ("done", "failed") for j in self.jobs(cid))

    def wait(self, job: str, timeout: float = 60.0) -> dict:
        """Poll until the job ends (tests)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            j = next(x for x in self.jobs() if x["job"] == job)
            if j["status"] in ("done", "failed"):
                return j
            time.sleep(0.1)
        raise TimeoutError(f"reward test job {job} still {j['status']} after {timeout} s")
