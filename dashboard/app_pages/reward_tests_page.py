"""Reward tests (operator, auditor): unit tests of reward models (repetition, permutation, filler, ...) per
reward-model version. Operators run the suite on a campaign's reward in a worker (dashboard/reward_jobs.py);
everyone here reads the pass/fail table with the worst examples and the history across versions.
"""

import json

import streamlit as st

from dashboard import charts, queries, reward_panel
from dashboard.auth import require_page
from dashboard.service import service

user = require_page("reward-tests")
store = service().store
st.title("Reward tests")
cid = queries.pick_campaign("rt_campaign")
if cid:
    version = reward_panel.reward_version(
        cid, json.dumps(store.campaign(cid)["config"]["reward"], sort_keys=True)
    )
    latest = store.latest_reward_test_run(version) if version else None
    if version is None:
        st.caption(
            "This campaign's reward is code whose version is known once a worker has loaded it: "
            "see the history below."
        )
    else:
        st.caption(
            f"This campaign's reward version `{version}`: "
            + (
                f"latest run **{latest['verdict']}** ({latest['created_at']:%Y-%m-%d %H:%M})"
                if latest
                else "never tested"
            )
        )
    if user["role"] == "operator":
        with st.expander(
            "Run the suite on this campaign's reward", expanded=latest is None, icon=":material/play_circle:"
        ):
            reward_panel.run_form(store, cid, user)
    else:
        st.caption("Read-only: operators run the suite.")
    reward_panel.job_status(cid)

if not cid:
    st.info("No campaigns yet.")
    st.stop()
own = store.campaign_reward_versions(cid, [version] if version else [])
history = store.reward_test_history(own)
if not history:
    st.info(
        "No reward test run of this campaign's reward versions yet. An operator runs the suite above, "
        "or with `restgov reward-test --reward ... --data ...`."
    )
    st.stop()
st.subheader("History across reward-model versions")
st.caption(
    f"Runs of the {len(own)} reward version(s) of this campaign: those its samples were scored with, its "
    "config's reward and the refreshes of it. Other campaigns' rewards are left out."
)
st.dataframe(reward_panel.history_rows(history), hide_index=True, key="rt_runs")
st.plotly_chart(charts.reward_test_matrix(store.reward_test_matrix(versions=own)), key="rt_matrix")

st.subheader("One run: pass/fail and the worst examples")
if new := st.session_state.pop("rt_new_run", None):
    st.session_state.rt_pick = new
labels = {h["run_id"]: f"{h['run_id']} · {h['reward_version'][:12]} · {h['verdict']}" for h in history}
if st.session_state.get("rt_pick") not in labels:
    st.session_state.pop("rt_pick", None)  # a run of another campaign chosen before: start from the newest
run_id = st.selectbox("Run", list(labels), format_func=labels.get, key="rt_pick")
reward_panel.run_results(store, run_id)
