"""The navigation each role gets, the role check at the top of every page, and every governance page
rendering on a real campaign."""

from __future__ import annotations

import os

import pytest
from apptest_helpers import ANNOTATOR, AUDITOR, OPERATOR, ROOT, _service, app, texts
from conftest import write_tiny_campaign
from streamlit.testing.v1 import AppTest

from engine.config import load_config


def test_annotator_navigation_has_only_rate(empty_db):
    at = app(empty_db, ANNOTATOR)
    assert [t.value for t in at.title] == ["Rate"]
    for page in ("campaigns", "stopping", "distributions", "drift", "users"):
        with pytest.raises(ValueError, match="Could not find a navigation page"):
            at.switch_page(f"app_pages/{page}.py")


def test_each_page_checks_the_role_itself(empty_db):
    """Run an operator page file directly (as if the navigation had been bypassed): it refuses an
    annotator."""
    os.environ["RESTGOV_DB"] = str(empty_db)
    for page, user in (
        ("campaigns", ANNOTATOR),
        ("stopping", AUDITOR),
        ("distributions", ANNOTATOR),
        ("users", AUDITOR),
    ):
        at = AppTest.from_file(str(ROOT / "dashboard" / "app_pages" / f"{page}.py"), default_timeout=30)
        at.session_state["user"] = user
        at.run()
        assert "Access refused" in texts(at), page
        assert not at.title, f"{page} drew its content for {user['role']}"


def test_auditor_sees_audit_pages_only(empty_db):
    at = app(empty_db, AUDITOR)
    assert [t.value for t in at.title] == ["Reward distributions"]
    for page in ("drift", "agreement", "reward_tests_page"):
        at.switch_page(f"app_pages/{page}.py").run()
        assert not at.exception, page
    with pytest.raises(ValueError):
        at.switch_page("app_pages/campaigns.py")


def _rendered(at: AppTest) -> str:
    """Every element of the rendered page (main area and sidebar), as its protobuf text."""
    out: list[str] = []

    def walk(node) -> None:
        if getattr(node, "proto", None) is not None:
            out.append(str(node.proto))
        for child in getattr(node, "children", {}).values():
            walk(child)

    walk(at._tree)
    return "\n".join(out)


def test_store_path_is_shown_to_operators_only(empty_db):
    """The sidebar names the database file for operators; annotators and auditors never see the path."""
    path = str(empty_db.resolve())
    operator = app(empty_db, OPERATOR)
    assert path in _rendered(operator)
    assert any(path in c.value for c in operator.sidebar.caption)
    for who in (ANNOTATOR, AUDITOR):
        at = app(empty_db, who)
        assert not at.exception, who
        page = _rendered(at)
        assert f"Signed in as **{who['name']}**" in page  # the sidebar was drawn
        assert path not in page and str(empty_db) not in page and empty_db.name not in page, who


@pytest.mark.slow
def test_governance_pages_render_on_a_real_campaign(campaign):
    db, cid, _ = campaign
    at = app(db, OPERATOR, cid)
    for page in ("reward_tests_page", "drift", "agreement", "rate", "users"):
        at.switch_page(f"app_pages/{page}.py").run()
        assert not at.exception, (page, at.exception)
        assert "needs store methods" not in texts(at, "info"), page


@pytest.fixture
def two_campaigns(empty_db, tmp_path):
    """Two campaigns created (never run) on the empty store; returns (db, [older id, newer id])."""
    svc = _service(empty_db)
    ids = [
        svc.create(load_config(write_tiny_campaign(tmp_path / name, grows=1, name=name)), "olga")
        for name in ("alpha", "beta")
    ]
    return empty_db, ids


def test_campaign_picker_keeps_a_choice_and_carries_it_to_other_pages(two_campaigns):
    """A campaign chosen in a picker stays chosen on later reruns and is the one the next page opens on; the
    picker's label gives the chosen campaign's state as of this run."""
    db, (alpha, beta) = two_campaigns
    at = app(db, OPERATOR)  # Campaigns: the newest campaign first
    assert at.selectbox(key="campaigns_pick").value == beta
    at = at.selectbox(key="campaigns_pick").set_value(alpha).run()
    at = at.run()  # any later rerun (another widget, a fragment's full rerun) keeps the choice
    pick = at.selectbox(key="campaigns_pick")
    assert pick.value == alpha and pick.label == "Campaign · CREATED"
    at = at.button(key="ctl_stop").click().run()  # Stop: the label follows in the same run
    assert at.selectbox(key="campaigns_pick").label == "Campaign · STOPPED"
    at.session_state["cid"] = beta  # chosen elsewhere (a campaign just created selects itself this way)
    assert at.run().selectbox(key="campaigns_pick").value == beta
    at = at.selectbox(key="campaigns_pick").set_value(alpha).run()
    for page, key in (("distributions", "dist_pick"), ("drift", "drift_pick"), ("stopping", "stop_pick")):
        at = at.switch_page(f"app_pages/{page}.py").run()
        assert not at.exception and at.selectbox(key=key).value == alpha, page
    at = at.selectbox(key="stop_pick").set_value(beta).run()
    assert f"Campaign `{beta}` · state `CREATED`" in texts(at, "markdown")
    at = at.switch_page("app_pages/governance.py").run()
    assert at.selectbox(key="gov_pick").value == beta
    assert at.selectbox(key="gov_pick").options == [f"beta · {beta}", f"alpha · {alpha}"]
