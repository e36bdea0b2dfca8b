"""Where a campaign's Grow steps ran: backend, cluster address and shards per node, read from each Grow
worker's events (engine/steps/grow.py and engine/cluster.py emit `grow_plan`, `shard_start`, `shard`).

A shard counts as done once its `shard` event is written (its files are complete); as in flight when its
latest start has no end yet and the Grow is still running in this server; otherwise as started but
unfinished (its worker stopped or died; a resumed Grow reruns it).
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from engine.worker import read_events


def grow_placement(run_dir: str | Path, running: bool) -> list[dict]:
    """One row per (Grow step, host): backend, cluster, shards done, in flight, started but unfinished."""
    rows = []
    for step in sorted(Path(run_dir).glob("steps/g*-grow"), key=lambda p: int(p.name[1:].split("-")[0])):
        events = read_events(step / "events.jsonl", 0)[1]
        plans = [e for e in events if e["kind"] == "grow_plan"]
        if not plans:
            continue
        plan, finished = plans[-1], (step / "result.json").exists()
        done: dict[int, dict] = {}
        started: dict[int, dict] = {}
        for e in events:
            if e["kind"] == "shard":
                done[e["shard"]] = e
            elif e["kind"] == "shard_start":
                started[e["shard"]] = e
        hosts: dict[tuple[str, str], dict] = {}
        for j, e in [*done.items(), *((j, e) for j, e in started.items() if j not in done)]:
            node = str(e.get("node") or "")
            h = hosts.setdefault(
                (e["host"], node), {"done": 0, "in flight": 0, "started, unfinished": 0, "seconds": 0.0}
            )
            if j in done:
                h["done"] += 1
                h["seconds"] += e.get("seconds") or 0.0
            elif running and not finished:
                h["in flight"] += 1
            else:
                h["started, unfinished"] += 1
        for (host, node), h in sorted(hosts.items()):
            rows.append(
                {
                    "step": step.name,
                    "backend": plan["backend"],
                    "cluster": plan["cluster"] or "worker process",
                    "host": host,
                    "node": node if node == "local" else node[:12],
                    "shards done": h["done"],
                    "in flight": h["in flight"],
                    "started, unfinished": h["started, unfinished"],
                    "mean s/shard": round(h["seconds"] / h["done"], 2) if h["done"] else None,
                    "shards in Grow": plan["shards"],
                }
            )
    return rows


def section(svc, cid: str) -> None:
    """The Campaigns page's "Where Grow runs" table (nothing when no Grow has started), redrawn every 3 s
    while the campaign runs in this server."""
    run_dir = svc.store.campaign(cid)["run_dir"]

    @st.fragment(run_every="3s" if svc.running(cid) else None)
    def table() -> None:
        rows = grow_placement(run_dir, svc.running(cid))
        if not rows:
            return
        st.markdown("**Where Grow runs** (shards per node, from each Grow worker's events)")
        st.dataframe(rows, hide_index=True, key="grow_placement")
        st.caption(
            "Shards of earlier attempts count where they ran; a shard done before a restart is not rerun. "
            "cluster 'worker process': the shards ran one after the other in the campaign's worker, "
            "without Ray."
        )

    table()
