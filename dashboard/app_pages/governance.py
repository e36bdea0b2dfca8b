"""Governance (operators and auditors): every gate check of a campaign in the order it ran, what paused it
and what to do about it (override once, change the criteria, or wait for ratings), how the validation
reward and the audit metrics moved apart per checkpoint and per Grow step, and the final policy beside BC.
Operators also build rating tasks here (one click: BC vs the latest checkpoint on validation sources).
"""

import streamlit as st

from dashboard import governance_panel as gov
from dashboard import queries
from dashboard.auth import require_page
from dashboard.service import service

user = require_page("governance")
svc = service()
st.title("Governance")
st.caption(
    "Gates run where the evidence is: after each Grow is scored, before each Grow, after each Improve "
    "(checkpoint audit) and before the final policy is accepted. Every check is stored with its figures."
)
cid = queries.pick_campaign("gov_pick")
if cid is None:
    st.info("No campaigns yet.")
    st.stop()
if msg := st.session_state.pop("gov_msg", None):
    st.toast(msg)
running = svc.running(cid)


@st.fragment(run_every="3s" if running else None)
def body() -> None:
    if svc.running(cid) != running:
        st.rerun()  # started or stopped meanwhile: redraw the buttons and stop (or start) polling
    store = svc.store
    row = store.campaign(cid)
    checks = store.gate_checks(cid)
    status = queries.status(cid, queries.stamp(cid) + (checks[-1]["id"] if checks else 0,))
    flagged = store.flagged_policies(cid)
    metrics = gov.audit_metrics(row["config"])
    names = [m for m, _ in metrics]
    st.markdown(f"**{gov.summary_line(checks, flagged)}** · state `{row['state']}`")
    gov.paused_box(svc, cid, row, checks, user)

    st.subheader("Timeline")
    gov.timeline(gov.timeline_rows(checks, store.checkpoint_figures(cid), names))
    if not names:
        st.caption("This campaign names no [[audit]] metric: the audit gate has nothing to compare.")

    st.subheader("Reward against the audit")
    gov.divergence(store, cid, status, metrics, flagged)

    st.subheader("Final policy")
    gov.final_section(store, cid, status, names)


body()

if user["role"] == "operator":
    st.subheader("Rating tasks")
    with st.expander("Create blind side-by-side rating tasks", icon=":material/add_task:", expanded=False):
        gov.rating_tasks_form(svc.store, cid)
