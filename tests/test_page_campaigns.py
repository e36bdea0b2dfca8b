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


def test_form_shows_every_field_error_at_once_and_refuses_an_empty_name(empty_db):
    at = app(empty_db, OPERATOR)
    at.text_input(key="form_name").input("  ")
    at.number_input(key="form_grow.temperature").set_value(-1.0)
    at.number_input(key="form_grow.samples_per_source").set_value(0)
    at = button(at, "Create campaign").click().run()
    assert not at.exception
    elements = list(_walk(at.main))
    for label, message in (
        ("Name", "name is empty: give the campaign a name"),
        ("Samples per source (K)", "grow.samples_per_source = 0: must be >= 1"),
        ("Temperature", "grow.temperature = -1.0: must be > 0"),
    ):  # each error is drawn right under its field
        i = next(k for k, e in enumerate(elements) if getattr(e, "label", None) == label)
        assert elements[i + 1].type == "error" and message in elements[i + 1].value, label
    assert "fields need a change" in texts(at)
    assert not _service(empty_db).store.campaigns()  # nothing created, not even as "campaign"


def test_budgets_are_labelled_with_the_measured_time_per_grow(empty_db):
    at = app(empty_db, OPERATOR)
    for recipe in ("arith", "reward-hack"):
        at.selectbox(key="new_recipe").set_value(recipe).run()
        small = next(o for o in at.radio(key="new_budget").options if o.startswith("small"))
        assert "per Grow on a 2-vCPU AMD EPYC machine (CPU only)" in small and "few minutes" not in small


def test_tiny_recipe_writes_the_config_it_runs(empty_db):
    """The tiny budget's overrides are in the campaign.toml on disk: the file a user reads is what runs."""
    from engine.recipes import TINY_OVERRIDES

    cfg, path = _service(empty_db).recipe_config("arith", "tiny")
    on_disk = load_config(path)
    assert on_disk == cfg and cfg.grow.samples_per_source == TINY_OVERRIDES["grow"]["samples_per_source"]
    assert (
        cfg.name == "arith-tiny"
        and "samples_per_source = 2  # tiny budget (the recipe: 8)" in path.read_text()
    )


@pytest.mark.slow
def test_eta_comes_from_the_campaigns_measured_steps(campaign, tmp_path):
    """The Grow ETA is the seconds per source of the campaign's finished Grow steps; with none finished and
    no shard in yet, the page says 'estimating'."""
    from dashboard.campaigns_live import step_eta

    db, cid, _ = campaign
    store = _service(db).store
    (g1,) = [s for s in store.steps(cid) if s["step_key"] == "g1-grow"]
    (n,) = (
        store.cursor()
        .execute("SELECT count(DISTINCT source_id) FROM samples WHERE campaign_id = ? AND grow = 1", [cid])
        .fetchone()
    )
    left, why = step_eta(store, cid, {"step_key": "g2-grow", "done": 10, "total": n})
    assert left == pytest.approx((n - 10) * g1["seconds"] / n) and why == "from 1 finished grow step"
    fresh = _service(db).create(load_config(write_tiny_campaign(tmp_path / "e", grows=1, name="eta")), "olga")
    assert step_eta(store, fresh, {"step_key": "g1-grow", "done": 10, "total": n}) == (None, "estimating")
    _service(db).stop(fresh, "olga")
