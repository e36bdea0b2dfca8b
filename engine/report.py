"""Campaign status as plain data: what `restgov status --json` prints and the dashboard shows.

One row per Improve step (Grow g, Improve i): the filter rule and its threshold, the kept count, the
mean reward of the kept samples and the validation reward after the step; plus BC and final figures.
"""

from __future__ import annotations

from .store import Store


def campaign_status(store: Store, cid: str) -> dict:
    row = store.campaign(cid)
    if row is None:
        raise KeyError(f"no campaign {cid!r} in {store.path}")
    done = store.done_steps(cid)
    evals = store.evals(cid)
    val = {
        e["policy"]: e["value"]
        for e in evals
        if e["split"] == "validation" and e["metric"] == "mean_reward" and e["step_key"] != "final"
    }
    steps = []
    if "bootstrap" in done:
        steps.append(
            {
                "grow": 0,
                "improve": 0,
                "policy": "base",
                "rule": "bc",
                "tau": None,
                "param": None,
                "kept": None,
                "kept_mean_reward": None,
                "val_reward": val.get("base"),
            }
        )
    grows = {}
    for g in sorted({s["grow"] for s in store.steps(cid) if s["kind"] == "grow" and s["status"] == "done"}):
        st = store.grow_stats(cid, g)
        grows[g] = {
            "n_samples": st["n"],
            "n_generated": st["n_generated"],
            "mean_reward": st["mean"],
            "std_reward": st["std"],
        }
    for f in store.filters(cid):
        key = f"g{f['grow']}-i{f['improve']}"
        steps.append(
            {
                "grow": f["grow"],
                "improve": f["improve"],
                "policy": key,
                "rule": f["rule"],
                "tau": f["tau"],
                "param": f["param"],
                "kept": f["kept"],
                "n_total": f["n_total"],
                "kept_mean_reward": f["kept_mean_reward"],
                "val_reward": val.get(key) if key in done else None,
            }
        )
    final = {}
    best_of_n: dict[str, dict[int, float]] = {}
    for e in evals:
        if e["step_key"] != "final":
            continue
        if e["metric"] == "mean_reward":
            final[e["policy"]] = e["value"]
        else:
            best_of_n.setdefault(e["policy"], {})[e["n"]] = e["value"]
    split = done.get("final", {}).get("split") if done.get("final") else None
    return {
        "id": cid,
        "name": row["name"],
        "mode": row["mode"],
        "state": row["state"],
        "stop_reason": row["stop_reason"],
        "created_at": str(row["created_at"]),
        "grows": grows,
        "steps": steps,
        "final": {"split": split, "mean_reward": final, "best_of_n": best_of_n},
        "compute_seconds": sum((r or {}).get("seconds", 0.0) for r in done.values()),
    }
