"""Grow shards as Ray tasks (`[cluster] address`): one task per shard, the worker process as Ray's driver.

Each task sets its torch threads (the worker's), loads the policy, BC policy and reward itself (once per Ray
worker process), runs engine.steps.grow.grow_shard and writes the shard's files atomically into the
shard folder: `cluster.shared_dir`/<campaign>/<step>/ when set (a folder every node sees), else the step's
own shards/ folder. The driver copies each finished shard from a shared folder into the step's shards/
(samples file last), where the controller ingests it exactly as a local shard.

Failures: Ray reruns a task whose worker process or node died up to `cluster.max_retries` times; a shard
is keyed by its number and written under a temporary name, so a rerun or a restarted Grow never duplicates
samples, and a task whose shard is complete in the shared folder returns at once. A task that raises (a
bad model path, a reward error) is not retried: the Grow fails with its message, and a resumed Grow
reruns only the shards missing.

Placement is reported, not guessed: each task writes `<shard>.start.json` (node id, host, pid, attempt
start) before it computes, which the driver turns into `shard_start` events, and returns the same with
its duration, which becomes the `shard` event. Ray is imported here only, and only when address is set.

Nodes must be able to import restgov and read the checkpoint, data-free task and reward paths the task
names (the campaign's run folder on a shared filesystem for 'auto' and 'ray://'; on 'local' it is).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path

from .worker import Scorer, write_atomic


def shard_dir(ctx) -> Path:
    """Where tasks write shard files: a per-step folder under cluster.shared_dir, else the step's shards/."""
    shared = ctx.cfg.cluster.shared_dir
    if not shared:
        return ctx.dir / "shards"
    out = Path(shared) / ctx.dir.parent.parent.name / ctx.dir.name
    out.mkdir(parents=True, exist_ok=True)
    return out


def connect(address: str) -> None:
    """Join (or for 'local', start) the Ray cluster; restgov's root goes on the task processes' path."""
    import ray

    if ray.is_initialized():
        return
    root = str(Path(__file__).resolve().parent.parent)
    env = {"PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    env |= {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    kw = dict(runtime_env={"env_vars": env}, log_to_driver=False, logging_level="WARNING")
    if address == "local":
        ray.init(include_dashboard=False, **kw)
    else:
        ray.init(address=address, **kw)


def run_shards(ctx, blocks: dict, backend: str, done_sources: int, total: int) -> list[dict]:
    """Run `blocks` ({shard: (sources, mixed flags)}) as Ray tasks; returns where each shard ran."""
    import ray

    from .steps.grow import shard_files, shard_name

    cfg, g = ctx.cfg, ctx.task["grow"]
    c = cfg.cluster
    connect(c.address)
    out = shard_dir(ctx)
    local = ctx.dir / "shards"
    k = cfg.grow.samples_per_source
    remote = ray.remote(num_cpus=c.num_cpus, num_gpus=c.num_gpus, max_retries=c.max_retries)(shard_task)
    job = {
        "config": ctx.task["config"],
        "task": {key: ctx.task.get(key) for key in ("grow", "policy", "policy_path", "base_path")},
        "threads": task_threads(ctx.threads, c.num_cpus),
        "backend": backend,
        "out": str(out),
    }
    pending = {}
    placed: list[dict] = []
    t0 = time.perf_counter()
    for j, (block, mixed) in blocks.items():
        (out / f"shard-{j:05d}.start.json").unlink(missing_ok=True)  # an earlier attempt's
        rows = [(e.id, e.source, e.reference) for e in block]
        pending[remote.remote(job, j, rows, list(mixed))] = j
    ctx.events.emit("cluster", address=c.address, nodes=_nodes(ray), shards=sorted(blocks), out=str(out))
    seen: dict[int, float] = {}
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
            _announce_starts(ctx, out, set(pending.values()), seen)
            for ref in ready:
                j = pending.pop(ref)
                info = ray.get(ref)  # a task that failed for good raises here, naming its error
                if out != local:
                    for name in shard_files(j):
                        if (out / name).exists():
                            _copy_atomic(out / name, local / name)
                info["seconds"] = round(info["seconds"], 3)
                ctx.events.emit("shard", path=str(local / shard_name(j)), **info)
                placed.append(info)
                done_sources += len(blocks[j][0])
                ctx.progress(
                    f"grow {g}",
                    done_sources,
                    total,
                    samples_per_s=done_sources * k / max(time.perf_counter() - t0, 1e-9),
                )
    finally:
        for ref in pending:  # the worker is failing or being stopped: no orphan tasks keep running
            ray.cancel(ref, force=True)
    return placed


def task_threads(worker_threads: int, num_cpus: float) -> int:
    """torch threads of a shard task: the worker's count, capped by the CPUs the task asked Ray for (a
    task with more threads than its CPUs would slow the tasks Ray packs beside it)."""
    return worker_threads if num_cpus < 1 else max(1, min(worker_threads, int(num_cpus)))


def _nodes(ray) -> list[dict]:
    return [
        {"node": n["NodeID"], "host": n.get("NodeManagerHostname"), "cpus": n["Resources"].get("CPU")}
        for n in ray.nodes()
        if n.get("Alive")
    ]


def _announce_starts(ctx, out: Path, running: set[int], seen: dict[int, float]) -> None:
    """A `shard_start` event for each task attempt that has started since the last look."""
    for j in sorted(running):
        p = out / f"shard-{j:05d}.start.json"
        try:
            info = json.loads(p.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            continue
        if seen.get(j) != info["t"]:
            seen[j] = info["t"]
            ctx.events.emit("shard_start", **{k: v for k, v in info.items() if k != "t"})


def _copy_atomic(src: Path, dst: Path) -> None:
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


# ---------------------------------------------------------------- on a Ray node

_MODELS: dict = {}  # per Ray worker process: (policy path, base path, backend) -> ShardModels


class ShardEnv(Scorer):
    """What grow_shard needs from the worker's Ctx (its config, task and scorers), rebuilt on a Ray node."""

    def __init__(self, cfg_dict: dict, task: dict):
        from .config import config_from_dict

        super().__init__(config_from_dict(cfg_dict))
        self.task = task


def shard_task(job: dict, j: int, rows: list[tuple], mixed: list[bool]) -> dict:
    """One Grow shard on a Ray node: write its files into job["out"], return where and how long it ran."""
    import ray
    import torch

    from .data import Example
    from .steps.grow import ShardModels, grow_shard, shard_name

    out = Path(job["out"])
    info = {
        "shard": j,
        "node": ray.get_runtime_context().get_node_id(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }
    t0 = time.perf_counter()
    if (out / shard_name(j)).exists():  # an earlier attempt finished it before its result got back
        return info | {"seconds": 0.0, "reused": True}
    write_atomic(out / f"shard-{j:05d}.start.json", json.dumps(info | {"t": time.time()}))
    torch.set_num_threads(job["threads"])
    key = (
        job["task"]["policy_path"],
        job["task"].get("base_path"),
        job["backend"],
        json.dumps(job["config"]),
    )
    if key not in _MODELS:
        _MODELS.clear()  # one Grow's models at a time in a worker process
        env = ShardEnv(job["config"], job["task"])
        _MODELS[key] = (ShardModels(job["task"], env.cfg, job["backend"]), env)
    models, env = _MODELS[key]
    block = [Example(i, s, r or "") for i, s, r in rows]
    grow_shard(env, models, job["task"]["grow"], j, block, mixed, out)
    return info | {"seconds": time.perf_counter() - t0}
