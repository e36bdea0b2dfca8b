"""Campaign list, controls and the live panel of the Campaigns page.

The panel is an `st.fragment` that reruns every 2 s while this server runs the campaign: it reads the
controller's in-memory progress (bar, ETA, samples/s, loss) and the store's per-step table; it never waits
on compute. When the campaign stops running it triggers one full rerun so the buttons follow the state.
"""

from __future__ import annotations

from datetime import datetime

import streamlit as st

from dashboard import charts, queries
from engine.store import now as store_now

STEP_COLUMNS = [
    "grow",
    "improve",
    "policy",
    "rule",
    "tau",
    "param",
    "kept",
    "n_total",
    "kept_mean_reward",
    "val_reward",
]


def campaign_table() -> None:
    rows = queries.campaigns()
    if not rows:
        st.info("No campaigns yet: launch a demo recipe above.")
        return
    st.dataframe(
        [
            {
                "name": c["name"],
                "id": c["id"],
                "mode": c["mode"],
                "state": c["state"] + (" (running)" if c["running"] else ""),
                "samples": c["n_samples"],
                "created": c["created_at"],
                "stop reason": c["stop_reason"],
            }
            for c in rows
        ],
        hide_index=True,
        key="campaign_table",
    )


def controls(svc, cid: str, user: dict) -> None:
    row = svc.store.campaign(cid)
    running = svc.running(cid)
    verb = "Start" if row["state"] == "CREATED" else "Resume"
    c1, c2, c3, _ = st.columns([1, 1, 1, 3])
    c1.button(
        verb,
        key="ctl_start",
        type="primary",
        icon=":material/play_arrow:",
        disabled=not svc.can_start(cid),
        on_click=svc.start,
        args=(cid, user["name"]),
    )
    c2.button(
        "Pause",
        key="ctl_pause",
        icon=":material/pause:",
        disabled=not running,
        on_click=svc.pause,
        args=(cid, user["name"]),
        help="Stops the current worker; Resume continues from the last completed unit "
        "(a Grow from its shards).",
    )
    c3.button(
        "Stop",
        key="ctl_stop",
        icon=":material/stop:",
        disabled=row["state"] in ("DONE", "STOPPED"),
        on_click=svc.stop,
        args=(cid, user["name"]),
        help="Ends the campaign for good (STOPPED).",
    )
    reason = row["stop_reason"] or ""
    if row["state"] == "PAUSED" and not running and reason.startswith("gate "):
        gate = reason.split(":", 1)[0].removeprefix("gate ").strip()
        st.warning(
            f"Paused by the **{gate}** gate: {reason.split(':', 1)[-1].strip()}. Change the criteria "
            "(Stopping criteria page) and resume, or let this gate through once:"
        )
        st.button(
            f"Resume, overriding the {gate} gate once",
            key="ctl_override",
            on_click=svc.start,
            args=(cid, user["name"], (gate,)),
            help="Logged in the event log with your name.",
        )
    if not running and row["state"] not in ("CREATED", "PAUSED", "DONE", "STOPPED", "FAILED"):
        st.warning(
            f"State {row['state']} but no controller runs it (the server restarted): Resume continues it."
        )


def _kind(step_key: str | None) -> str | None:
    """The kind of a step key: bootstrap, grow (g1-grow), improve (g1-i2), final, ..."""
    if not step_key:
        return None
    if step_key.endswith("-grow"):
        return "grow"
    if step_key.startswith("g") and "-i" in step_key:
        return "improve"
    return step_key.split("-", 1)[0]


