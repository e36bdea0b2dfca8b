"""Worker: runs one campaign unit in a child process that never opens the database.

Contract: `python -m engine.worker STEP_DIR` reads STEP_DIR/task.json, appends progress to
STEP_DIR/events.jsonl, writes immutable Parquet shards into STEP_DIR/shards/ and finally
STEP_DIR/result.json; every file is written under a temporary name and renamed into place when complete.
A restarted Grow skips the shards already on disk, so a killed worker loses and duplicates nothing.
What a unit computes is its step module's `run(ctx)` (engine/steps/); `spawn` is the controller's side.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .config import CampaignConfig, config_from_dict
from .data import Example


def unit_seed(seed: int, *parts: object) -> int:
    """A seed per unit of work, so a resumed unit draws exactly what the first attempt would have drawn."""
    h = hashlib.sha256(repr((seed, *parts)).encode()).digest()
    return int.from_bytes(h[:4], "little") & 0x7FFFFFFF


def write_atomic(path: Path, data: bytes | str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)


def write_parquet_atomic(path: Path, table: pa.Table) -> None:
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def read_examples(path: str | Path) -> list[Example]:
    t = pq.read_table(path).to_pylist()
    return [Example(r["source_id"], r["source"], r["reference"] or "") for r in t]


class Events:
    """Append-only JSONL progress stream, one flushed line per event."""

    def __init__(self, path: Path):
        self._f = open(path, "a", buffering=1, encoding="utf-8")

    def emit(self, kind: str, **fields) -> None:
        self._f.write(json.dumps({"t": time.time(), "kind": kind, **fields}) + "\n")


class Scorer:
    """The campaign's reward and audit metrics, each loaded on first use, scoring candidates: what a Grow
    shard needs wherever it runs (the worker's Ctx, a Ray task's engine.cluster.ShardEnv)."""

    def __init__(self, cfg: CampaignConfig):
        self.cfg = cfg
        self._reward = None
        self._audits: dict | None = None

    @property
    def reward(self):
        if self._reward is None:
            from .rewards import load_reward

            self._reward = load_reward(self.cfg.reward)
        return self._reward

    def score(self, sources, texts, references, ids) -> list[float]:
        """The campaign reward of each candidate (NaN or inf refused, naming the candidate)."""
        from .rewards import checked_scores

        return checked_scores(self.reward, sources, texts, references, ids=ids)

    @property
    def audits(self) -> dict:
        """The campaign's audit metrics, loaded once: {name: reward provider}."""
        if self._audits is None:
            from .rewards import load_reward

            self._audits = {a.name: load_reward(a.reward_config()) for a in self.cfg.audit}
        return self._audits

    def audit_scores(self, sources, texts, references, ids) -> dict[str, list[float]]:
        """Every audit metric of each candidate: {metric name: values}; empty without audit metrics."""
        from .rewards import checked_scores

        return {
            name: checked_scores(m, sources, texts, references, ids=[f"{i} ({name})" for i in ids])
            for name, m in self.audits.items()
        }


class Ctx(Scorer):
    def __init__(self, step_dir: Path):
        self.dir = step_dir
        self.task = json.loads((step_dir / "task.json").read_text())
        super().__init__(config_from_dict(self.task["config"]))
        self.events = Events(step_dir / "events.jsonl")
        (step_dir / "shards").mkdir(exist_ok=True)

    @property
    def threads(self) -> int:
        """torch threads of this worker: the config's, else 1 on <= 2 cores, else half the cores."""
        n = self.cfg.threads
        if not n:
            cores = os.cpu_count() or 1
            n = 1 if cores <= 2 else cores // 2
        return n

    def evaluate_outputs(self, policy, name: str, split: str, examples: list[Example]) -> dict:
        """Greedy outputs of `policy` on `examples`, scored by the reward and the audit metrics, written as
        an outputs shard (the human gate rates them; the audit gate compares them across checkpoints).
        Returns the summary: mean reward, mean tokens, audit means."""
        from .evaluate import mean_reward

        cfg = self.cfg
        res = mean_reward(policy, self.reward, examples, cfg.grow.max_new_tokens, cfg.eval.batch_size)
        srcs, refs = [e.source for e in examples], [e.reference for e in examples]
        audits = self.audit_scores(srcs, res.outputs, refs, [e.id for e in examples])
        rows = [
            dict(policy=name, split=split, source_id=e.id, text=t, n_tokens=n, reward=r)
            for e, t, n, r in zip(examples, res.outputs, res.n_tokens, res.rewards)
        ]
        write_parquet_atomic(
            self.dir / "shards" / f"outputs-{split}-{name}.parquet", pa.Table.from_pylist(rows, OUTPUT_SCHEMA)
        )
        return {
            "mean_reward": res.mean_reward,
            "mean_tokens": sum(res.n_tokens) / len(res.n_tokens) if res.n_tokens else None,
            "audit": {m: sum(v) / len(v) for m, v in audits.items() if v},
        }

    def split(self, name: str, capped: bool = False) -> list[Example]:
        path = self.task["inputs"].get(name)
        exs = read_examples(path) if path else []
        cap = self.cfg.eval.max_sources
        return exs[:cap] if capped and cap else exs

    def progress(self, desc: str, done: int, total: int, **extra) -> None:
        self.events.emit("progress", desc=desc, done=done, total=total, **extra)

    def evaluator(self, policy, val: list[Example]) -> Callable[[], float]:
        """Mean reward of `policy`'s greedy answers on `val` (the held-out signal of early stopping)."""
        from .evaluate import mean_reward

        cfg = self.cfg

        def evaluate() -> float:
            return mean_reward(
                policy, self.reward, val, cfg.grow.max_new_tokens, cfg.eval.batch_size
            ).mean_reward

        return evaluate

    def train(
        self, policy, examples, lr: float, epochs: float, batch_size: int, max_steps, evaluate, desc: str
    ):
        """Fine-tune `policy` in place with progress events; its training curve becomes a curves shard."""
        from .improve import fine_tune

        imp = self.cfg.improve
        curve: list[dict] = []
        key = self.task["step_key"]

        def on_step(p: dict) -> None:
            curve.append({"step_key": key} | {k: p[k] for k in ("step", "loss", "lr", "val_reward")})
            if p["val_reward"] is not None or p["step"] % 5 == 0 or p["step"] == p["total"]:
                self.progress(desc, p["step"], p["total"], loss=p["loss"], val_reward=p["val_reward"])

        res = fine_tune(
            policy,
            examples,
            lr=lr,
            epochs=epochs,
            batch_size=batch_size,
            seed=unit_seed(self.cfg.seed, key),
            max_steps=max_steps,
            evaluate=evaluate,
            eval_every=imp.eval_every,
            patience=imp.patience,
            on_step=on_step,
            grad_accum=imp.grad_accum,
            gradient_checkpointing=imp.gradient_checkpointing,
        )
        # Named per attempt: a rerun's curve is a new shard, which replaces an earlier attempt's on ingest.
        write_parquet_atomic(
            self.dir / "shards" / f"curve-{time.time_ns()}.parquet",
            pa.Table.from_pylist(curve, schema=CURVE_SCHEMA),
        )
        return res


