"""Sign-in page: the only page before sign-in, wrong and right passwords, local mode on loopback only."""

from __future__ import annotations

import pytest
from apptest_helpers import _service, app, button, texts


def test_sign_in_page_is_the_only_page_before_sign_in(empty_db):
    at = app(empty_db)
    assert not at.exception
    assert [t.value for t in at.title] == ["restgov"]
    assert {t.label for t in at.text_input} == {"User name", "Password"}
    with pytest.raises(ValueError, match="Could not find a navigation page"):
        at.switch_page("app_pages/campaigns.py")  # not registered at all: no URL reaches it


def test_wrong_password_is_refused_and_right_one_signs_in(empty_db):
    at = app(empty_db)
    at.text_input(key="login_name").input("olga")
    at.text_input(key="login_password").input("not-the-password")
    at = button(at, "Sign in").click().run()
    assert "Wrong user name or password" in texts(at)
    assert at.session_state["user"] is None
    at.text_input(key="login_password").input("operator-pass")
    at = button(at, "Sign in").click().run()
    assert not at.exception
    assert at.session_state["user"] == {"name": "olga", "role": "operator"}
    assert [t.value for t in at.title] == ["Campaigns"]
    events = _service(empty_db).store.recent_events(None, 10, kinds=["login"])
    assert [e["message"] for e in events[:2]] == ["olga signed in as operator", "failed sign-in for 'olga'"]


def test_local_mode_skips_sign_in_only_on_loopback(empty_db, monkeypatch):
    from streamlit import config

    monkeypatch.setenv("RESTGOV_LOCAL", "1")
    old = config.get_option("server.address")
    try:
        config.set_option("server.address", "0.0.0.0")
        assert [t.value for t in app(empty_db).title] == [
            "restgov"
        ]  # listening beyond this machine: sign-in stays
        config.set_option("server.address", "127.0.0.1")
        at = app(empty_db)
        assert at.session_state["user"] == {"name": "local", "role": "operator", "local": True}
        assert [t.value for t in at.title] == ["Campaigns"] and not at.exception
    finally:
        config.set_option("server.address", old)
