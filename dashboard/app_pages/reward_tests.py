"""Reward tests (operator, auditor): unit tests of reward models (repetition, permutation, filler, ...) per
reward-model version: pass/fail table with the worst examples, and the history across versions.
"""

import streamlit as st

from dashboard import data
from dashboard.auth import require_page, service

require_page("reward-tests")
store = service().store
st.title("Reward tests")
data.needs("reward_test_runs", "reward_test_results")
runs = store.reward_test_runs()
if not runs:
    st.info("No reward test runs yet. Run the suite with `restgov reward-test --reward ... --data ...` "
            "(running it from this page comes with the governance wiring).")
    st.stop()
st.subheader("History across reward-model versions")
st.dataframe([{k: r[k] for k in ("run_id", "reward_name", "reward_version", "created_at", "verdict", "n_tests", "n_failed")}
              for r in runs], hide_index=True, key="rt_runs")
run_id = st.selectbox("Run", [r["run_id"] for r in runs], key="rt_pick")
results = store.reward_test_results(run_id)
st.dataframe([{k: r[k] for k in ("name", "expectation", "tol", "n", "pass_rate", "mean_delta", "worst_delta", "passed")}
              for r in results], hide_index=True, key="rt_results")
for r in results:
    if r["worst_examples"] and r["passed"] is False:
        with st.expander(f"Worst examples: {r['name']}"):
            st.dataframe(r["worst_examples"], hide_index=True, key=f"rt_worst_{r['name']}")