OUTPUT_SCHEMA = pa.schema(
    [
        ("policy", pa.string()),
        ("split", pa.string()),
        ("source_id", pa.string()),
        ("text", pa.string()),
        ("n_tokens", pa.int32()),
        ("reward", pa.float64()),
    ]
)
CURVE_SCHEMA = pa.schema(
    [
        ("step_key", pa.string()),
        ("step", pa.int32()),
        ("loss", pa.float64()),
        ("lr", pa.float64()),
        ("val_reward", pa.float64()),
    ]
)


def _die_with_parent() -> None:
    """A worker whose controller was killed stops too (it would otherwise keep a GPU busy)."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(3)

    threading.Thread(target=watch, daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    step_dir = Path(argv[0])
    _die_with_parent()
    ctx = Ctx(step_dir)
    import torch

    torch.set_num_threads(ctx.threads)
    kind = ctx.task["kind"]
    ctx.events.emit("start", step=ctx.task["step_key"], pid=os.getpid())
    t0 = time.perf_counter()
    try:
        from .steps import module

        result = module(kind).run(ctx)
    except Exception as e:  # the controller reads the message from events.jsonl
        import traceback

        ctx.events.emit("error", message=f"{type(e).__name__}: {e}", traceback=traceback.format_exc())
        return 1
    result["seconds"] = time.perf_counter() - t0
    result["threads"] = ctx.threads
    write_atomic(step_dir / "result.json", json.dumps(result, indent=2))
    ctx.events.emit("done", seconds=result["seconds"])
    return 0


# ---------------------------------------------------------------- the controller's side


class WorkerFailed(RuntimeError):
    """The worker exited without a result; the message is its last error event (or its log's tail)."""


class WorkerStopped(RuntimeError):
    """`should_stop` asked for the worker to end; it was sent SIGTERM and has exited."""


def spawn(
    step_dir: Path,
    task: dict,
    on_event: Callable[[dict], None] = lambda ev: None,
    on_poll: Callable[[], None] = lambda: None,
    should_stop: Callable[[], bool] = lambda: False,
    keep: tuple[str, ...] = (),
    poll_s: float = 0.25,
) -> dict:
    """Run `task` in a worker process in `step_dir` to completion and return its result.

    A result.json already there (the worker finished before the controller last died) is returned as is.
    Otherwise the step directory is cleared except `keep` (inputs written by `prepare`) and, for Grow, its
    finished shards, which a restarted worker skips. `on_event` gets every worker event, `on_poll` runs at
    each poll (the controller ingests Grow shards there), `should_stop` ends the worker with SIGTERM.
    """
    step_dir.mkdir(parents=True, exist_ok=True)
    result_path = step_dir / "result.json"
    if result_path.exists():
        return json.loads(result_path.read_text())
    if task["kind"] != "grow":
        for p in step_dir.iterdir():
            if p.name not in keep:
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
            offset, events = read_events(events_path, offset)
            for ev in events:
                if ev["kind"] == "error":
                    last_error = ev["message"]
                on_event(ev)
            on_poll()
            if code is not None:
                break
            if should_stop():
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
                raise WorkerStopped(task["step_key"])
            time.sleep(poll_s)
    except BaseException:
        if proc.poll() is None:
            proc.kill()
        raise
    if code != 0 or not result_path.exists():
        if last_error:
            raise WorkerFailed(f"{task['step_key']} failed: {last_error}")
        tail = (step_dir / "worker.log").read_text(errors="replace")[-2000:]
        raise WorkerFailed(f"{task['step_key']} failed: worker exited with code {code}\n{tail}")
    return json.loads(result_path.read_text())


def read_events(path: Path, offset: int) -> tuple[int, list[dict]]:
    """Complete JSONL lines appended since `offset`; a partial last line is left for the next poll."""
    if not path.exists():
        return offset, []
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read()
    end = data.rfind(b"\n") + 1
    events = [json.loads(line) for line in data[:end].splitlines() if line.strip()]
    return offset + end, events


if __name__ == "__main__":
    sys.exit(main())
