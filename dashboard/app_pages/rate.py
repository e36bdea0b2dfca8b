"""Rate (annotator; operators too): one side-by-side task at a time, blind, in this annotator's stored order.

Scores 0..6 for each candidate (the paper's protocol); ratings and skips are append-only in the store. A task
skipped is not served again in this browser session. Keyboard: digits score, Enter submits
(dashboard/rate_panel.py). The page names no policy and no task: it knows the task only by the opaque token of
this annotator's view, and the store maps the scores back to the stored sides.

The page keeps the token of the task it showed (session state) and shows that task until it is submitted or
skipped. Submit and Skip act through callbacks given that token, so a click rates the task the page showed
even when the store would now serve another one; the store's outcome (stored, or refused with its reason:
already rated, complete meanwhile, not this annotator's view) is shown above the next task. A click is never
dropped without a message.
"""

import streamlit as st

from dashboard import queries, rate_panel
from dashboard.auth import require_page
from dashboard.service import service
from engine.store import now

user = require_page("rate")
store = service().store
st.title("Rate")
queries.needs("next_task", "submit_view", "ratings", "skip_view")
if user["role"] == "operator":
    with st.expander("Create rating tasks (operators)", icon=":material/add_task:"):
        rate_panel.create_tasks_form(store, queries.pick_campaign("rate_pick"))

since = st.session_state.setdefault("rate_since", now())  # skips of this session keep their task away
prog = store.annotator_progress(user["name"], since)
st.caption(
    f"You rated {prog['rated']} · {prog['left']} left for you"
    + (f" · {prog['skipped']} skipped this session" if prog["skipped"] else "")
)
rate_panel.show_outcome()
task = rate_panel.shown_task(store, user["name"], since)
if task is None:
    st.success("Nothing left to rate for you. Thank you!")
    if prog["skipped"] and st.button(f"Show the {prog['skipped']} skipped task(s) again", key="rate_unskip"):
        st.session_state.rate_since = now()
        st.rerun()
    st.stop()
view = task["view"]
st.session_state.rate_holds = True  # this session holds the task's place until it rates, skips or leaves
st.caption(f"{task['n_ratings']} of {task['required_ratings']} ratings so far")
rate_panel.task_panel(task)
rate_panel.missing_note(view)
c1, c2, _ = st.columns([1, 1, 4])
# No tooltips on these buttons: a tooltip opens above its button, over the score buttons; the caption says it.
c1.button(
    "Submit",
    key=f"rate_submit_{view}",
    type="primary",
    on_click=rate_panel.submit,
    args=(store, view, user["name"]),
)
c2.button("Skip", key=f"rate_skip_{view}", on_click=rate_panel.skip, args=(store, view, user["name"]))
st.caption(
    "Keyboard: **0**–**6** score the highlighted candidate (the highlight then moves to the other one), "
    "**←** / **→** / **Tab** move the highlight, **Enter** submits (or, with a candidate still unscored, "
    "moves the highlight to it and says so). **Skip** passes on this task: it is "
    "not shown to you again in this session."
)
rate_panel.keyboard()
