"""Sessions in headless Chromium against the real dashboard (the server fixtures of test_browser.py):
an account demoted while its tab is open is refused at its next click, and a signed-out session's cookie
opens nothing when replayed in a fresh browser. Screenshots go to test-artifacts/<test name>/.
"""

from __future__ import annotations

import pytest
from test_browser import PASSWORDS, browser, page, server, sign_in  # noqa: F401 - fixtures

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

VIEWPORT = {"width": 1400, "height": 1100}


def _shot(page, other, label: str) -> None:  # noqa: F811
    """A screenshot of another browser context's page, numbered with `page`'s."""
    page.shots.page = other
    try:
        page.shots(label)
    finally:
        page.shots.page = page


def _session_cookie(ctx) -> dict:
    """The session cookie once the browser holds it (the server sets it just after the sign-in)."""
    for _ in range(50):
        found = [c for c in ctx.cookies() if c["name"] == "restgov_session"]
        if found:
            return found[0]
        ctx.pages[0].wait_for_timeout(200)
    raise AssertionError(f"no restgov_session cookie: {ctx.cookies()}")


def test_annotator_demoted_while_her_tab_is_open_is_refused_at_the_next_click(server, page, browser):  # noqa: F811
    base = server["base"]
    sign_in(page, base, "ann")  # the annotator's tab, left open on Rate
    page.get_by_role("heading", name="Rate").wait_for()
    page.locator('[class*="st-key-rate_left_"] button', has_text="3").first.wait_for()
    page.shots("annotator-rate")

    ctx = browser.new_context(viewport=VIEWPORT)
    try:
        op = ctx.new_page()
        op.set_default_timeout(60_000)
        op.goto(base + "/")
        op.get_by_label("User name").fill("olga")
        op.get_by_role("textbox", name="Password").fill(PASSWORDS["olga"])
        op.get_by_role("button", name="Sign in").click()
        op.get_by_text("Signed in as olga").wait_for()
        op.get_by_role("link", name="Users", exact=True).click()
        op.get_by_role("heading", name="Users").wait_for()
        op.locator(".st-key-user_role_pick [role=combobox]").click()
        op.get_by_role("option", name="ann", exact=True).click()
        op.locator(".st-key-user_role_apply button:not([disabled])").wait_for()  # the pick's rerun is done
        op.locator(".st-key-user_role_new [role=combobox]").click()
        op.get_by_role("option", name="no role (disable)").click()
        op.locator(".st-key-user_role_new input[value='no role (disable)']").wait_for()
        op.locator(".st-key-user_role_apply button").click()
        op.get_by_text("ann now has no role (disable); their open sessions were ended.").wait_for()
        event = op.get_by_text("user ann: role annotator -> no role (disabled); 1 session(s) ended")
        event.first.wait_for(state="attached")  # a cell of the account events table (drawn on a canvas)
        _shot(page, op, "operator-demoted-ann")
    finally:
        ctx.close()

    # Her next click (a score on the task still on her screen) is refused, and the page says why.
    page.locator('[class*="st-key-rate_left_"] button', has_text="3").first.click()
    page.get_by_text(
        "Access refused: your account no longer has a role. Sign in again to continue."
    ).wait_for()
    page.get_by_role("heading", name="Rate").wait_for(state="detached")  # the rerun has cleared the page
    page.get_by_text("Signed in as ann").wait_for(state="detached")
    page.get_by_role("button", name="Sign in").wait_for()
    page.shots("annotator-refused")
    page.goto(base + "/rate")  # a reload with her cookie: the session is gone from the store
    page.get_by_label("User name").wait_for()
    assert page.get_by_text("Signed in as ann").count() == 0
    page.shots("annotator-reload")

    def refusal_logged(con) -> None:
        rows = con.execute(
            "SELECT actor, message FROM events WHERE kind = 'access' AND actor = 'ann' ORDER BY id"
        ).fetchall()
        assert ("ann", "ann (annotator) refused: session ended, your account no longer has a role") in rows, (
            rows
        )
        assert not con.execute("SELECT count(*) FROM ratings WHERE annotator = 'ann'").fetchone()[0]

    server["after"].append(refusal_logged)


def test_signed_out_session_cookie_replayed_in_a_fresh_browser_is_refused(server, page, browser):  # noqa: F811
    base = server["base"]
    sign_in(page, base, "olga")  # a fresh tab: its first request carried no cookie
    page.get_by_role("heading", name="Campaigns").wait_for()
    cookie = _session_cookie(page.context)
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict", cookie
    assert "restgov_session" not in page.evaluate("document.cookie")  # page scripts cannot read it
    page.shots("signed-in")

    def fresh_with(c: dict):
        ctx = browser.new_context(viewport=VIEWPORT)
        ctx.add_cookies([c])
        pg = ctx.new_page()
        pg.set_default_timeout(60_000)
        pg.goto(base + "/users")
        return ctx, pg

    ctx, pg = fresh_with(cookie)  # while signed in, the cookie opens the page in another browser
    try:
        pg.get_by_text("Signed in as olga").wait_for()
        pg.get_by_role("heading", name="Users").wait_for()
        pg.get_by_label("Change the role of").wait_for()  # the page has finished drawing
        _shot(page, pg, "cookie-works-while-signed-in")
    finally:
        ctx.close()

    page.get_by_role("button", name="Sign out").click()
    page.get_by_label("User name").wait_for()
    page.shots("signed-out")
    ctx, pg = fresh_with(cookie)  # the same cookie after the sign-out: the sign-in page
    try:
        pg.get_by_label("User name").wait_for()
        pg.get_by_role("button", name="Sign in").wait_for()
        assert pg.get_by_text("Signed in as olga").count() == 0
        assert pg.get_by_role("heading", name="Users").count() == 0
        _shot(page, pg, "replayed-cookie-refused")
    finally:
        ctx.close()

    def sign_out_logged(con) -> None:
        messages = [r[0] for r in con.execute("SELECT message FROM events ORDER BY id").fetchall()]
        assert "olga signed out" in messages, messages
        after_sign_out = messages[len(messages) - messages[::-1].index("olga signed out") :]
        assert "refused a session cookie that has ended or expired" in after_sign_out, messages  # the replay

    server["after"].append(sign_out_logged)
