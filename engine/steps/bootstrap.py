"""Bootstrap: the BC policy every ReST campaign starts from, pi_0 = argmax_theta log-likelihood of D.

A scratch policy (tokenizer and weights) is built and trained on the bootstrap split (else the train split);
a pretrained `policy.path` is used as is unless `policy.bootstrap.force`. The result is checkpoint `base`
and its validation reward, the baseline of every later comparison.
"""

from __future__ import annotations

from pathlib import Path

from . import Unit
from .improve import record_validation

KIND = "bootstrap"


def prepare(store, unit: Unit, cfg, run_dir: Path) -> dict:
    return {"out_checkpoint": str(run_dir / "checkpoints" / "base")}


def run(ctx) -> dict:
    from ..improve import TrainExample
    from ..models import Policy, build_scratch_policy, load_policy, pick_device, save_policy

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
        policy = load_policy(
            cfg.policy.path, cfg.policy.prompt_template, device, chat_template=cfg.policy.chat_template
        )
        trained = cfg.policy.bootstrap.force
    result: dict = {"trained": trained, "device": device}
    if trained:
        bc = cfg.policy.bootstrap
        exs = [TrainExample(e.source, e.reference) for e in train]
        evaluate = ctx.evaluator(policy, val) if bc.early_stopping else None
        res = ctx.train(policy, exs, bc.lr, bc.epochs, bc.batch_size, None, evaluate, "bootstrap BC")
        result |= {
            "steps": res.steps,
            "tokens": res.tokens,
            "train_seconds": res.seconds,
            "best_step": res.best_step,
        }
        result["val_reward"] = res.best_reward
    ctx.progress("validation", 0, len(val))
    summary = ctx.evaluate_outputs(policy, "base", "validation", val)
    if result.get("val_reward") is None:
        result["val_reward"] = summary["mean_reward"]
    result |= {"val_tokens": summary["mean_tokens"], "val_audit": summary["audit"]}
    ctx.progress("validation", len(val), len(val), val_reward=result["val_reward"])
    save_policy(policy, out, {"policy": "base", "config": ctx.task["config"]})
    result["reward_name"], result["reward_version"] = ctx.reward.name, ctx.reward.version
    return result


def record(store, unit: Unit, task: dict, result: dict) -> None:
    cid, reward = unit.cid, task["config"]["reward"]
    store.add_checkpoint(cid, "base", task["out_checkpoint"], None, 0, None)
    record_validation(store, unit, "base", result)
    store.add_reward_model(
        result["reward_version"], result["reward_name"], reward["kind"], reward.get("path")
    )
