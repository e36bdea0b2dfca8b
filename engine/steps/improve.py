"""Improve: fine-tune on the Grow data the filter keeps, F(x, y; tau) = 1[R(x, y) > tau].

`prepare` applies the filter in SQL (engine/store/filters.py) with the parameter engine/filters.py plans for
this Improve step, writes the kept pairs as the worker's Parquet input and picks the initial weights and the
learning rate; `run` fine-tunes (behaviour cloning or reward-weighted NLL), keeping the checkpoint with the
best validation reward when early stopping is on.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from .. import filters
from . import EndCampaign, Unit, checkpoint_path, key, latest_before

KIND = "improve"


def prepare(store, unit: Unit, cfg, run_dir: Path) -> dict:
    """Apply the filter in SQL (written as the worker's Parquet input) and pick the initial weights."""
    cid, g, i = unit.cid, unit.grow, unit.improve
    param = filters.plan(cfg, store.grow_stats(cid, g)["mean"])[i - 1]
    step_dir = run_dir / "steps" / unit.key
    step_dir.mkdir(parents=True, exist_ok=True)
    stats = store.apply_filter(cid, g, i, cfg.improve.rule, param, step_dir / "train.parquet")
    store.add_event(
        cid,
        "filter",
        f"{unit.key}: rule {cfg.improve.rule} param {param} kept {stats['kept']} of {stats['n_total']}",
        stats,
    )
    if not stats["kept"]:
        why = f"{unit.key}: the filter ({cfg.improve.rule}, {param}) kept no samples of grow {g}"
        if cfg.improve.on_empty == "stop":
            raise EndCampaign(why)
        return {"skip": f"{why}; skipped, the policy stays as it was"}
    init = filters.init_policy(cfg, latest_before(store, cid, g, i))
    n_before = sum(1 for c in store.checkpoints(cid) if c["improve"] and key(c) < (g, i))
    return {
        "train_path": str(step_dir / "train.parquet"),
        "init_path": checkpoint_path(store, cid, init),
        "init": init,
        "policy": unit.key,
        "lr": filters.learning_rate(cfg, n_before),
        "out_checkpoint": str(run_dir / "checkpoints" / unit.key),
    }


def run(ctx) -> dict:
    from ..improve import TrainExample
    from ..lora import policy_for_training, trainable_share
    from ..models import load_policy, save_policy
    from ..worker import unit_seed

    cfg, task, imp = ctx.cfg, ctx.task, ctx.cfg.improve
    kept = pq.read_table(task["train_path"]).to_pylist()
    weighted = imp.loss == "reward_weighted"
    exs = [TrainExample(r["source"], r["target"], r["reward"] if weighted else 1.0) for r in kept]
    # With [improve.lora]: the init checkpoint's adapter, or a fresh one over a full checkpoint.
    policy = policy_for_training(
        task["init_path"],
        imp.lora,
        load_policy,
        seed=unit_seed(cfg.seed, "lora", task["step_key"]),
        prompt_template=cfg.policy.prompt_template,
        chat_template=cfg.policy.chat_template,
    )
    val = ctx.split("validation", capped=True)
    evaluate = ctx.evaluator(policy, val) if imp.early_stopping else None
    res = ctx.train(
        policy, exs, task["lr"], imp.epochs, imp.batch_size, imp.max_steps, evaluate, task["step_key"]
    )
    summary = ctx.evaluate_outputs(policy, task["policy"], "validation", val)
    val_reward = res.best_reward if evaluate else summary["mean_reward"]
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
        "val_tokens": summary["mean_tokens"],
        "val_audit": summary["audit"],
        "stopped_early": res.stopped_early,
        "n_train": len(exs),
        "tokens_per_s": res.tokens / max(res.seconds, 1e-9),
        "trainable_params": trainable_share(policy.model)[0],
        "lora": imp.lora is not None,
    }


def record(store, unit: Unit, task: dict, result: dict) -> None:
    cid = unit.cid
    store.add_checkpoint(cid, unit.key, task["out_checkpoint"], task["init"], unit.grow, unit.improve)
    record_validation(store, unit, unit.key, result)


def record_validation(store, unit: Unit, policy: str, result: dict) -> None:
    """The checkpoint's validation figures: mean reward, mean output tokens, each audit metric."""
    store.add_eval(unit.cid, unit.key, policy, "validation", "mean_reward", result["val_reward"])
    if result.get("val_tokens") is not None:
        store.add_eval(unit.cid, unit.key, policy, "validation", "mean_tokens", result["val_tokens"])
    for name, v in (result.get("val_audit") or {}).items():
        store.add_eval(unit.cid, unit.key, policy, "validation", f"audit:{name}", v)
