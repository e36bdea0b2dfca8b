"""Drift audit (auditor; operators too): drift statistics between Grow steps with alarms highlighted, the
event log (who changed what, gates hit), reward-model versions with their latest unit-test verdict; exports of
the event log (JSON) and of a self-contained HTML audit report with the figures (dashboard/report_html.py).
"""

import json

import pandas as pd
import streamlit as st

from dashboard import queries
from dashboard.auth import require_page
from dashboard.report_html import (
    REWARD_VERSION_COLUMNS,
    build_audit_report,
    campaign_versions,
    drift_table_rows,
    drift_thresholds,
)
from dashboard.service import service

require_page("drift")
store = service().store
st.title("Drift audit")
cid = queries.pick_campaign("drift_pick")
if cid is None:
    st.info("No campaigns yet.")
    st.stop()

st.download_button(
    "Download the audit report (HTML)",
    lambda: build_audit_report(store, cid),
    f"{cid}-audit.html",
    mime="text/html",
    key="drift_report",
    type="primary",
    icon=":material/download:",
    help="One self-contained file: campaign summary, per-step table, reward histograms, drift statistics "
    "with alarms, event log, reward versions and test verdicts, rating statistics. Opens offline.",
)

st.subheader("Drift between Grow steps")
grows = [r["grow"] for r in store.drift_grows(cid)]
if len(grows) < 2:
    st.info(f"Drift compares two Grow steps; this campaign has {len(grows)} with generated samples.")
else:
    c1, c2 = st.columns(2)
    a = c1.selectbox("Reference step a", grows, index=0, key="drift_a")
    b = c2.selectbox("Compared step b", grows, index=len(grows) - 1, key="drift_b")
    if a == b:
        st.info("Pick two different Grow steps.")
    elif st.button("Compute drift", key="drift_go"):
        from engine.drift import drift_report  # scipy and torch; imported only when asked

        row = store.campaign(cid)
        rep = drift_report(store, cid, a, b, drift_thresholds(row["config"]))
        st.session_state.drift_rep = {"cid": cid, "a": a, "b": b, "rep": rep}
    shown = st.session_state.get("drift_rep")
    if shown and (shown["cid"], shown["a"], shown["b"]) == (cid, a, b):
        rep = shown["rep"]
        for al in rep["alarms"]:
            st.error(al["message"], icon=":material/warning:")
        if not rep["alarms"]:
            st.success(f"No drift alarm between grow {a} and grow {b}.")
        rows = drift_table_rows(rep)
        st.dataframe(
            pd.DataFrame(rows).style.apply(
                lambda r: ["background-color: #fde8e8" if r["fired"] else ""] * len(r), axis=1
            ),
            hide_index=True,
            key="drift_stats",
            height=(len(rows) + 1) * 35 + 3,  # every check in view, none behind a scroll bar
            column_config={
                "fired": st.column_config.CheckboxColumn("fired?"),
                "value": st.column_config.NumberColumn(format="%.4g"),
                "threshold": st.column_config.NumberColumn(format="%.4g"),
            },
        )
        st.caption(
            "Grow b against Grow a on generated candidates, with this campaign's limits ([gates] drift_*); "
            "a check without a threshold is a figure, not an alarm. Rows in red fired."
        )

st.subheader("Reward-model versions")
st.caption(
    "This campaign's own reward versions: those its samples were scored with, its config's reward and the "
    "refreshes of it."
)
versions = store.reward_versions(cid, campaign_versions(store, cid))
if not versions:
    st.info("No reward-model version recorded for this campaign yet.")
else:
    st.dataframe(
        [
            v
            | {
                "failed_tests": ", ".join(v["failed_tests"]),
                "used_in_grows": ", ".join(map(str, v["used_in_grows"] or [])),
            }
            for v in versions
        ],
        hide_index=True,
        key="drift_versions",
        column_order=[*REWARD_VERSION_COLUMNS, "path", "registered_at"],
    )

st.subheader("Event log")
events = store.recent_events(cid, 1000)
st.dataframe(
    [{k: e[k] for k in ("id", "ts", "actor", "kind", "state", "message")} for e in events],
    hide_index=True,
    key="drift_events",
)
st.download_button(
    "Export the event log (JSON)",
    json.dumps(events, default=str, indent=1),
    f"{cid}-events.json",
    mime="application/json",
    key="drift_export",
)
