"""Training curves after a rerun: a unit's curve is replaced, never doubled.

A kill at the wrong moment can leave an Improve attempt's curve in the store and the unit still to run; the
rerun's curve must replace it, and a validation check at a training step must share that step's row, so the
curves table holds one row per (step_key, step) and charts draw one curve per checkpoint. The curves are
written by the worker's own training loop (`Ctx.train` on a tiny scratch policy) and ingested by the
controller's own `_ingest`, into a real DuckDB file.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import write_tiny_campaign

from engine.campaign import Controller
from engine.config import ScratchModel, config_to_dict, load_config
from engine.data import load_examples
from engine.improve import TrainExample
from engine.models import Policy, build_scratch_policy
from engine.steps import Unit
from engine.store import open_store
from engine.worker import Ctx

pytestmark = pytest.mark.usefixtures("one_torch_thread")

KEY = "g1-i1"


def _attempt(step_dir: Path, cfg: dict, val, lr: float) -> Path:
    """One attempt of the unit: a fresh step folder (a rerun's worker starts from one), a tiny policy trained
    for 6 steps with validation every 3; returns the curve shard it wrote."""
    shutil.rmtree(step_dir, ignore_errors=True)
    step_dir.mkdir(parents=True)
    (step_dir / "task.json").write_text(json.dumps({"kind": "improve", "step_key": KEY, "config": cfg}))
    ctx = Ctx(step_dir)
    texts = [f"{e.source} => {e.reference}" for e in val]
    model, tok = build_scratch_policy(
        ScratchModel(n_layer=1, n_head=2, n_embd=32, vocab_size=300, max_length=64), texts, seed=0
    )
    policy = Policy(model, tok, "cpu", "{source} => ")
    train = [TrainExample(e.source, e.reference) for e in val]
    ctx.train(policy, train, lr, 6.0, 4, 6, ctx.evaluator(policy, val), "improve")
    (shard,) = (step_dir / "shards").glob("curve-*.parquet")
    return shard


def test_a_rerun_replaces_the_units_curve(tmp_path: Path):
    cfg_path = write_tiny_campaign(tmp_path / "arith", grows=1)
    cfg = load_config(cfg_path)
    cfg.improve.eval_every = 3
    val = load_examples(cfg_path.parent / "validation.jsonl")[:4]
    store = open_store(tmp_path / "restgov.duckdb")
    store.create_campaign("c1", "c1", "rest", config_to_dict(cfg), str(tmp_path))
    ctl, unit = Controller(store), Unit("c1", KEY, "improve", 1, 1)
    step_dir = tmp_path / "steps" / KEY

    first = _attempt(step_dir, config_to_dict(cfg), val, lr=1e-3)
    ctl._ingest(unit, step_dir)  # the killed attempt's curve landed
    assert len(store.curves("c1", KEY)) == 7  # steps 0..6; the checks at 3 and 6 share their step's row
    time.sleep(0.01)
    second = _attempt(step_dir, config_to_dict(cfg), val, lr=3e-3)  # the rerun, with another outcome
    assert second.name != first.name  # a new shard, so it is not skipped as already ingested
    ctl._ingest(unit, step_dir)
    ctl._ingest(unit, step_dir)  # ingesting again changes nothing

    rows = store._rows("SELECT step, loss, lr, val_reward, shard_id FROM curves ORDER BY step")
    assert [r["step"] for r in rows] == list(range(7))  # one row per step, none left from the first attempt
    assert {r["shard_id"] for r in rows} == {f"c1/{KEY}/{second.name}"}
    raw = pq.read_table(second).to_pylist()
    for r in rows:
        at = [p for p in raw if p["step"] == r["step"]]
        assert r["loss"] == next((p["loss"] for p in at if p["loss"] is not None), None)
        assert r["val_reward"] == next((p["val_reward"] for p in at if p["val_reward"] is not None), None)
    assert [r["step"] for r in rows if r["val_reward"] is not None] == [0, 3, 6]
    assert [r["step"] for r in rows if r["loss"] is not None] == [1, 2, 3, 4, 5, 6]
    assert store.curves("c1") == [{"campaign_id": "c1", "step_key": KEY} | r for r in rows]
    store.close()


def test_reader_shows_only_the_latest_attempt_of_an_older_store(tmp_path: Path):
    """A store filled before curves were replaced on ingest holds both attempts' rows: `curves()` shows only
    the rows of the unit's latest curve shard, one per step."""
    store = open_store(tmp_path / "restgov.duckdb")
    cur = store.cursor()
    for shard, t, loss in (("c1/g1-i1/curve.parquet", 1, 2.0), ("c1/g1-i1/curve-2.parquet", 2, 1.0)):
        cur.execute(
            "INSERT INTO shards VALUES (?, 'c1', 'curves', 3, make_timestamp(2025, 1, 1, 0, 0, ?))",
            [shard, t],
        )
        for step in (1, 2):
            cur.execute("INSERT INTO curves VALUES ('c1', 'g1-i1', ?, ?, 1e-3, NULL, ?)", [step, loss, shard])
        cur.execute("INSERT INTO curves VALUES ('c1', 'g1-i1', 2, NULL, NULL, 0.5, ?)", [shard])
    got = [(r["step"], r["loss"], r["val_reward"]) for r in store.curves("c1")]
    assert got == [(1, 1.0, None), (2, 1.0, 0.5)]
    assert [r["step"] for r in store.curves("c1", "g1-i1")] == [1, 2] and store.curves("c1", "g9-i9") == []
    store.close()
