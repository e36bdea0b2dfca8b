"""Rate (annotator; operators too): one side-by-side task at a time, blind, in this annotator's stored order.

Scores 0..6 for each candidate (the paper's protocol); ratings are append-only in the store.
"""

import streamlit as st

from dashboard import data
from dashboard.auth import require_page, service

user = require_page("rate")
store = service().store
st.title("Rate")
data.needs("next_task", "submit_rating", "ratings")
if user["role"] == "operator":
    with st.expander("Create rating tasks (operators)", icon=":material/add_task:"):
        cid = data.pick_campaign("rate_pick")
        policies = ["reference"] + [c["policy"] for c in store.checkpoints(cid)] if cid else []
        c1, c2, c3, c4 = st.columns(4)
        pa = c1.selectbox("Baseline policy (a)", policies, index=min(1, len(policies) - 1), key="rate_pa")
        pb = c2.selectbox("Policy under review (b)", policies, index=len(policies) - 1, key="rate_pb")
        n = c3.number_input("Tasks", 1, 1000, 20, key="rate_n")
        req = c4.number_input("Ratings per task", 1, 10, 3, key="rate_req")
        if st.button("Create tasks", key="rate_create") and cid:
            try:
                st.success(f"{store.create_rating_tasks(cid, pa, pb, int(n), int(req))['n_tasks']} tasks created.")
            except (ValueError, KeyError) as e:
                st.error(str(e))

task = store.next_task(user["name"])
if task is None:
    st.success("Nothing left to rate for you. Thank you!")
    st.stop()
st.caption(f"Task {task['task_id']} · {task['n_ratings']} of {task['required_ratings']} ratings so far")
st.markdown("**Source**")
st.info(task["source"])
scores = {}
for col, side in zip(st.columns(2), ("left", "right")):
    with col:
        st.markdown(f"**Candidate {'A' if side == 'left' else 'B'}**")
        st.code(task[f"text_{side}"], language=None, wrap_lines=True)
        scores[side] = st.segmented_control("Score (0 = useless, 6 = perfect)", list(range(7)),
                                            key=f"rate_{side}_{task['task_id']}")
if st.button("Submit", key=f"rate_submit_{task['task_id']}", type="primary",
             disabled=None in scores.values()):
    store.submit_rating(task["task_id"], user["name"], scores["left"], scores["right"], task["shown_order"])
    st.rerun()
