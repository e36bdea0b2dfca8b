"""Per checkpoint of a campaign: held-out reward, chrF against the references and output length.

Reads the campaign from a restgov DuckDB store (engine.store), greedy-decodes the validation sources with
every evaluated checkpoint as the campaign's evaluation does (engine.evaluate.mean_reward), and scores the
outputs with the campaign's reward and with chrF (engine.rewards.chrf), the audit metric nothing trains
on. Made for the reward-hack recipe, where the reward rises while chrF falls; works on any campaign with
references.

    python bench/reward_hack_figures.py --db /tmp/rh/restgov.duckdb [--campaign ID] [--json]

The store is opened read-write (DuckDB allows one process per file): run it when no campaign is running.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def figures(db: str, cid: str | None = None, max_sources: int | None = None) -> dict:
    """{'campaign', 'n', 'steps': [...]} with each checkpoint's stored and recomputed figures."""
    from engine.config import config_from_dict
    from engine.data import load_split
    from engine.evaluate import mean_reward
    from engine.models import load_policy
    from engine.rewards import chrf, load_reward
    from engine.store import open_store

    store = open_store(db)
    try:
        if cid is None:
            rows = store.campaigns()
            if not rows:
                sys.exit(f"no campaigns in {db}")
            cid = rows[-1]["id"]
        row = store.campaign(cid)
        if row is None:
            sys.exit(f"no campaign {cid!r} in {db}")
        cfg = config_from_dict(row["config"])
        val = load_split(cfg.data, "validation")[: max_sources or cfg.eval.max_sources or None]
        stored = {
            e["policy"]: e["value"]
            for e in store.evals(cid)
            if e["split"] == "validation" and e["metric"] == "mean_reward" and e["step_key"] != "final"
        }
        stored_chrf = {
            e["policy"]: e["value"]
            for e in store.evals(cid)
            if e["split"] == "validation" and e["metric"] == "audit:chrf" and e["step_key"] != "final"
        }
        ckpts = [c for c in store.checkpoints(cid) if c["policy"] in stored]
    finally:
        store.close()

    reward = load_reward(cfg.reward)
    refs = [e.reference for e in val]
    ref_words = statistics.mean(len(r.split()) for r in refs)
    steps = []
    for c in ckpts:
        policy = load_policy(c["path"], cfg.policy.prompt_template)
        res = mean_reward(policy, reward, val, cfg.grow.max_new_tokens, cfg.eval.batch_size)
        words = [len(o.split()) for o in res.outputs]
        steps.append(
            {
                "policy": c["policy"],
                "grow": c["grow"],
                "improve": c["improve"],
                "stored_reward": stored[c["policy"]],
                "stored_chrf": stored_chrf.get(c["policy"]),
                "reward": res.mean_reward,
                "chrf": statistics.mean(chrf(o, r) for o, r in zip(res.outputs, refs)),
                "words": statistics.mean(words),
                "length_ratio": statistics.mean(w / len(r.split()) for w, r in zip(words, refs)),
                "example": {"source": val[0].source, "reference": refs[0], "output": res.outputs[0]},
            }
        )
    return {"campaign": cid, "n": len(val), "reference_words": ref_words, "steps": steps}


def render(out: dict) -> str:
    lines = [
        f"campaign {out['campaign']}: {out['n']} validation sources, references {out['reference_words']:.2f} "
        "words on average",
        "",
        "| checkpoint | validation reward | chrF | words | length / reference |",
        "|---|---:|---:|---:|---:|",
    ]
    for s in out["steps"]:
        name = "BC" if s["policy"] == "base" else f"Grow {s['grow']}, Improve {s['improve']}"
        cells = [f"{s['reward']:.3f}", f"{100 * s['chrf']:.1f}", f"{s['words']:.2f}"]
        cells.append(f"{s['length_ratio']:.2f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    first, last = out["steps"][0], out["steps"][-1]
    lines += [
        "",
        f"BC -> {last['policy']}: reward {last['reward'] - first['reward']:+.3f}, "
        f"chrF {100 * (last['chrf'] - first['chrf']):+.1f} points, "
        f"words {last['words'] - first['words']:+.2f}",
    ]
    for s in (first, last):
        ex = s["example"]
        lines.append(f"{s['policy']}: {ex['source']!r} -> {ex['output']!r} (reference {ex['reference']!r})")
    return "\n".join(lines)


def main() -> None:
    from engine.cli.common import DEFAULT_DB, add_db_argument

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_db_argument(ap, DEFAULT_DB, "the DuckDB store the campaign ran in (default: restgov's default)")
    ap.add_argument("--campaign", help="campaign id (default: the newest in --db)")
    ap.add_argument("--max-sources", type=int, help="validation sources (default: the campaign's eval cap)")
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    a = ap.parse_args()
    import torch

    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    out = figures(a.db, a.campaign, a.max_sources)
    for s in out["steps"]:  # greedy decodes are deterministic: the recomputed reward is the stored one
        if abs(s["reward"] - s["stored_reward"]) > 1e-3:
            print(f"warning: {s['policy']} reward {s['reward']:.4f} != stored {s['stored_reward']:.4f}")
    print(json.dumps(out, indent=2) if a.json else render(out))
    print(f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
