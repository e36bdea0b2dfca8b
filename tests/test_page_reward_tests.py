"""Reward tests page: read-only for auditors; operators run the suite in the background and read
its results."""

from __future__ import annotations

import time

from apptest_helpers import AUDITOR, OPERATOR, _service, app, button, frame, texts


def test_reward_tests_page_runs_the_suite_in_the_background(synthetic):
    db, cid = synthetic
    store = _service(db).store
    at = app(db, AUDITOR, cid)
    at.switch_page("app_pages/reward_tests.py").run()
    assert not at.exception and "Read-only" in texts(at, "caption")
    assert not [b for b in at.button if b.label == "Run the suite"]  # auditors cannot start a run
    at = app(db, OPERATOR, cid)
    at.switch_page("app_pages/reward_tests.py").run()
    assert "never tested" in texts(at, "caption")
    at.number_input(key="rt_n").set_value(12)
    at = button(at, "Run the suite").click().run()
    assert not at.exception
    deadline = time.time() + 120
    while not store.reward_test_runs() and time.time() < deadline:
        time.sleep(0.2)
    (run,) = store.reward_test_runs()
    assert (
        run["n_pairs"] == 12
        and run["config"]["campaign"] == cid
        and run["config"]["reference_set"] == "validation"
    )
    at.run()
    assert not at.exception
    history = frame(at, "failed tests")
    assert list(history["run_id"]) == [run["run_id"]] and list(history["verdict"]) == [run["verdict"]]
    results = frame(at, "pass_rate")
    assert len(results) == run["n_tests"] and set(results["verdict"]) <= {"pass", "fail", "skip"}
    assert [e.key for e in at.get("plotly_chart")] == ["rt_matrix"]
    assert f"latest run **{run['verdict']}**" in texts(at, "caption")
    ev = store.recent_events(cid, 1, kinds=["reward_tests"])[0]
    assert ev["actor"] == "olga" and run["reward_version"] in ev["message"]
