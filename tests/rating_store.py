"""A store for the rating pages' AppTests, separate from the shared session stores: tasks made here are never
served to the annotators of other tests (an annotator is served open tasks of every campaign in a store).

One campaign created by the dashboard's controller (never run) with: two Grow steps of generated samples
(Grow 1 sampled by `base`, Grow 2 by `g1-i1`) plus the original pairs of D, checkpoints base, g1-i1 and g2-i1
(the last sampled nothing: it was trained on Grow 2), and greedy validation outputs of all three.
"""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from apptest_helpers import _service
from conftest import write_tiny_campaign

from engine.config import load_config


def rating_campaign(root: Path) -> tuple[Path, str]:
    from engine.steps.grow import SAMPLE_SCHEMA
    from engine.worker import OUTPUT_SCHEMA

    db = root / "db" / "restgov.duckdb"
    svc = _service(db)
    cid = svc.create(load_config(write_tiny_campaign(root / "arith", grows=2, name="rated")), "olga")
    store = svc.store

    def ids(split: str, n: int) -> list[str]:
        sql = "SELECT source_id FROM prompts WHERE campaign_id = ? AND split = ? ORDER BY 1 LIMIT ?"
        return [r[0] for r in store.cursor().execute(sql, [cid, split, n]).fetchall()]

    rng = random.Random(1)
    train = ids("train", 12)
    for g, policy in ((1, "base"), (2, "g1-i1")):
        rows = [
            dict(
                grow=g,
                source_id=sid,
                sample_idx=k,
                text=f"{policy} answer {k} to {sid}",
                n_tokens=3 + k,
                sum_logprob=-1.0,
                policy=policy,
                reward=rng.random(),
                reward_version="v-rated",
            )
            for sid in train
            for k in (-1, 0, 1)
        ]
        for r in rows:
            if r["sample_idx"] < 0:
                r.update(policy="reference", text=f"reference of {r['source_id']}", reward=1.0)
        pq.write_table(pa.Table.from_pylist(rows, schema=SAMPLE_SCHEMA), root / f"g{g}.parquet")
        store.ingest_shard(cid, "samples", f"rated-g{g}", root / f"g{g}.parquet")
    val = ids("validation", 6)
    for policy, (grow, improve) in (("base", (None, None)), ("g1-i1", (1, 1)), ("g2-i1", (2, 1))):
        store.add_checkpoint(cid, policy, str(root / policy), None, grow, improve)
        out = [
            dict(
                policy=policy,
                split="validation",
                source_id=sid,
                text=f"{policy} on {sid}",
                n_tokens=3,
                reward=rng.random(),
            )
            for sid in val
        ]
        path = root / f"out-{policy}.parquet"
        pq.write_table(pa.Table.from_pylist(out, schema=OUTPUT_SCHEMA), path)
        store.ingest_shard(cid, "outputs", f"rated-out-{policy}", path)
    return db, cid
