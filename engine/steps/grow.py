"""Grow: the policy samples K candidates for every training source and the reward scores each one once.

D_g = {(x, y) : y ~ pi(.|x), x in D} plus, with probability `improve.original_mix` per source, the original
pair (x, reference), scored like any candidate. The worker writes one Parquet shard per block of
`grow.shard_sources` sources (whole sources per shard), which the controller ingests while the Grow runs;
a restarted worker skips the shards already written.

Where shards run: in the worker process, one after the other, or with `[cluster] address` as Ray tasks, one
per shard (engine/cluster.py); on `[grow] backend = "vllm"` the policy samples through vLLM. Each shard's
start and end are events (`shard_start`, `shard`) naming the node, host and process that ran it.
"""

from __future__ import annotations

import math
import os
import random
import socket
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
    """Every shard not on disk yet, here or (with `[cluster] address`) as Ray tasks; shard j is seeded by
    (seed, g, j) alone, so where and in which order shards run does not change what they hold."""
    from ..vllm_backend import resolve_backend

    cfg, task = ctx.cfg, ctx.task
    g = task["grow"]
    train = ctx.split("train")
    rng = random.Random(unit_seed(cfg.seed, "mix", g))
    mixed = [rng.random() < cfg.improve.original_mix for _ in train]
    per = cfg.grow.shard_sources
    n_shards = math.ceil(len(train) / per)
    backend = resolve_backend(cfg.grow.backend)
    shards = ctx.dir / "shards"
    todo = [j for j in range(n_shards) if not (shards / shard_name(j)).exists()]
    reused = n_shards - len(todo)  # completed by an earlier attempt (audits and refs shards written first)
    ctx.events.emit("grow_plan", backend=backend, cluster=cfg.cluster.address, shards=n_shards, todo=todo)
    blocks = {j: (train[j * per : (j + 1) * per], mixed[j * per : (j + 1) * per]) for j in todo}
    done = len(train) - sum(len(b) for b, _ in blocks.values())  # sources of the shards on disk
    t0 = time.perf_counter()
    if cfg.cluster.address:
        from ..cluster import run_shards

        placed = run_shards(ctx, blocks, backend, done, len(train))
    else:
        placed = _run_here(ctx, blocks, backend, done, len(train))
    nodes: dict[str, int] = {}
    for p in placed:
        nodes[p["host"]] = nodes.get(p["host"], 0) + 1
    return {
        "grow": g,
        "shards": n_shards,
        "shards_reused": reused,
        "backend": backend,
        "cluster": cfg.cluster.address,
        "nodes": nodes,  # host -> shards this attempt ran there
        "seconds": time.perf_counter() - t0,
        "reward_name": ctx.reward.name,
        "reward_version": ctx.reward.version,
    }


def shard_name(j: int) -> str:
    """File name of shard j's samples: written last, so its presence means the shard is complete."""
    return f"samples-{j:05d}.parquet"


def shard_files(j: int) -> list[str]:
    """Every file of shard j, in the order they are written (the samples file last)."""
    return [f"audits-{j:05d}.parquet", f"refs-{j:05d}.parquet", shard_name(j)]


def _run_here(ctx, blocks: dict, backend: str, done_sources: int, n_train: int) -> list[dict]:
    """The shards in this worker process, one after the other; returns where each one ran."""
    cfg, g = ctx.cfg, ctx.task["grow"]
    k = cfg.grow.samples_per_source
    t0 = time.perf_counter()
    models = ShardModels(ctx.task, cfg, backend)
    host, placed = socket.gethostname(), []

    def on_batch(n: int) -> None:
        nonlocal done_sources
        done_sources += n
        ctx.progress(
            f"grow {g}",
            done_sources,
            n_train,
            samples_per_s=done_sources * k / max(time.perf_counter() - t0, 1e-9),
        )

    for j, (block, mixed) in blocks.items():
        info = {"shard": j, "node": "local", "host": host, "pid": os.getpid()}
        ctx.events.emit("shard_start", **info)
        t = time.perf_counter()
        grow_shard(ctx, models, g, j, block, mixed, ctx.dir / "shards", on_batch)
        info["seconds"] = time.perf_counter() - t
        ctx.events.emit("shard", path=str(ctx.dir / "shards" / shard_name(j)), **info)
        placed.append(info)
    return placed


