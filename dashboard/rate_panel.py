"""The Rate page's parts: the operators' task form, one blind task with its scores, the keyboard shortcuts.

Keys (a script in the app's own document, installed once per browser tab; it only acts while a task is on the
screen and no text field has the focus): 0..6 score the highlighted candidate and move the highlight to the
other one, Left / Right move the highlight (Tab too while no control has the focus, so Tab still walks the
page's controls for keyboard navigation), Enter clicks Submit. With a candidate still unscored, Enter moves
the highlight to it and the page says which candidate is missing (`missing_note`); the score already chosen
stays. The script clicks the page's own widgets, so a rating made from the keyboard is the same rating a
click makes. It carries nothing about the task: no text, reward, policy name, model id or task id (widgets
are keyed by an opaque view token).

The task on the screen is pinned in session state by its view token (`shown_task`) and Submit / Skip act on
that token in their callbacks (`submit`, `skip`), so a click always names the task it was made on; what the
store made of it stays on the page (`show_outcome`) until the next Submit or Skip.

Sources and candidates are drawn as plain text (st.text, st.code): Markdown or HTML a model wrote is shown
literally, so it can neither restyle the page nor hint at which policy wrote it.
"""

from __future__ import annotations

import duckdb
import streamlit as st

SIDES = ("left", "right")
SCALE = "Score (0 = useless, 6 = perfect)"

KEYS_JS = """
<style>
body[data-rg-side="left"] [class*="st-key-rate_side_left"],
body[data-rg-side="right"] [class*="st-key-rate_side_right"] {
  outline: 3px solid #ff4b4b; outline-offset: 6px; border-radius: 0.5rem; }
</style>
<script>
(() => {
  const doc = document;
  if (window.__restgovRateKeys) return;
  window.__restgovRateKeys = true;
  const q = (sel) => doc.querySelector(sel);
  const taskId = () => {  // the opaque view token of the task on the screen
    const el = q('[class*="st-key-rate_submit_"]');
    const m = el && el.className.match(/st-key-rate_submit_([0-9a-f]+)/);
    return m ? m[1] : null;
  };
  const side = () => {
    const t = taskId();
    if (doc.body.dataset.rgTask !== t) {  // a new task starts on the left candidate
      doc.body.dataset.rgTask = t;
      doc.body.dataset.rgSide = "left";
    }
    return doc.body.dataset.rgSide;
  };
  const setSide = (s) => { side(); doc.body.dataset.rgSide = s; };
  const typing = (el) =>
    el && (el.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(el.tagName));
  const options = (s) => Array.from(doc.querySelectorAll(`[class*="st-key-rate_${s}_"] button`));
  const chosen = (b) =>
    (b.getAttribute("data-testid") || "").endsWith("Active") || b.getAttribute("aria-checked") === "true";
  const scored = (s) => options(s).some(chosen);
  const submit = (tries) => {
    const b = q('[class*="st-key-rate_submit_"] button');
    if (b && !b.disabled) b.click();
    // the page is being redrawn
    else if (tries > 0) setTimeout(() => submit(tries - 1), 100);
  };
  side();
  doc.addEventListener("keydown", (e) => {
    if (taskId() === null || e.ctrlKey || e.metaKey || e.altKey || typing(e.target)) return;
    const s = side();
    if (/^[0-6]$/.test(e.key)) {
      const b = options(s).find((x) => x.innerText.trim() === e.key);
      if (!b) return;
      if (!chosen(b)) b.click();  // clicking the chosen score again would clear it
      setSide(s === "left" ? "right" : "left");
    } else if (
      e.key === "ArrowLeft" || e.key === "ArrowRight" || (e.key === "Tab" && e.target === doc.body)
    ) {
      const flip = s === "left" ? "right" : "left";
      setSide(e.key === "ArrowLeft" ? "left" : e.key === "ArrowRight" ? "right" : flip);
    } else if (e.key === "Enter") {
      // Enter on another focused control (Skip, a link) keeps its own meaning; on a score it submits.
      if (e.target !== doc.body && !e.target.closest('[class*="st-key-rate_side_"]')) return;
      // A candidate without a score keeps (or gets) the highlight, so the next digit scores it and never
      // overwrites the other one; Submit then says which candidate is missing.
      const missing = ["left", "right"].filter((x) => !scored(x));
      if (missing.length && !missing.includes(s)) setSide(missing[0]);
      submit(30);
    } else {
      return;
    }
    e.preventDefault();
    e.stopPropagation();
  }, true);
})();
</script>
"""


def keyboard() -> None:
    """Install the shortcuts (once per tab; the page may draw this on every run)."""
    st.html(KEYS_JS, unsafe_allow_javascript=True, width="content")


FROM_SAMPLES, FROM_VALIDATION = "Grow samples (training sources)", "Validation outputs (greedy)"


