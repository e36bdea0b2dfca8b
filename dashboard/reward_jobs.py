"""Reward unit tests run from the Reward tests page: in a background thread of the server, never in the page.

A job loads the campaign's reward (its config's [reward] table, as the campaign scores with it), draws the
reference set (the campaign's validation references from its run directory, or N samples of its latest Grow
step from the store), runs reward_tests.runner.run_suite and records the run with store.save_reward_test_run
(plus the reward version in reward_models and a "reward_tests" event naming who ran it). The page polls
`jobs()` from an st.fragment. Plain Python: no Streamlit here, so tests can drive it directly.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

from engine.config import RewardConfig, config_from_dict

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
    return [t.name for t in suite(reward)]


def suite(reward: RewardConfig, skip: list[str] | tuple[str, ...] = ()) -> list:
    from reward_tests.suite import default_suite, load_user_tests, merge, select

    tests = default_suite()
    for spec in reward.tests:
        tests = merge(tests, load_user_tests(spec))
    return select(tests, skip=[s for s in skip if s in {t.name for t in tests}])


def reference_pairs(
    store, cid: str, kind: str, n: int, seed: int = 0, min_reward: float | None = None
) -> list[Pair]:
    """(id, source, candidate, reference) pairs: the first `n` validation references (the candidates are the
    references themselves, as the gate does), or `n` seeded samples of the latest Grow step."""
    if kind == "validation":
        from engine.worker import read_examples

        path = Path(store.campaign(cid)["run_dir"]) / "inputs" / "validation.parquet"
        if not path.is_file():
            raise ValueError(f"campaign {cid} has no validation split ({path} is missing)")
        return [(e.id, e.source, e.reference, e.reference) for e in read_examples(path)[:n] if e.reference]
    if kind == "samples":
        pairs = store.reward_test_pairs(cid, n, seed, min_reward)
        if not pairs:
            raise ValueError(
                f"campaign {cid} has no generated samples{'' if min_reward is None else f' with reward >= {min_reward}'} yet"
            )
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
    ) -> str:
        """Start a run in a background thread and return its job id (ValueError if this campaign has one running)."""
        if kind not in REFERENCE_SETS:
            raise ValueError(f"reference set {kind!r}: one of {list(REFERENCE_SETS)}")
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
                "t0": time.time(),
                "t1": None,
            }
        args = (job, cid, kind, int(n), actor, seed, tuple(skip), min_reward, tol_scale)
        threading.Thread(target=self._work, args=args, name=f"reward-tests-{cid}", daemon=True).start()
        return job

    def _set(self, job: str, **kw) -> None:
        with self._lock:
            self._jobs[job].update(kw)

    def _work(self, job, cid, kind, n, actor, seed, skip, min_reward, tol_scale) -> None:
        try:
            from engine.rewards import load_reward
            from reward_tests.report import to_dict
            from reward_tests.runner import run_suite

            cfg, _ = campaign_config(self.store, cid)
            self._set(job, status="drawing the reference set")
            pairs = reference_pairs(self.store, cid, kind, n, seed, min_reward)
            self._set(job, status=f"loading the reward ({cfg.reward.kind})")
            reward = load_reward(cfg.reward)
            self._set(job, status=f"scoring {len(pairs)} pairs and their perturbations")
            report = run_suite(
                reward,
                pairs,
                suite(cfg.reward, skip),
                seed=seed,
                tol_scale=tol_scale,
                min_pass_rate=cfg.gates.reward_tests_min_pass_rate,
            )
            report.config |= {
                "reward": {"kind": cfg.reward.kind, "path": cfg.reward.path, "function": cfg.reward.function},
                "campaign": cid,
                "reference_set": kind,
                "skip": list(skip),
                "actor": actor,
            }
            d = to_dict(report)
            self.store.add_reward_model(
                report.reward_version or "",
                report.reward_name,
                cfg.reward.kind,
                cfg.reward.path or cfg.reward.function,
            )
            run_id = self.store.save_reward_test_run(d)
            self.store.add_event(
                cid,
                "reward_tests",
                f"reward {report.reward_version}: {report.verdict} "
                f"({len(pairs)} {kind} pairs, run from the dashboard)",
                {"run_id": run_id, "failed": d["failed"]},
                actor=actor,
            )
            self._set(
                job, status="done", run_id=run_id, verdict=report.verdict, failed=d["failed"], t1=time.time()
            )
        except Exception as e:  # shown on the page
            self._set(job, status="failed", error=f"{type(e).__name__}: {e}", t1=time.time())

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