class ShardModels:
    """The policy Grow samples from and the BC policy its log-probs are scored under, loaded on first use
    (a Grow whose shards are all on disk loads nothing)."""

    def __init__(self, task: dict, cfg, backend: str):
        self.task, self.cfg, self.backend = task, cfg, backend
        self._policy = self._base = None
        self._base_loaded = False

    @property
    def policy(self):
        if self._policy is None:
            from ..vllm_backend import load_sampling_policy

            p = self.cfg.policy
            self._policy = load_sampling_policy(
                self.task["policy_path"], p.prompt_template, self.backend, self.cfg.seed, p.chat_template
            )
        return self._policy

    @property
    def base(self):
        """None when Grow samples from the BC policy itself (its log-probs are then the KL's zero)."""
        if not self._base_loaded:
            path = self.task.get("base_path")
            if path and path != self.task["policy_path"]:
                from ..models import load_policy

                p = self.cfg.policy
                self._base = load_policy(path, p.prompt_template, chat_template=p.chat_template)
            self._base_loaded = True
        return self._base


def grow_shard(env, models: ShardModels, g: int, j: int, block, mixed, out_dir: Path, on_batch=None) -> None:
    """Sample, score and audit shard j (`block`: its sources; `mixed`: whether each one's original pair
    joins D_g) and write its audits, refs and samples files atomically into `out_dir`, samples last.

    `env` scores: the worker's Ctx, or on a Ray node engine.cluster's ShardEnv (same methods)."""
    from ..vllm_backend import sample_any

    cfg, task = env.cfg, env.task
    k = cfg.grow.samples_per_source
    cands = sample_any(
        models.policy,
        [e.source for e in block],
        k,
        temperature=cfg.grow.temperature,
        top_p=cfg.grow.top_p,
        max_new_tokens=cfg.grow.max_new_tokens,
        batch_size=cfg.grow.batch_size,
        batch_tokens=cfg.grow.batch_tokens,
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
        for e, m in zip(block, mixed)
        if m
    ]
    by_id = {e.id: e for e in block}
    sources = [by_id[r["source_id"]].source for r in rows]
    texts = [r["text"] for r in rows]
    refs = [by_id[r["source_id"]].reference for r in rows]
    ids = [f"{r['source_id']}#{r['sample_idx']}" for r in rows]
    rewards = env.score(sources, texts, refs, ids)
    for r, v in zip(rows, rewards):
        r["grow"], r["reward"], r["reward_version"] = g, v, env.reward.version
    if models.base is not None:  # log p(y) under the BC policy: the drift gate's KL estimate
        from ..drift import score_logprobs

        gen = [i for i, r in enumerate(rows) if r["sample_idx"] >= 0]
        lp = score_logprobs(
            models.base, [sources[i] for i in gen], [texts[i] for i in gen], cfg.grow.batch_size
        )
        for i, v in zip(gen, lp):
            rows[i]["base_logprob"] = float(v)
    audits = env.audit_scores(sources, texts, refs, ids)
    if audits:
        arows = [
            dict(grow=g, source_id=r["source_id"], sample_idx=r["sample_idx"], metric=m, value=v)
            for m, vals in audits.items()
            for r, v in zip(rows, vals)
        ]
        write_parquet_atomic(out_dir / f"audits-{j:05d}.parquet", pa.Table.from_pylist(arows, AUDIT_SCHEMA))
    with_ref = [e for e in block if e.reference]
    ref_rewards = env.score(
        [e.source for e in with_ref],
        [e.reference for e in with_ref],
        [e.reference for e in with_ref],
        [f"{e.id}#reference" for e in with_ref],
    )
    rrows = [
        dict(grow=g, source_id=e.id, reward=v, reward_version=env.reward.version)
        for e, v in zip(with_ref, ref_rewards)
    ]
    write_parquet_atomic(out_dir / f"refs-{j:05d}.parquet", pa.Table.from_pylist(rrows, REF_SCHEMA))
    write_parquet_atomic(out_dir / shard_name(j), pa.Table.from_pylist(rows, schema=SAMPLE_SCHEMA))


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
