"""Stopping criteria page: edits validated as a whole config and logged; [stop] and [gates] saved from
the page."""

from __future__ import annotations

import pytest
from apptest_helpers import OPERATOR, _service, app, button, frame, texts
from conftest import write_tiny_campaign

from engine.config import load_config


@pytest.mark.slow
def test_stopping_criteria_edit_is_validated_and_logged(campaign):
    db, cid, _ = campaign
    at = app(db, OPERATOR, cid)
    at.switch_page("app_pages/stopping.py").run()
    # DONE is final: the form is read-only; a live-campaign edit takes the same service call, tested below.
    assert at.number_input(key=f"stop_{cid}_max_grow_steps").disabled
    svc = _service(db)
    from engine.config import ConfigError

    with pytest.raises(ConfigError) as e:
        svc.update_criteria(cid, "stop", {"max_grow_steps": 1, "window": 0}, "olga")
    assert e.value.field == "stop.window"
    changed = svc.update_criteria(cid, "stop", {"max_grow_steps": 3, "target_reward": 0.9}, "olga")
    assert changed == {"max_grow_steps": [1, 3], "target_reward": [None, 0.9]}
    assert svc.store.campaign(cid)["config"]["stop"]["max_grow_steps"] == 3
    ev = svc.store.recent_events(cid, 1, kinds=["criteria"])[0]
    assert ev["actor"] == "olga" and "stop.max_grow_steps: 1 -> 3" in ev["message"]
    assert svc.update_criteria(cid, "stop", {"max_grow_steps": 3}, "olga") == {}  # no change, no event
    svc.update_criteria(cid, "stop", {"max_grow_steps": 1, "target_reward": None}, "olga")
    assert "target_reward" not in svc.store.campaign(cid)["config"]["stop"]


@pytest.mark.slow
def test_stopping_page_saves_stop_and_gates_on_an_editable_campaign(campaign, tmp_path):
    db, _, _ = campaign
    svc = _service(db)
    cid = svc.create(load_config(write_tiny_campaign(tmp_path / "c", grows=1, name="editable")), "olga")
    at = app(db, OPERATOR, cid)
    at.switch_page("app_pages/stopping.py").run()
    at.number_input(key=f"stop_{cid}_window").set_value(0)
    at = button(at, "Save [stop]").click().run()
    assert "stop.window = 0: must be >= 1" in texts(at)
    at.number_input(key=f"stop_{cid}_window").set_value(2)
    at.number_input(key=f"stop_{cid}_min_improvement").set_value(0.01)
    at = button(at, "Save [stop]").click().run()
    assert not texts(at)
    at.selectbox(key=f"gates_{cid}_action").set_value("stop")
    at.checkbox(key=f"gates_{cid}_drift").check()
    at.text_input(key=f"gates_{cid}_reward_tests_skip").input("empty_output, copy_source")
    at = button(at, "Save [gates]").click().run()
    assert not texts(at)
    cfg = svc.store.campaign(cid)["config"]
    assert cfg["stop"]["window"] == 2 and cfg["stop"]["min_improvement"] == 0.01
    assert cfg["gates"]["action"] == "stop" and cfg["gates"]["drift"] is True
    assert cfg["gates"]["reward_tests_skip"] == ["empty_output", "copy_source"]
    history = frame(at, "actor")
    assert "olga" in list(history["actor"]) and any("stop.window: 1 -> 2" in m for m in history["message"])
    assert svc.stop(cid, "olga") and svc.store.campaign(cid)["state"] == "STOPPED"


def test_stopping_page_shows_every_field_error_and_refuses_unknown_reward_tests(empty_db, tmp_path):
    from dashboard.reward_jobs import test_names
    from engine.config import config_from_dict

    svc = _service(empty_db)
    cid = svc.create(load_config(write_tiny_campaign(tmp_path / "c", grows=1, name="criteria")), "olga")
    before = svc.store.campaign(cid)["config"]
    at = app(empty_db, OPERATOR, cid)
    at.switch_page("app_pages/stopping.py").run()
    at.number_input(key=f"stop_{cid}_window").set_value(0)
    at.number_input(key=f"stop_{cid}_max_grow_steps").set_value(-1)
    at = button(at, "Save [stop]").click().run()
    errors = texts(at)
    assert "stop.window = 0: must be >= 1" in errors and "stop.max_grow_steps = -1: must be >= 0" in errors
    at.number_input(key=f"stop_{cid}_window").set_value(2)
    at.number_input(key=f"stop_{cid}_max_grow_steps").set_value(1)
    at.text_input(key=f"gates_{cid}_reward_tests_skip").input("empty_output, no_such_test")
    at = button(at, "Save [gates]").click().run()
    valid = test_names(config_from_dict(before).reward)
    assert texts(at) == (
        "gates.reward_tests_skip: unknown test(s) no_such_test; the suite of this reward has: "
        + ", ".join(valid)
    )
    assert svc.store.campaign(cid)["config"]["gates"] == before["gates"]  # nothing saved
    svc.stop(cid, "olga")