def create_tasks_form(store, cid: str | None) -> None:
    """Operators: pair two policies' outputs on the same sources into rating tasks (sides drawn per task)."""
    origin = st.radio("Candidates from", (FROM_SAMPLES, FROM_VALIDATION), horizontal=True, key="rate_origin")
    # Only policies with outputs of that kind are offered, so every pair offered can be built; the default
    # pair is BC (or the reference) against the latest checkpoint.
    kind = "validation" if origin == FROM_VALIDATION else "samples"
    have = store.rateable_policies(cid)[kind] if cid else []
    if not have:
        st.caption(
            "No policy has "
            + ("validation outputs" if origin == FROM_VALIDATION else "generated samples")
            + " in this campaign yet."
        )
        return
    policies = ["reference", *have]
    c1, c2, c3, c4 = st.columns(4)
    base = "base" if "base" in have and len(have) > 1 else "reference"
    pa = c1.selectbox("Baseline policy", policies, index=policies.index(base), key="rate_pa")
    others = [p for p in policies if p != pa]
    pb = c2.selectbox("Policy under review", others, index=len(others) - 1, key="rate_pb")
    n = c3.number_input("Tasks", 1, 1000, 20, key="rate_n")
    req = c4.number_input("Ratings per task", 1, 10, 3, key="rate_req")
    st.caption(
        "Which policy is side A of a task, and the order each annotator sees the two in, are drawn at random."
        + (" Validation tasks are topped up to the number asked for." if origin == FROM_VALIDATION else "")
    )
    if st.button("Create tasks", key="rate_create") and cid:
        try:
            if origin == FROM_VALIDATION:
                out = store.create_gate_tasks(cid, pb, baseline=pa, n=int(n), required_ratings=int(req))
            else:
                out = store.create_rating_tasks(cid, pa, pb, int(n), int(req))
            st.success(f"{out['n_tasks']} tasks created.")
        except (ValueError, KeyError) as e:
            st.error(str(e))


def task_panel(task: dict) -> dict[str, int | None]:
    """The source and the two candidates side by side in this annotator's stored order, all as plain text;
    returns the scores chosen. Widgets are keyed by the view token, never by the task id."""
    st.markdown("**Source**")
    with st.container(key="rate_source", border=True):
        st.text(task["source"])
    scores = {}
    for col, side in zip(st.columns(2), SIDES):
        with col, st.container(key=f"rate_side_{side}"):
            st.markdown(f"**{label(side)}**")
            st.code(task[f"text_{side}"], language=None, wrap_lines=True)
            scores[side] = st.segmented_control(SCALE, list(range(7)), key=f"rate_{side}_{task['view']}")
    return scores


def _set_outcome(kind: str, text: str) -> None:
    """Keep a submit's outcome for the page; numbered so each click's message has a key of its own."""
    n = st.session_state.get("rate_outcome_n", 0) + 1
    st.session_state.rate_outcome_n = n
    st.session_state.rate_outcome = (n, kind, text)


def show_outcome() -> None:
    """The outcome of this session's last Submit or Skip (success, warning or error), until the next one."""
    out = st.session_state.get("rate_outcome")
    if out is not None:
        n, kind, text = out
        with st.container(key=f"rate_outcome_{n}"):
            getattr(st, kind)(text)


def shown_task(store, annotator: str, since) -> dict | None:
    """The task this page showed (pinned by its view token) while it still takes this annotator's rating, else
    the next one from the store; the new one is pinned. Says so when a pinned task closed meanwhile."""
    pinned = st.session_state.get("rate_view")
    task = None
    if pinned is not None and pinned[0] == annotator:
        task = store.view_task(pinned[1], annotator)
        if task is None:
            st.info(
                "The task you had open was completed by other annotators meanwhile (or rated in another "
                "tab); here is the next one."
            )
    if task is None:
        task = store.next_task(annotator, skipped_since=since)
    st.session_state.rate_view = (annotator, task["view"]) if task else None
    return task


def label(side: str) -> str:
    """The name a side has on the screen."""
    return f"Candidate {'A' if side == 'left' else 'B'}"


def submit(store, view: str, annotator: str) -> None:
    """Submit's callback: rate the task of `view` (the one the page showed) with the scores chosen on it,
    and keep the store's outcome for the page. Runs before the page is drawn again, whatever task it shows.
    With a candidate unscored nothing is stored and `missing_note` names it; the score chosen stays."""
    left, right = (st.session_state.get(f"rate_{side}_{view}") for side in SIDES)
    if left is None or right is None:
        st.session_state.rate_missing = view
        return
    st.session_state.pop("rate_missing", None)
    try:
        out = store.submit_view(view, annotator, left, right)
    except (duckdb.Error, ValueError, KeyError) as e:
        _set_outcome("error", f"Not stored: the store could not take this rating ({e}). Submit again.")
        return  # the task stays on the screen with its scores
    st.session_state.rate_view = None
    _set_outcome("success" if out.stored else "warning", out.reason)


def missing_note(view: str) -> None:
    """After a Submit of this task with a candidate unscored: "Not stored", naming the candidate(s) still to
    score, until they are scored (the keyboard highlight is then on the first of them)."""
    if st.session_state.get("rate_missing") != view:
        return
    missing = [label(side) for side in SIDES if st.session_state.get(f"rate_{side}_{view}") is None]
    if not missing:
        return
    with st.container(key="rate_missing"):
        if len(missing) == 2:
            st.warning("Not stored: score **Candidate A** and **Candidate B** (0..6), then submit.")
        else:
            st.warning(
                f"Not stored: **{missing[0]}** has no score yet. Score it too (0..6; from the keyboard, the "
                "highlight is on it), then submit."
            )


def skip(store, view: str, annotator: str) -> None:
    """Skip's callback: pass on the task of `view` (the one the page showed)."""
    st.session_state.rate_view = None
    st.session_state.pop("rate_outcome", None)
    try:
        store.skip_view(view, annotator)
    except KeyError:
        _set_outcome("warning", "Skip not recorded: this rating view was not served to you.")
    except duckdb.Error as e:
        _set_outcome("error", f"Skip not recorded: the store could not take it ({e}).")
