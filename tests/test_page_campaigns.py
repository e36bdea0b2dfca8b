"""Campaigns page: live progress from the controller, the campaign and step tables, creation from the
form and from an uploaded TOML with the config error at its field, pause / resume / stop."""

from __future__ import annotations

import pytest
from apptest_helpers import OPERATOR, _service, app, button, frame, texts
from conftest import write_tiny_campaign

from engine.config import load_config


@pytest.mark.slow
def test_controller_service_reports_live_progress(campaign):
    _, _, seen = campaign
    assert "grow 1" in seen["descs"] and seen["eta"]
    assert seen["losses"] >= 1 and seen["sps"]


@pytest.mark.slow
def test_campaigns_page_lists_and_shows_the_step_table(campaign):
    db, cid, _ = campaign
    at = app(db, OPERATOR, cid)
    assert not at.exception
    assert [t.value for t in at.title] == ["Campaigns"]
    table = frame(at, "stop reason")
    assert cid in list(table["id"]) and "DONE" in list(table["state"])
    steps = frame(at, "kept_mean_reward")
    assert list(steps["policy"]) == ["base", "g1-i1"] and steps["kept"].iloc[1] > 0
    assert "`DONE`" in texts(at, "markdown")
    assert at.button(key="ctl_start").disabled and at.button(key="ctl_pause").disabled
    assert at.button(key="ctl_stop").disabled  # DONE is final


@pytest.mark.slow
def test_form_shows_the_config_error_next_to_the_field(campaign):
    db, _, _ = campaign
    at = app(db, OPERATOR)
    at.number_input(key="form_grow.temperature").set_value(-1.0)
    at = button(at, "Create campaign").click().run()
    elements = list(_walk(at.main))
    i = next(k for k, e in enumerate(elements) if getattr(e, "label", None) == "Temperature")
    # The error is the element drawn right under the temperature field, inside the form.
    assert elements[i + 1].type == "error" and "grow.temperature = -1.0: must be > 0" in elements[i + 1].value


def _walk(node):
    for child in getattr(node, "children", {}).values():
        if getattr(child, "children", None):
            yield from _walk(child)
        else:
            yield child


@pytest.mark.slow
def test_uploaded_toml_errors_name_the_field_and_line_and_a_good_one_is_created(campaign, tmp_path):
    db, _, _ = campaign
    good = write_tiny_campaign(tmp_path / "up", grows=1, name="uploaded")
    bad = good.read_text().replace("temperature = 0.8", "temperature = -2.0")
    at = app(db, OPERATOR)
    at.text_input(key="new_toml_base").input(str(good.parent))
    at.file_uploader(key="new_toml").set_value(("bad.toml", bad.encode(), "application/toml"))
    at = at.run()
    at = at.button(key="new_toml_go").click().run()
    line = bad.splitlines().index("temperature = -2.0") + 1
    assert f"**grow.temperature** (line {line}) = `-2.0`: must be > 0" in texts(at)
    n_before = len(_service(db).store.campaigns())
    at.file_uploader(key="new_toml").set_value(("good.toml", good.read_bytes(), "application/toml"))
    at = at.run()
    at = at.button(key="new_toml_go").click().run()
    assert not at.exception and not texts(at)
    rows = _service(db).store.campaigns()
    assert len(rows) == n_before + 1 and rows[-1]["name"] == "uploaded" and rows[-1]["state"] == "CREATED"


@pytest.mark.slow
def test_pause_and_resume_from_the_page(campaign, tmp_path):
    db, _, _ = campaign
    svc = _service(db)
    cid = svc.create(load_config(write_tiny_campaign(tmp_path / "p", grows=1, name="pausable")), "olga")
    at = app(db, OPERATOR)
    at.session_state["cid"] = cid
    at = at.run()
    at = at.button(key="ctl_start").click().run()
    assert svc.running(cid)
    at = at.button(key="ctl_pause").click().run()
    assert svc.wait(cid, 60)
    assert svc.store.campaign(cid)["state"] == "PAUSED"
    at = at.run()
    assert not at.button(key="ctl_start").disabled and at.button(key="ctl_start").label == "Resume"
    at = at.button(key="ctl_stop").click().run()
    assert svc.store.campaign(cid)["state"] == "STOPPED"
    actors = {e["actor"] for e in svc.store.recent_events(cid, 20, kinds=["request", "state"])}
    assert "olga" in actors
