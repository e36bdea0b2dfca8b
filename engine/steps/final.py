"""Final: the held-out evaluation that closes a campaign: the test reward, audit metrics and Best-of-N curve
of the BC baseline and of the final policy (the best validation checkpoint no gate barred, see
engine/steps/gates.py), why it was chosen and why the campaign ended.
"""

from __future__ import annotations

from pathlib import Path

from ..worker import unit_seed
from . import Unit, checkpoint_path

KIND = "final"


def prepare(store, unit: Unit, cfg, run_dir: Path) -> dict:
    from .gates import choose_final

    final, why = choose_final(store, unit.cid)
    policies = {"base": checkpoint_path(store, unit.cid, "base")}
    if final != "base":
        policies[final] = checkpoint_path(store, unit.cid, final)
    return {"policies": policies, "final_policy": final, "final_reason": why}


def run(ctx) -> dict:
    from ..evaluate import best_of_n
    from ..vllm_backend import load_sampling_policy

    cfg, task = ctx.cfg, ctx.task
    test = ctx.split("test", capped=True) or ctx.split("validation", capped=True)
    split = "test" if ctx.task["inputs"].get("test") else "validation"
    out: dict = {"split": split, "policies": {}}
    for name, path in task["policies"].items():
        # The final evaluation samples on the campaign's backend (vLLM when grow.backend picks it).
        policy = load_sampling_policy(
            path, cfg.policy.prompt_template, cfg.grow.backend, cfg.seed, cfg.policy.chat_template
        )
        ctx.progress(f"final eval {name}", 0, len(test))
        summary = ctx.evaluate_outputs(policy, name, split, test)
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
        out["policies"][name] = summary | {"best_of_n": {str(n): v for n, v in bon.items()}}
        ctx.progress(f"final eval {name}", len(test), len(test))
    return out


def record(store, unit: Unit, task: dict, result: dict) -> None:
    result |= {
        "stop_reason": unit.reason,
        "final_policy": task["final_policy"],
        "final_reason": task["final_reason"],
    }
    for pol, r in result["policies"].items():
        store.add_eval(unit.cid, unit.key, pol, result["split"], "mean_reward", r["mean_reward"])
        if r.get("mean_tokens") is not None:
            store.add_eval(unit.cid, unit.key, pol, result["split"], "mean_tokens", r["mean_tokens"])
        for name, v in (r.get("audit") or {}).items():
            store.add_eval(unit.cid, unit.key, pol, result["split"], f"audit:{name}", v)
        for n, v in r["best_of_n"].items():
            store.add_eval(unit.cid, unit.key, pol, result["split"], "best_of_n", v, int(n))