def step_eta(store, cid: str, lv: dict, now: datetime | None = None) -> tuple[float | None, str]:
    """(seconds left in the running step, where the estimate comes from), or (None, why not yet).

    The rate is measured on this campaign, never assumed: the seconds per unit of its finished steps of the
    same kind (Grow: per source, sampling, scoring and ingest included; Improve: per optimizer step,
    evaluations included); for the first Grow, the sources of its shards already ingested over the time
    since it started. Until one of these exists there is no estimate."""
    kind, done, total = _kind(lv.get("step_key")), lv.get("done") or 0, lv.get("total")
    if not total:
        return None, "estimating"
    if kind not in ("grow", "improve"):  # one of a kind (bootstrap, final): its own phase's measured rate
        if lv.get("eta_s") is not None and done >= 0.2 * total:
            return lv["eta_s"], "from this phase so far"
        return None, "estimating"
    unit = "sources" if kind == "grow" else "train_steps"
    steps = store.step_timings(cid)
    same = [t for t in steps if t["kind"] == kind and t["status"] == "done" and t[unit] and t["seconds"]]
    if same:
        per = sum(t["seconds"] for t in same) / sum(t[unit] for t in same)
        n = len(same)
        return max(0.0, (total - done) * per), f"from {n} finished {kind} step{'s' if n > 1 else ''}"
    cur = next((t for t in steps if t["step_key"] == lv["step_key"]), None)
    if kind == "grow" and cur and cur["started_at"] and cur["sources"]:
        per = ((now or store_now()) - cur["started_at"]).total_seconds() / cur["sources"]
        return max(0.0, (total - cur["sources"]) * per), "from this Grow's shards ingested so far"
    return None, "estimating"


def _duration(s: float) -> str:
    return f"{s:.0f} s" if s < 90 else f"{s / 60:.0f} min" if s < 5400 else f"{s / 3600:.1f} h"


def _progress(store, cid: str, lv: dict | None) -> None:
    if lv and lv.get("step_key") and not lv.get("total"):
        st.caption(f"{lv['step_key']}: starting the worker ...")
    if not lv or not lv.get("total"):
        return
    done, total = lv["done"] or 0, lv["total"]
    left, why = step_eta(store, cid, lv)
    eta = f" · ETA {_duration(left)} ({why})" if left is not None else " · ETA estimating"
    st.progress(min(done / total, 1.0), text=f"{lv['desc']}: {done}/{total}{eta}")
    c1, c2, c3 = st.columns(3)
    c1.metric("samples/s", f"{lv['samples_per_s']:.0f}" if lv.get("samples_per_s") else "-")
    c2.metric("training loss", f"{lv['loss']:.3f}" if lv.get("loss") is not None else "-")
    c3.metric("validation reward", f"{lv['val_reward']:.3f}" if lv.get("val_reward") is not None else "-")


def panel(svc, cid: str) -> None:
    running = svc.running(cid)

    @st.fragment(run_every="2s" if running else None)
    def live() -> None:
        if svc.running(cid) != running:
            st.rerun()  # started or stopped meanwhile: redraw the buttons and stop (or start) polling
        row = svc.store.campaign(cid)
        lv = svc.live(cid)
        st.markdown(
            f"**State:** `{row['state']}`" + (f" · {row['stop_reason']}" if row["stop_reason"] else "")
        )
        if lv and lv.get("error"):
            st.error(lv["error"])
        _progress(svc.store, cid, lv if running else None)
        points = (lv or {}).get("losses") if running else None
        points = points or [
            {"step_key": c["step_key"], "step": c["step"], "loss": c["loss"]}
            for c in svc.store.curves(cid)
            if c["loss"] is not None
        ]
        if points:
            st.plotly_chart(charts.loss(points), key="loss_chart")
        st_ = queries.status(cid, queries.stamp(cid))
        st.markdown("**Per-step table** (row grow 0 is the BC baseline)")
        if not st_["steps"]:
            st.info("No step has finished yet: a row appears when the BC baseline and each Improve end.")
        else:
            st.dataframe(
                [{k: s.get(k) for k in STEP_COLUMNS} for s in st_["steps"]],
                hide_index=True,
                key="step_table",
                column_config={  # the filter counts every pair of D_g: generated and original pairs of D
                    "kept": st.column_config.NumberColumn("kept (pairs of D_g)"),
                    "n_total": st.column_config.NumberColumn("pairs in D_g"),
                },
            )
            st.caption(
                "kept and pairs in D_g count every pair of the Grow step, the original pairs of D mixed in "
                "included; Reward distributions splits them into generated candidates and original pairs."
            )
        fin = st_["final"]
        if fin["mean_reward"]:
            st.markdown(
                f"**Final {fin['split']} reward:** "
                + ", ".join(f"{p} {v:.4f}" for p, v in fin["mean_reward"].items())
            )

    live()
