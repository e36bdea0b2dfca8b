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
    ckpt = store.checkpoint_figures(cid)
    checks = store.gate_checks(cid)
    flagged = store.flagged_policies(cid)

    def gate_of(policy: str) -> str | None:
        """What the gates said of a checkpoint: the first failing or flagging check naming it."""
        for c in checks:
            if c["policy"] == policy and c["status"] in ("fail", "override", "flag"):
                return f"{c['gate']} {c['status']}"
        return None

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
                "val_tokens": ckpt.get("base", {}).get("tokens"),
                "val_audit": ckpt.get("base", {}).get("audit", {}),
                "gate": None,
            }
        )
    grows = {}
    summaries = store.grow_summaries(cid)
    for g in sorted({s["grow"] for s in store.steps(cid) if s["kind"] == "grow" and s["status"] == "done"}):
        st = store.grow_stats(cid, g)
        sm = summaries.get(g, {})
        after = [c for c in checks if c["stage"] == "after-grow" and c["grow"] == g]
        grows[g] = {
            "n_samples": st["n"],
            "n_generated": st["n_generated"],
            "mean_reward": st["mean"],
            "std_reward": st["std"],
            "policy": sm.get("policy"),
            "generated_mean_reward": sm.get("reward"),
            "mean_tokens": sm.get("tokens"),
            "audit": sm.get("audit", {}),
            "gates": [{"gate": c["gate"], "status": c["status"], "message": c["message"]} for c in after],
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
                "val_tokens": ckpt.get(key, {}).get("tokens"),
                "val_audit": ckpt.get(key, {}).get("audit", {}),
                "gate": gate_of(key),
            }
        )
    final = {}
    best_of_n: dict[str, dict[int, float]] = {}
    final_tokens: dict[str, float] = {}
    final_audit: dict[str, dict[str, float]] = {}
    for e in evals:
        if e["step_key"] != "final":
            continue
        if e["metric"] == "mean_reward":
            final[e["policy"]] = e["value"]
        elif e["metric"] == "best_of_n":
            best_of_n.setdefault(e["policy"], {})[e["n"]] = e["value"]
        elif e["metric"] == "mean_tokens":
            final_tokens[e["policy"]] = e["value"]
        elif e["metric"].startswith("audit:"):
            final_audit.setdefault(e["policy"], {})[e["metric"][6:]] = e["value"]
    fin = done.get("final") or {}
    split = fin.get("split")
    return {
        "id": cid,
        "name": row["name"],
        "mode": row["mode"],
        "state": row["state"],
        "stop_reason": row["stop_reason"],
        "created_at": str(row["created_at"]),
        "grows": grows,
        "steps": steps,
        "final": {
            "split": split,
            "policy": fin.get("final_policy"),
            "why": fin.get("final_reason"),
            "mean_reward": final,
            "best_of_n": best_of_n,
            "mean_tokens": final_tokens,
            "audit": final_audit,
        },
        "gate_checks": [
            {k: c[k] for k in ("stage", "grow", "gate", "status", "message", "policy", "figures")}
            | {"ts": str(c["ts"])}
            for c in checks
        ],
        "flagged": flagged,
        "compute_seconds": sum((r or {}).get("seconds", 0.0) for r in done.values()),
    }
