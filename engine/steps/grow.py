"""Grow: the policy samples K candidates for every training source and the reward scores each one once.

D_g = {(x, y) : y ~ pi(.|x), x in D} plus, with probability `improve.original_mix` per source, the original
pair (x, reference), scored like any candidate. The worker writes one Parquet shard per block of
`grow.shard_sources` sources (whole sources per shard), which the controller ingests while the Grow runs;
a restarted worker skips the shards already written.
"""

from __future__ import annotations

import math
import random
import time
from pathlib import Path

import pyarrow as pa

from ..worker import unit_seed, write_parquet_atomic
from . import Unit, checkpoint_path, policy_after

KIND = "grow"


def prepare(store, unit: Unit, cfg, run_dir: Path) -> dict:
    cid = unit.cid
    pol = policy_after(store, cid, unit.grow - 1)
    return {
        "policy": pol,
        "policy_path": checkpoint_path(store, cid, pol),
        "base_path": checkpoint_path(store, cid, "base"),  # each sample's log-prob under BC: the KL
    }


def run(ctx) -> dict:
    from ..grow import sample
    from ..models import load_policy

    cfg, task = ctx.cfg, ctx.task
    g = task["grow"]
    train = ctx.split("train")
    rng = random.Random(unit_seed(cfg.seed, "mix", g))
    mixed = [rng.random() < cfg.improve.original_mix for _ in train]
    per = cfg.grow.shard_sources
    n_shards = math.ceil(len(train) / per)
    k = cfg.grow.samples_per_source
    policy = base = None
    done_sources = 0
    t0 = time.perf_counter()
    for j in range(n_shards):
        block = train[j * per : (j + 1) * per]
        path = ctx.dir / "shards" / f"samples-{j:05d}.parquet"
        if path.exists():  # completed by an earlier attempt (its audits and refs shards were written first)
            done_sources += len(block)
            continue
        if policy is None:
            policy = load_policy(task["policy_path"], cfg.policy.prompt_template)
            if task.get("base_path") and task["base_path"] != task["policy_path"]:
                base = load_policy(task["base_path"], cfg.policy.prompt_template)

        def on_batch(n: int) -> None:
            nonlocal done_sources
            done_sources += n
            ctx.progress(
                f"grow {g}",
                done_sources,
                len(train),
                samples_per_s=done_sources * k / max(time.perf_counter() - t0, 1e-9),
            )

        cands = sample(
            policy,
            [e.source for e in block],
            k,
            cfg.grow.temperature,
            cfg.grow.top_p,
            cfg.grow.max_new_tokens,
            cfg.grow.batch_size,
            seed=unit_seed(cfg.seed, "grow", g, j),
            on_batch=on_batch,
        )
        rows = [
            dict(
                source_id=block[c.source_index].id,
                sample_idx=c.sample_index,
                text=c.text,
                n_tokens=c.n_tokens,
                sum_logprob=c.sum_logprob,
                policy=task["policy"],
            )
            for c in cands
        ]
        rows += [
            dict(
                source_id=e.id,
                sample_idx=-1,
                text=e.reference,
                n_tokens=None,
                sum_logprob=None,
                policy="reference",
            )
            for e, m in zip(block, mixed[j * per : (j + 1) * per])
            if m
        ]
        by_id = {e.id: e for e in block}
        sources = [by_id[r["source_id"]].source for r in rows]
        texts = [r["text"] for r in rows]
        refs = [by_id[r["source_id"]].reference for r in rows]
        ids = [f"{r['source_id']}#{r['sample_idx']}" for r in rows]
        rewards = ctx.score(sources, texts, refs, ids)
        for r, v in zip(rows, rewards):
            r["grow"], r["reward"], r["reward_version"] = g, v, ctx.reward.version
        if base is not None:  # log p(y) under the BC policy: the drift gate's KL estimate
            from ..drift import score_logprobs

            gen = [i for i, r in enumerate(rows) if r["sample_idx"] >= 0]
            lp = score_logprobs(base, [sources[i] for i in gen], [texts[i] for i in gen], cfg.grow.batch_size)
            for i, v in zip(gen, lp):
                rows[i]["base_logprob"] = float(v)
        shards = ctx.dir / "shards"
        audits = ctx.audit_scores(sources, texts, refs, ids)
        if audits:
            arows = [
                dict(grow=g, source_id=r["source_id"], sample_idx=r["sample_idx"], metric=m, value=v)
                for m, vals in audits.items()
                for r, v in zip(rows, vals)
            ]
            write_parquet_atomic(
                shards / f"audits-{j:05d}.parquet", pa.Table.from_pylist(arows, AUDIT_SCHEMA)
            )
        with_ref = [e for e in block if e.reference]
        ref_rewards = ctx.score(
            [e.source for e in with_ref],
            [e.reference for e in with_ref],
            [e.reference for e in with_ref],
            [f"{e.id}#reference" for e in with_ref],
        )
        rrows = [
            dict(grow=g, source_id=e.id, reward=v, reward_version=ctx.reward.version)
            for e, v in zip(with_ref, ref_rewards)
        ]
        write_parquet_atomic(shards / f"refs-{j:05d}.parquet", pa.Table.from_pylist(rrows, REF_SCHEMA))
        write_parquet_atomic(path, pa.Table.from_pylist(rows, schema=SAMPLE_SCHEMA))
        ctx.events.emit("shard", path=str(path))
    return {
        "grow": g,
        "shards": n_shards,
        "seconds": time.perf_counter() - t0,
        "reward_name": ctx.reward.name,
        "reward_version": ctx.reward.version,
    }


SAMPLE_SCHEMA = pa.schema(
    [
        ("grow", pa.int32()),
        ("source_id", pa.string()),
        ("sample_idx", pa.int32()),
        ("text", pa.string()),
        ("n_tokens", pa.int32()),
        ("sum_logprob", pa.float64()),
        ("policy", pa.string()),
        ("reward", pa.float64()),
        ("reward_version", pa.string()),
        ("base_logprob", pa.float64()),
    ]
)
AUDIT_SCHEMA = pa.schema(
    [
        ("grow", pa.int32()),
        ("source_id", pa.string()),
        ("sample_idx", pa.int32()),
        ("metric", pa.string()),
        ("value", pa.float64()),
    ]
)
REF_SCHEMA = pa.schema(
    [
        ("grow", pa.int32()),
        ("source_id", pa.string()),
        ("reward", pa.float64()),
        ("reward_version", pa.string()),
    ]
)


def record(store, unit: Unit, task: dict, result: dict) -> None:
    cid = unit.cid
    stats = store.grow_stats(cid, unit.grow)
    result |= {"n_samples": stats["n"], "mean_reward": stats["mean"]}
    store.add_event(
        cid, "grow", f"grow {unit.grow}: {stats['n']} scored pairs, mean reward {stats['mean']:.4f}", stats
    )
