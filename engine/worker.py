"""Worker: runs one campaign step in a child process that never opens the database.

Contract: `python -m engine.worker STEP_DIR` reads STEP_DIR/task.json, appends progress to
STEP_DIR/events.jsonl, writes immutable Parquet shards into STEP_DIR/shards/ and finally
STEP_DIR/result.json; every file is written under a temporary name and renamed into place when complete.
A restarted Grow skips the shards already on disk, so a killed worker loses and duplicates nothing.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import sys
import threading
import time
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


class Ctx:
    def __init__(self, step_dir: Path):
        self.dir = step_dir
        self.task = json.loads((step_dir / "task.json").read_text())
        self.cfg: CampaignConfig = config_from_dict(self.task["config"])
        self.events = Events(step_dir / "events.jsonl")
        (step_dir / "shards").mkdir(exist_ok=True)
        self._reward = None

    @property
    def reward(self):
        if self._reward is None:
            from .rewards import load_reward

            self._reward = load_reward(self.cfg.reward)
        return self._reward

    def split(self, name: str, capped: bool = False) -> list[Example]:
        path = self.task["inputs"].get(name)
        exs = read_examples(path) if path else []
        cap = self.cfg.eval.max_sources
        return exs[:cap] if capped and cap else exs

    def progress(self, desc: str, done: int, total: int, **extra) -> None:
        self.events.emit("progress", desc=desc, done=done, total=total, **extra)


def _evaluator(ctx: Ctx, policy, val: list[Example]):
    from .evaluate import mean_reward

    def evaluate() -> float:
        return mean_reward(
            policy, ctx.reward, val, ctx.cfg.grow.max_new_tokens, ctx.cfg.eval.batch_size
        ).mean_reward

    return evaluate


def _train(
    ctx: Ctx, policy, examples, lr: float, epochs: float, batch_size: int, max_steps, evaluate, desc: str
):
    from .improve import fine_tune

    imp = ctx.cfg.improve
    curve: list[dict] = []

    def on_step(p: dict) -> None:
        curve.append(
            {"step_key": ctx.task["step_key"]} | {k: p[k] for k in ("step", "loss", "lr", "val_reward")}
        )
        if p["val_reward"] is not None or p["step"] % 5 == 0 or p["step"] == p["total"]:
            ctx.progress(desc, p["step"], p["total"], loss=p["loss"], val_reward=p["val_reward"])

    res = fine_tune(
        policy,
        examples,
        lr=lr,
        epochs=epochs,
        batch_size=batch_size,
        seed=unit_seed(ctx.cfg.seed, ctx.task["step_key"]),
        max_steps=max_steps,
        evaluate=evaluate,
        eval_every=imp.eval_every,
        patience=imp.patience,
        on_step=on_step,
    )
    write_parquet_atomic(
        ctx.dir / "shards" / "curve.parquet",
        pa.Table.from_pylist(
            curve,
            schema=pa.schema(
                [
                    ("step_key", pa.string()),
                    ("step", pa.int32()),
                    ("loss", pa.float64()),
                    ("lr", pa.float64()),
                    ("val_reward", pa.float64()),
                ]
            ),
        ),
    )
    return res


def run_bootstrap(ctx: Ctx) -> dict:
    """BC on D when the policy is untrained (always for a scratch model); then the validation reward."""
    from .improve import TrainExample
    from .models import Policy, build_scratch_policy, load_policy, pick_device, save_policy

    cfg, out = ctx.cfg, Path(ctx.task["out_checkpoint"])
    train, val = ctx.split("bootstrap") or ctx.split("train"), ctx.split("validation", capped=True)
    device = pick_device()
    if cfg.policy.scratch is not None:
        # The tokenizer sees the BC pairs and every Grow source, so no source falls back to raw bytes.
        texts = [cfg.policy.prompt_template.format(source=e.source) + e.reference for e in train]
        texts += [e.source for e in ctx.split("train")]
        model, tok = build_scratch_policy(cfg.policy.scratch, texts, cfg.seed)
        policy = Policy(model.to(device), tok, device, cfg.policy.prompt_template)
        trained = True
    else:
        policy = load_policy(cfg.policy.path, cfg.policy.prompt_template, device)
        trained = cfg.policy.bootstrap.force
    result: dict = {"trained": trained, "device": device}
    if trained:
        bc = cfg.policy.bootstrap
        exs = [TrainExample(e.source, e.reference) for e in train]
        evaluate = _evaluator(ctx, policy, val) if bc.early_stopping else None
        res = _train(ctx, policy, exs, bc.lr, bc.epochs, bc.batch_size, None, evaluate, "bootstrap BC")
        result |= {
            "steps": res.steps,
            "tokens": res.tokens,
            "train_seconds": res.seconds,
            "best_step": res.best_step,
        }
        result["val_reward"] = res.best_reward
    if result.get("val_reward") is None:
        ctx.progress("validation", 0, len(val))
        result["val_reward"] = _evaluator(ctx, policy, val)()
        ctx.progress("validation", len(val), len(val), val_reward=result["val_reward"])
    save_policy(policy, out, {"policy": "base", "config": ctx.task["config"]})
    result["reward_name"], result["reward_version"] = ctx.reward.name, ctx.reward.version
    return result


def run_grow(ctx: Ctx) -> dict:
    """Sample K candidates per training source, score each once, write one shard per block of sources."""
    from .grow import sample
    from .models import load_policy
    from .rewards import checked_scores

    cfg, task = ctx.cfg, ctx.task
    g = task["grow"]
    train = ctx.split("train")
    rng = random.Random(unit_seed(cfg.seed, "mix", g))
    mixed = [rng.random() < cfg.improve.original_mix for _ in train]
    per = cfg.grow.shard_sources
    n_shards = math.ceil(len(train) / per)
    k = cfg.grow.samples_per_source
    policy = None
    done_sources = 0
    t0 = time.perf_counter()
    for j in range(n_shards):
        block = train[j * per : (j + 1) * per]
        path = ctx.dir / "shards" / f"samples-{j:05d}.parquet"
        if path.exists():  # completed by an earlier attempt
            done_sources += len(block)
            continue
        if policy is None:
            policy = load_policy(task["policy_path"], cfg.policy.prompt_template)

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
        rewards = checked_scores(
            ctx.reward,
            [by_id[r["source_id"]].source for r in rows],
            [r["text"] for r in rows],
            [by_id[r["source_id"]].reference for r in rows],
            ids=[f"{r['source_id']}#{r['sample_idx']}" for r in rows],
        )
        for r, v in zip(rows, rewards):
            r["grow"], r["reward"], r["reward_version"] = g, v, ctx.reward.version
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
    ]
)


def run_improve(ctx: Ctx) -> dict:
    """Fine-tune on the kept pairs, keeping the checkpoint with the best validation reward."""
    from .improve import TrainExample
    from .models import load_policy, save_policy

    cfg, task, imp = ctx.cfg, ctx.task, ctx.cfg.improve
    kept = pq.read_table(task["train_path"]).to_pylist()
    weighted = imp.loss == "reward_weighted"
    exs = [TrainExample(r["source"], r["target"], r["reward"] if weighted else 1.0) for r in kept]
    policy = load_policy(task["init_path"], cfg.policy.prompt_template)
    val = ctx.split("validation", capped=True)
    evaluate = _evaluator(ctx, policy, val) if imp.early_stopping else None
    res = _train(
        ctx, policy, exs, task["lr"], imp.epochs, imp.batch_size, imp.max_steps, evaluate, task["step_key"]
    )
    val_reward = res.best_reward if evaluate else _evaluator(ctx, policy, val)()
    save_policy(
        policy,
        Path(task["out_checkpoint"]),
        {"policy": task["policy"], "init": task["init_path"], "lr": task["lr"]},
    )
    return {
        "steps": res.steps,
        "tokens": res.tokens,
        "train_seconds": res.seconds,
        "best_step": res.best_step,
        "start_reward": res.start_reward,
        "val_reward": val_reward,
        "stopped_early": res.stopped_early,
        "n_train": len(exs),
        "tokens_per_s": res.tokens / max(res.seconds, 1e-9),
    }


def run_final(ctx: Ctx) -> dict:
    """Test reward and the Best-of-N curve, for the BC baseline and the final policy."""
    from .evaluate import best_of_n, mean_reward
    from .models import load_policy

    cfg, task = ctx.cfg, ctx.task
    test = ctx.split("test", capped=True) or ctx.split("validation", capped=True)
    split = "test" if ctx.task["inputs"].get("test") else "validation"
    out: dict = {"split": split, "policies": {}}
    for name, path in task["policies"].items():
        policy = load_policy(path, cfg.policy.prompt_template)
        ctx.progress(f"final eval {name}", 0, len(test))
        m = mean_reward(policy, ctx.reward, test, cfg.grow.max_new_tokens, cfg.eval.batch_size).mean_reward
        bon = best_of_n(
            policy,
            ctx.reward,
            test,
            cfg.eval.best_of_n,
            cfg.grow.temperature,
            cfg.grow.top_p,
            cfg.grow.max_new_tokens,
            cfg.eval.batch_size,
            unit_seed(cfg.seed, "bon", name),
        )
        out["policies"][name] = {"mean_reward": m, "best_of_n": {str(n): v for n, v in bon.items()}}
        ctx.progress(f"final eval {name}", len(test), len(test))
    return out


def run_reward_tests(ctx: Ctx) -> dict:
    """The reward unit-test suite on the validation references (good outputs), for the reward-tests gate."""
    from reward_tests.report import to_dict
    from reward_tests.runner import run_suite
    from reward_tests.suite import default_suite, load_user_tests, merge, select

    cfg = ctx.cfg
    tests = default_suite()
    for spec in cfg.reward.tests:
        tests = merge(tests, load_user_tests(spec))
    tests = select(tests, skip=[t for t in cfg.gates.reward_tests_skip if t in {x.name for x in tests}])
    val = ctx.split("validation", capped=True)
    pairs = [(e.id, e.source, e.reference, e.reference) for e in val]
    ctx.progress("reward tests", 0, len(tests))
    report = run_suite(
        ctx.reward, pairs, tests, seed=cfg.seed, min_pass_rate=cfg.gates.reward_tests_min_pass_rate
    )
    ctx.progress("reward tests", len(tests), len(tests))
    return {"report": to_dict(report)}


RUNNERS = {
    "bootstrap": run_bootstrap,
    "grow": run_grow,
    "improve": run_improve,
    "final": run_final,
    "reward_tests": run_reward_tests,
}


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
    kind = ctx.task["kind"]
    ctx.events.emit("start", step=ctx.task["step_key"], pid=os.getpid())
    t0 = time.perf_counter()
    try:
        result = RUNNERS[kind](ctx)
    except Exception as e:  # the controller reads the message from events.jsonl
        import traceback

        ctx.events.emit("error", message=f"{type(e).__name__}: {e}", traceback=traceback.format_exc())
        return 1
    result["seconds"] = time.perf_counter() - t0
    write_atomic(step_dir / "result.json", json.dumps(result, indent=2))
    ctx.events.emit("done", seconds=result["seconds"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
