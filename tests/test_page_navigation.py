"""The navigation each role gets, the role check at the top of every page, and every governance page
rendering on a real campaign."""

from __future__ import annotations

import os

import pytest
from apptest_helpers import ANNOTATOR, AUDITOR, OPERATOR, ROOT, app, texts
from streamlit.testing.v1 import AppTest


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
    for page in ("drift", "agreement", "reward_tests"):
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
    for page in ("reward_tests", "drift", "agreement", "rate", "users"):
        at.switch_page(f"app_pages/{page}.py").run()
        assert not at.exception, (page, at.exception)
        assert "needs store methods" not in texts(at, "info"), page
