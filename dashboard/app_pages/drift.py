"""Drift audit (auditor; operators too): drift statistics between Grow steps with alarms highlighted, the event
log (who changed what, gates hit) and reward-model versions; export of the event log.
"""

import json

import streamlit as st

from dashboard import data
from dashboard.auth import require_page, service

require_page("drift")
store = service().store
st.title("Drift audit")
cid = data.pick_campaign("drift_pick")
if cid is None:
    st.info("No campaigns yet.")
    st.stop()

st.subheader("Drift between Grow steps")
if not hasattr(store, "drift_grows"):
    st.info("Drift statistics need the governance module, which this store does not provide yet.",
            icon=":material/construction:")
else:
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

st.subheader("Event log")
events = store.recent_events(cid, 1000)
st.dataframe([{k: e[k] for k in ("id", "ts", "actor", "kind", "state", "message")} for e in events],
             hide_index=True, key="drift_events")
st.download_button("Export the event log (JSON)", json.dumps(events, default=str, indent=1), f"{cid}-events.json",
                   mime="application/json", key="drift_export")
