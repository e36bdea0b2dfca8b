"""The Reward tests page's parts: the operators' run form, the polled job status, and one run's results.

Runs happen in dashboard.reward_jobs (a worker process, watched from a background thread of the server); the
page polls with an st.fragment and redraws itself once when the run ends, with the new run selected.
"""

from __future__ import annotations

import streamlit as st

from dashboard.reward_jobs import REFERENCE_SETS, RewardTestJobs, campaign_config, test_names
from dashboard.service import service, settings

RESULT_COLUMNS = ("test", "verdict", "expectation", "tol", "n", "pass_rate", "mean_delta", "worst_delta")


@st.cache_resource(show_spinner=False)
def _jobs(db: str) -> RewardTestJobs:
    return RewardTestJobs(service().store)


def jobs() -> RewardTestJobs:
    """The server's reward-test runs (shared by every session on this database)."""
    return _jobs(settings().db)


@st.cache_data(ttl=600, show_spinner="Reading the campaign's reward ...")
def reward_version(cid: str, config_json: str) -> str | None:
    """The content hash of the campaign's reward (what the gate and the runs are keyed by), computed without
    importing user code in the server: None for a callable whose function cannot be read from its file."""
    from engine.rewards import reward_version as version

    return version(campaign_config(service().store, cid)[0].reward, import_code=False)


def _dismiss(cid: str) -> None:
    """on_change of the run options: an error (of the last start, or of the last run) belongs to the options
    it was made with, so changing one clears it."""
    st.session_state.pop("rt_error", None)
    latest = jobs().jobs(cid)
    st.session_state.rt_dismissed = latest[0]["job"] if latest else None


def run_form(store, cid: str, user: dict) -> None:
    """Operators: run the suite on the campaign's reward and a reference set, in the background."""
    cfg, _ = campaign_config(store, cid)
    r = cfg.reward
    st.markdown(
        f"Reward of this campaign: **{r.kind}**"
        + (f" · `{r.path or r.function}`" if r.path or r.function else "")
    )
    changed = {"on_change": _dismiss, "args": (cid,)}
    kind = st.radio(
        "Reference set", list(REFERENCE_SETS), format_func=REFERENCE_SETS.get, key="rt_kind", **changed
    )
    c1, c2, c3 = st.columns(3)
    n = c1.number_input("Pairs (at most)", 1, 100_000, cfg.eval.max_sources or 200, key="rt_n", **changed)
    seed = c2.number_input("Seed", 0, 2**31 - 1, cfg.seed, key="rt_seed", **changed)
    floor = c3.number_input(
        "Samples only: reward at least",
        value=None,
        format="%.3f",
        key="rt_min_reward",
        help="Keep only samples the reward scored at least this (the good outputs).",
        disabled=kind != "samples",
        **changed,
    )
    names = test_names(r)
    skip = st.multiselect(
        "Tests to leave out",
        names,
        [t for t in cfg.gates.reward_tests_skip if t in names],
        key="rt_skip",
        **changed,
    )
    if st.button("Run the suite", type="primary", icon=":material/play_arrow:", key="rt_go"):
        st.session_state.pop("rt_error", None)
        st.session_state.rt_dismissed = None
        try:
            jobs().start(
                cid,
                kind,
                int(n),
                user["name"],
                seed=int(seed),
                skip=skip,
                min_reward=floor if kind == "samples" else None,
            )
        except ValueError as e:
            st.session_state.rt_error = str(e)
        else:
            st.rerun()  # the status fragment below starts polling
    if err := st.session_state.get("rt_error"):
        st.error(err, icon=":material/error:")


def job_status(cid: str) -> None:
    """The latest run started here for this campaign; polled every second while it runs. A finished run's
    outcome stays until the run options change."""
    active = jobs().running(cid)

    @st.fragment(run_every="1s" if active else None)
    def status() -> None:
        js = jobs().jobs(cid)
        if not js:
            return
        j = js[0]
        if jobs().running(cid) != active:
            st.session_state.rt_new_run = j["run_id"]
            st.rerun()  # finished: redraw the history with the new run selected
        if j["status"] in ("failed", "done") and st.session_state.get("rt_dismissed") == j["job"]:
            return
        if j["status"] == "failed":
            st.error(f"Reward test run failed: {j['error']}", icon=":material/error:")
        elif j["status"] == "done":
            failed = ", ".join(j["failed"]) or "none"
            (st.success if j["verdict"] == "pass" else st.warning)(
                f"Run `{j['run_id']}` ({j['actor']}): **{j['verdict']}**; failed tests: {failed}."
            )
        else:
            import time

            st.info(
                f"Running ({j['actor']}, {time.time() - j['t0']:.0f} s): {j['status']} ...",
                icon=":material/hourglass_top:",
            )

    status()


def history_rows(history: list[dict]) -> list[dict]:
    return [
        {
            "reward_version": h["reward_version"],
            "reward": h["reward_name"],
            "tested at": h["created_at"],
            "verdict": h["verdict"],
            "failed tests": ", ".join(h["failed_tests"]),
            "tests": h["n_tests"],
            "pairs": h["n_pairs"],
            "reference set": h["reference_set"],
            "campaign": h["campaign"],
            "run_id": h["run_id"],
        }
        for h in history
    ]


def run_results(store, run_id: str) -> None:
    """One run: the pass/fail table and the worst examples of every failed test."""
    results = store.reward_test_results(run_id)
    verdict = {True: "pass", False: "fail", None: "skip"}
    st.dataframe(
        [{k: (verdict[r["passed"]] if k == "verdict" else r[k]) for k in RESULT_COLUMNS} for r in results],
        hide_index=True,
        key="rt_results",
        column_config={"pass_rate": st.column_config.NumberColumn("pass rate", format="percent")},
    )
    for r in results:
        if r["worst_examples"] and r["passed"] is False:
            with st.expander(f"Worst examples: {r['test']} ({r['expectation']})", icon=":material/error:"):
                st.dataframe(r["worst_examples"], hide_index=True, key=f"rt_worst_{r['test']}")
