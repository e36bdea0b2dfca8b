"""Sign-in page: the only page before sign-in, wrong and right passwords, sign-in throttling (per account
and per client, kept in the store), sign-out ending the session the tab holds, local mode on loopback only."""

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
    assert [e["message"] for e in events[:2]] == [
        "olga signed in as operator from loopback",
        "failed sign-in for 'olga' from loopback",
    ]
    token = at.session_state["session_token"]  # the session this tab holds, kept after the sign-in
    assert _service(empty_db).store.session_user(token) == {"name": "olga", "role": "operator"}
    at = button(at, "Sign out").click().run()
    assert [t.value for t in at.title] == ["restgov"] and at.session_state["user"] is None
    assert _service(empty_db).store.session_user(token) is None  # ended in the store, not only in the tab
    assert "olga signed out" in [e["message"] for e in _service(empty_db).store.recent_events(None, 3)]


def _age_failures(store, minutes: float) -> None:
    """Move every recorded failed sign-in `minutes` into the past (the lock is judged against the clock)."""
    store.cursor().execute("UPDATE login_failures SET ts = ts - to_microseconds(?)", [int(minutes * 60e6)])


def test_failed_sign_ins_lock_the_account_and_the_client(empty_db):
    """Five failures within ten minutes lock the name (from any address) and the address (for any name) for
    five minutes; the right password is not even checked meanwhile; the lock lifts with time."""
    from engine.store import now
    from engine.store.users import LOCK_MINUTES, MAX_FAILURES

    store = _service(empty_db).store
    for i in range(MAX_FAILURES - 1):
        res = store.sign_in("ann", f"wrong-{i}-password", "10.0.0.1")
        assert res.user is None and res.locked_until is None, i
    res = store.sign_in("ann", "wrong-again-password", "10.0.0.1")
    assert res.user is None and res.locked == "account"
    assert abs((res.locked_until - now()).total_seconds() - LOCK_MINUTES * 60) < 5
    res = store.sign_in("ann", "annotator-pass", "10.0.0.2")  # right password, other address: still locked
    assert res.user is None and res.token is None and res.locked == "account"
    res = store.sign_in("olga", "operator-pass", "10.0.0.1")  # other account, same address: locked
    assert res.user is None and res.locked == "client"
    assert store.sign_in("olga", "operator-pass", "10.0.0.3").user == {"name": "olga", "role": "operator"}
    _age_failures(store, LOCK_MINUTES + 0.5)  # the lock has run out, the failures are still in the window
    res = store.sign_in("ann", "annotator-pass", "10.0.0.2")
    assert res.user == {"name": "ann", "role": "annotator"} and store.session_user(res.token) == res.user
    assert store.login_lock("ann", "10.0.0.9") == (None, None)  # a success clears the account's count
    assert store.login_lock("nobody", "10.0.0.1") == (None, None)
    store.record_login_failure("x", "10.0.0.1")  # one more failure from the address locks it again
    assert store.login_lock("nobody", "10.0.0.1")[1] == "client"
    _age_failures(store, 11)  # out of the ten-minute window: forgotten
    assert store.login_lock("x", "10.0.0.1") == (None, None)


def test_sign_in_page_says_when_to_retry(empty_db):
    from engine.store.users import MAX_FAILURES

    at = app(empty_db)
    for i in range(MAX_FAILURES):
        at.text_input(key="login_name").input("olga")
        at.text_input(key="login_password").input(f"wrong-{i}-password")
        at = button(at, "Sign in").click().run()
    msg = texts(at)
    assert "Too many failed sign-ins for this account (5 within 10 minutes). Try again in 4 min" in msg, msg
    at.text_input(key="login_name").input("olga")
    at.text_input(key="login_password").input("operator-pass")
    at = button(at, "Sign in").click().run()
    assert at.session_state["user"] is None and "Try again in" in texts(at)
    events = [e["message"] for e in _service(empty_db).store.recent_events(None, 2, kinds=["login"])]
    assert events[0].startswith("sign-in for 'olga' from loopback refused: this account is locked until"), (
        events
    )


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


def test_cookie_route_exchanges_a_code_once_and_refuses_other_sites():
    """The server route behind the HttpOnly cookie (dashboard/session_cookie.py), called as the ASGI server
    would: a code buys the cookie once; another site's Origin is refused; HTTPS via a proxy adds Secure."""
    import asyncio
    import json

    from starlette.requests import Request

    from dashboard import session_cookie as sc

    def call(method: str, code: str | None = None, **headers: str):
        body = json.dumps({"code": code}).encode() if code is not None else b""
        hdrs = {"host": "127.0.0.1:8501", "content-type": "application/json"} | {
            k.replace("_", "-"): v for k, v in headers.items()
        }
        scope = {
            "type": "http",
            "method": method,
            "path": sc.ROUTE,
            "scheme": "http",
            "server": ("127.0.0.1", 8501),
            "query_string": b"",
            "headers": [(k.encode(), v.encode()) for k, v in hdrs.items()],
        }
        done = []

        async def receive():
            if done:
                return {"type": "http.disconnect"}
            done.append(1)
            return {"type": "http.request", "body": body, "more_body": False}

        return asyncio.run(sc.session_route(Request(scope, receive)))

    code = sc.offer("token-1", 3600)
    assert call("POST", code, origin="https://evil.example").status_code == 403 and sc.pending(code)
    ok = call("POST", code, origin="http://127.0.0.1:8501")
    cookie = ok.headers["set-cookie"]
    assert ok.status_code == 200 and cookie.startswith("restgov_session=token-1;"), cookie
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Max-Age=3600" in cookie
    assert "Secure" not in cookie and not sc.pending(code)
    assert call("POST", code).status_code == 400  # used once
    assert call("POST", "made-up").status_code == 400
    behind_tls = call("POST", sc.offer("token-2", 60), x_forwarded_proto="https").headers["set-cookie"]
    assert "Secure" in behind_tls and "token-2" in behind_tls
    cleared = call("DELETE").headers["set-cookie"]
    assert cleared.startswith('restgov_session="";') and "Max-Age=0" in cleared, cleared
