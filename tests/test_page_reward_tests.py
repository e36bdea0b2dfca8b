"""Reward tests page: read-only for auditors; operators run the suite in the background and read
its results."""

from __future__ import annotations

import time

import pytest
from apptest_helpers import AUDITOR, OPERATOR, _service, app, button, frame, texts


def test_reward_tests_page_runs_the_suite_in_the_background(synthetic):
    db, cid = synthetic
    store = _service(db).store
    at = app(db, AUDITOR, cid)
    at.switch_page("app_pages/reward_tests_page.py").run()
    assert not at.exception and "Read-only" in texts(at, "caption")
    assert not [b for b in at.button if b.label == "Run the suite"]  # auditors cannot start a run
    at = app(db, OPERATOR, cid)
    at.switch_page("app_pages/reward_tests_page.py").run()
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


@pytest.fixture(scope="module")
def rated(tmp_path_factory):
    from rating_store import rating_campaign

    return rating_campaign(tmp_path_factory.mktemp("rt-rated"))


def _save_run(store, version: str, config: dict) -> str:
    test = {"name": "repeat_output", "expectation": "lower", "tol": 0.1, "n": 4, "pass_rate": 1.0}
    return store.save_reward_test_run(
        {
            "reward_name": "numeric",
            "reward_version": version,
            "n_pairs": 4,
            "mean_reward": 0.5,
            "std": 0.1,
            "config": config,
            "tests": [test | {"mean_delta": -0.2, "worst_delta": -0.1, "verdict": "pass"}],
        }
    )


def test_reward_versions_and_runs_are_the_campaigns_own(rated):
    """Reward tests page, Drift page and audit report list the runs and versions of this campaign's rewards
    (its samples', its config's, refreshes of them), never another campaign's."""
    from dashboard.report_html import build_audit_report, config_reward_version

    db, cid = rated
    store = _service(db).store
    own = _save_run(store, "v-rated", {"campaign": cid})
    refresh = _save_run(store, "v-refresh", {"campaign": "elsewhere", "refresh_of": "v-rated"})
    other = _save_run(store, "v-other", {"campaign": "another-campaign"})
    cfg_version = config_reward_version(store.campaign(cid)["config"])
    assert cfg_version and cfg_version not in ("v-rated", "v-refresh")

    at = app(db, AUDITOR, cid)
    at.switch_page("app_pages/reward_tests_page.py").run()
    assert not at.exception
    assert set(frame(at, "failed tests")["run_id"]) == {own, refresh}
    assert {o.split(" · ")[0] for o in at.selectbox(key="rt_pick").options} == {own, refresh}
    at.switch_page("app_pages/drift.py").run()
    assert not at.exception
    assert set(frame(at, "used_in_grows")["version"]) == {"v-rated", "v-refresh", cfg_version}
    doc = build_audit_report(store, cid)
    assert own in doc and refresh in doc and other not in doc and "v-other" not in doc


def test_reward_test_options_clear_an_old_error_and_unknown_tests_are_refused(rated):
    from dashboard.reward_jobs import test_names
    from dashboard.reward_panel import jobs

    db, cid = rated
    at = app(db, OPERATOR, cid)
    at.switch_page("app_pages/reward_tests_page.py").run()
    at.radio(key="rt_kind").set_value("samples").run()
    at.number_input(key="rt_min_reward").set_value(2.0).run()
    at = button(at, "Run the suite").click().run()
    job = jobs().jobs(cid)[0]
    jobs().wait(job["job"], 30)  # no sample scores 2.0: the run fails before any worker starts
    at.run()
    assert "Reward test run failed" in texts(at) and "reward >= 2.0" in texts(at)
    at.radio(key="rt_kind").set_value("validation").run()
    assert not at.exception and "Reward test run failed" not in texts(at)

    store = _service(db).store
    valid = test_names(_campaign_reward(store, cid))
    with pytest.raises(ValueError) as e:
        jobs().start(cid, "validation", 4, "olga", skip=["empty_output", "no_such_test"])
    assert "no_such_test" in str(e.value) and ", ".join(valid) in str(e.value)
    assert "empty_output;" not in str(e.value)


def _campaign_reward(store, cid):
    from engine.config import config_from_dict

    return config_from_dict(store.campaign(cid)["config"]).reward
