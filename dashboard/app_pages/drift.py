"""Drift audit (auditor; operators too): drift statistics between Grow steps with alarms highlighted, the
event log (who changed what, gates hit), reward-model versions with their latest unit-test verdict; exports of
the event log (JSON) and of a self-contained HTML audit report with the figures (dashboard/report_html.py).
"""

import json

import streamlit as st

from dashboard import queries
from dashboard.auth import require_page
from dashboard.report_html import build_audit_report
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
    if a != b and st.button("Compute drift", key="drift_go"):
        from engine.drift import drift_report  # scipy and torch; imported only when asked

        rep = drift_report(store, cid, a, b)
        for al in rep["alarms"]:
            st.error(al["message"], icon=":material/warning:")
        if not rep["alarms"]:
            st.success("No drift alarm.")
        st.json({k: rep[k] for k in ("reward", "length", "diversity", "human")}, expanded=False)

st.subheader("Reward-model versions")
versions = store.reward_versions(cid)
if not versions:
    st.info("No reward-model version registered or tested yet.")
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
    column_order=[
        "version",
        "name",
        "kind",
        "used_in_grows",
        "n_samples",
        "verdict",
        "failed_tests",
        "tested_at",
        "n_runs",
        "latest_run",
        "path",
        "registered_at",
    ],
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
