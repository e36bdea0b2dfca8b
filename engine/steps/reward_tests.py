"""Reward tests: the reward model's unit tests (reward_tests/) run in a worker, never in the controller or
the dashboard's server: a reward may be a large model or user code.

A task names the reward (the campaign's, or a candidate version's `reward` table), a Parquet file of
(source_id, source, candidate, reference) pairs and the settings (skip, only, tolerance scale, pass rate,
seed); the report, with those settings, is stored as a reward-test run that the reward-tests gate reads.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ..worker import write_parquet_atomic
from . import Unit

KIND = "reward_tests"
PAIRS_SCHEMA = pa.schema(
    [
        ("source_id", pa.string()),
        ("source", pa.string()),
        ("candidate", pa.string()),
        ("reference", pa.string()),
    ]
)


def campaign_settings(cfg) -> dict:
    """The settings of the campaign's own suite: the ones its reward-tests gate accepts."""
    return {
        "skip": sorted(cfg.gates.reward_tests_skip),
        "only": [],
        "tol_scale": 1.0,
        "min_pass_rate": cfg.gates.reward_tests_min_pass_rate,
        "seed": cfg.seed,
    }


def validation_pairs(run_dir: Path, limit: int | None) -> list[tuple]:
    """The campaign's validation references as good outputs: (id, source, reference, reference)."""
    path = run_dir / "inputs" / "validation.parquet"
    if not path.is_file():
        return []
    rows = pq.read_table(path, columns=["source_id", "source", "reference"]).to_pylist()
    pairs = [(r["source_id"], r["source"], r["reference"], r["reference"]) for r in rows if r["reference"]]
    return pairs[:limit] if limit else pairs


def write_pairs(path: Path, pairs: list[tuple]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = list(zip(*pairs)) if pairs else [[], [], [], []]
    table = pa.table([list(c) for c in cols], schema=PAIRS_SCHEMA)
    write_parquet_atomic(path, table)
    return str(path)


def prepare(store, unit: Unit, cfg, run_dir: Path) -> dict:
    """The gate's run: the campaign's reward on its validation references with the campaign's settings."""
    step_dir = run_dir / "steps" / unit.key
    pairs = validation_pairs(run_dir, cfg.eval.max_sources)
    return {
        "pairs_path": write_pairs(step_dir / "pairs.parquet", pairs),
        "settings": campaign_settings(cfg),
        "report_extra": {"campaign": unit.cid},
        "actor": "controller",
    }


def run(ctx) -> dict:
    from ..plugins import load

    run_for_reward = load("restgov.steps", "reward_tests")
    rows = pq.read_table(ctx.task["pairs_path"]).to_pylist()
    pairs = [(r["source_id"], r["source"], r["candidate"], r["reference"]) for r in rows]
    ctx.progress("reward tests", 0, 1)
    report = run_for_reward(ctx.reward, ctx.cfg.reward, pairs, ctx.task["settings"])
    report["config"] |= ctx.task.get("report_extra") or {}
    ctx.progress("reward tests", 1, 1)
    return {"report": report}


def record(store, unit: Unit, task: dict, result: dict) -> str:
    """Store the run (and the reward version it tested); returns the run id."""
    rep = result["report"]
    reward = task["config"]["reward"]
    store.add_reward_model(rep["reward_version"], rep["reward_name"], reward["kind"], reward.get("path"))
    run_id = store.save_reward_test_run(rep)
    result["run_id"] = run_id
    if unit.cid:
        store.add_event(
            unit.cid,
            "reward_tests",
            f"reward {rep['reward_version']}: {rep['verdict']}",
            {"run_id": run_id, "failed": rep["failed"], "settings": task["settings"]},
            actor=task.get("actor", "controller"),
        )
    return run_id


def run_outside_campaign(
    store,
    cfg,
    pairs: list[tuple],
    step_dir: Path,
    settings: dict | None = None,
    reward: dict | None = None,
    cid: str = "",
    actor: str = "controller",
    report_extra: dict | None = None,
    on_event=None,
) -> dict:
    """Run the suite in a worker for a caller that is not a campaign unit (a reward refresh, the dashboard's
    Reward tests page) and store it. `reward` replaces the campaign config's reward table (a candidate
    version); `settings` default to the campaign's own. Returns the report plus its `run_id`.
    """
    from ..config import config_to_dict
    from ..worker import spawn

    cfg_dict = config_to_dict(cfg)
    if reward is not None:
        cfg_dict["reward"] = cfg_dict["reward"] | reward
    unit = Unit(cid, step_dir.name, KIND)
    task = {
        "kind": KIND,
        "step_key": unit.key,
        "config": cfg_dict,
        "grow": None,
        "improve": None,
        "inputs": {},
        "pairs_path": write_pairs(step_dir / "pairs.parquet", pairs),
        "settings": settings or campaign_settings(cfg),
        "report_extra": report_extra or {},
        "actor": actor,
    }
    result = spawn(step_dir, task, on_event=on_event or (lambda ev: None), keep=("pairs.parquet",))
    run_id = record(store, unit, task, result)
    return result["report"] | {"run_id": run_id}
