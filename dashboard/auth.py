"""Who is signed in and what each role may open: the one table both the navigation and every page check.

Sign-in opens a server-side session: a random token that this browser session keeps in st.session_state
and that the server hands to the browser as an HttpOnly cookie (dashboard/session_cookie.py); the store
holds only its hash. Every script run looks the token up in the store (`current_user`: session -> account
-> current role), so a role change, a removal, a password reset or a sign-out elsewhere takes effect at the
user's next click. Failed sign-ins are throttled per account name and per client address in the store.
Local mode (`restgov dashboard --local`, env RESTGOV_LOCAL=1) skips sign-in: one operator named "local",
allowed only while the server listens on a loopback address.
"""

from __future__ import annotations

from datetime import timedelta

import streamlit as st

from dashboard import session_cookie
from dashboard.service import service, settings
from engine.store import now
from engine.store.users import FAILURE_WINDOW, MAX_FAILURES, SESSION_HOURS

ROLES = ("operator", "annotator", "auditor")
# key (= URL path): title, navigation section, page file (relative to app.py), icon, roles allowed.
PAGES: dict[str, dict] = {
    "campaigns": dict(
        title="Campaigns",
        section="Run",
        file="app_pages/campaigns.py",
        icon=":material/rocket_launch:",
        roles=("operator",),
    ),
    "stopping": dict(
        title="Stopping criteria",
        section="Run",
        file="app_pages/stopping.py",
        icon=":material/flag:",
        roles=("operator",),
    ),
    "rate": dict(
        title="Rate",
        section="Review",
        file="app_pages/rate.py",
        icon=":material/thumbs_up_down:",
        roles=("annotator", "operator"),
    ),
    "distributions": dict(
        title="Reward distributions",
        section="Audit",
        file="app_pages/distributions.py",
        icon=":material/bar_chart:",
        roles=("operator", "auditor"),
    ),
    "governance": dict(
        title="Governance",
        section="Audit",
        file="app_pages/governance.py",
        icon=":material/policy:",
        roles=("operator", "auditor"),
    ),
    "reward-tests": dict(
        title="Reward tests",
        section="Audit",
        file="app_pages/reward_tests_page.py",
        icon=":material/rule:",
        roles=("operator", "auditor"),
    ),
    "agreement": dict(
        title="Agreement",
        section="Audit",
        file="app_pages/agreement.py",
        icon=":material/handshake:",
        roles=("operator", "auditor"),
    ),
    "drift": dict(
        title="Drift audit",
        section="Audit",
        file="app_pages/drift.py",
        icon=":material/monitoring:",
        roles=("operator", "auditor"),
    ),
    "users": dict(
        title="Users",
        section="Admin",
        file="app_pages/users.py",
        icon=":material/group:",
        roles=("operator",),
    ),
}
COOKIE = session_cookie.COOKIE
LOOPBACK = ("127.0.0.1", "localhost", "::1")
TOKEN = "session_token"  # st.session_state key: the token this browser session holds ("" = none)
CODE = "cookie_code"  # st.session_state key: the one-time code the page exchanges for the cookie
NOTICE = "auth_notice"  # st.session_state key: why the last session ended, shown on the sign-in page


def local_mode_allowed() -> bool:
    return settings().local and (st.get_option("server.address") or "") in LOOPBACK


def current_user() -> dict | None:
    """The signed-in user {name, role}, checked against the store on every call: local mode, or the session
    token this browser session holds (taken from the request's cookie on its first run). When a session this
    browser had is gone (account removed, role or password changed, signed out elsewhere, expired), the
    refusal is logged and its reason kept for the sign-in page."""
    if local_mode_allowed():
        st.session_state.user = {"name": "local", "role": "operator", "local": True}
        return st.session_state.user
    token = st.session_state.get(TOKEN)
    fresh = token is None
    if fresh:  # the first run of this browser session: the cookie sent with the page request
        token = st.session_state[TOKEN] = _cookie() or ""
    before = st.session_state.get("user")
    store = service().store
    user = store.session_user(token) if token else None
    st.session_state.user = user
    if user is None and token:
        st.session_state[TOKEN] = ""  # dead: not looked up again in this browser session
        if before and before.get("name"):
            _session_ended(before)
        elif fresh:
            store.add_event(None, "access", "refused a session cookie that has ended or expired", actor="?")
    return user


def _session_ended(before: dict) -> None:
    """Log why the session of `before` ({name, role}) opens no page any more; keep it for the sign-in page."""
    store = service().store
    acct = store.account(before["name"])
    if acct is None:
        why = "your account was removed"
    elif acct["disabled"]:
        why = "your account no longer has a role"
    elif acct["role"] != before["role"]:
        why = f"your role changed from {before['role']} to {acct['role']}"
    else:
        why = "your session was ended (signed out in another tab, password reset, or expired)"
    store.add_event(
        None,
        "access",
        f"{before['name']} ({before['role']}) refused: session ended, {why}",
        actor=before["name"],
    )
    st.session_state[NOTICE] = f"Access refused: {why}. Sign in again to continue."


def _cookie() -> str | None:
    try:
        token = st.context.cookies.get(COOKIE)
    except Exception:  # noqa: BLE001 - no browser request (AppTest, bare mode)
        return None
    return token if isinstance(token, str) else None


def client_address() -> str:
    """The client's address for sign-in throttling: the connection's remote IP (st.context.ip_address);
    Streamlit reports none for a loopback connection, which is what a reverse proxy on this machine makes,
    so then the proxy's X-Real-IP, else the last X-Forwarded-For entry; "loopback" when there is neither."""
    try:
        ip, headers = st.context.ip_address, st.context.headers
    except Exception:  # noqa: BLE001 - no browser request (AppTest, bare mode)
        return "loopback"
    if isinstance(ip, str) and ip:
        return ip
    real, forwarded = headers.get("X-Real-IP"), headers.get("X-Forwarded-For")
    if isinstance(real, str) and real.strip():
        return real.strip()
    hops = [h.strip() for h in forwarded.split(",") if h.strip()] if isinstance(forwarded, str) else []
    return hops[-1] if hops else "loopback"


def pages_for(role: str) -> list[str]:
    return [k for k, p in PAGES.items() if role in p["roles"]]


def require_page(key: str) -> dict:
    """Top of every page: the user, or a refusal (and the page stops) when the role may not open it."""
    user = current_user()
    page = PAGES[key]
    if user is None or user["role"] not in page["roles"]:
        who = f"{user['name']} ({user['role']})" if user else "nobody (not signed in)"
        service().store.add_event(
            None, "access", f"{who} refused page {key}", actor=user["name"] if user else "?"
        )
        st.error(
            f"Access refused: **{page['title']}** is for {' and '.join(page['roles'])} accounts; "
            f"you are {who}."
        )
        st.stop()
    if key != "rate" and st.session_state.pop("rate_holds", False):
        service().store.release_leases(user["name"])  # left the Rate page: its task's place is free again
    return user


def refusal(key: str):
    """A stand-in page for `key` in the navigation of a role that may not open it (logged as an access
    event)."""
    page = PAGES[key]

    def refused() -> None:
        user = current_user() or {"name": "?", "role": "?"}
        service().store.add_event(
            None, "access", f"{user['name']} ({user['role']}) refused page {key}", actor=user["name"]
        )
        st.error(
            f"Access refused: **{page['title']}** is for {' and '.join(page['roles'])} accounts; "
            f"you are signed in as {user['name']} ({user['role']}).",
            icon=":material/block:",
        )
        if user["role"] in ROLES:
            home = PAGES[pages_for(user["role"])[0]]
            st.page_link(home["file"], label=f"Go to {home['title']}", icon=home["icon"])

    refused.__name__ = f"refused_{key.replace('-', '_')}"
    return refused


def sign_in(name: str, password: str) -> str | None:
    """Sign in on this browser session; None on success, else the message to show (wrong name or password,
    or locked out after too many failures, with when to retry). Every attempt is a login event."""
    store, name, client = service().store, name.strip(), client_address()
    res = store.sign_in(name, password, client)
    if res.user is None:
        if res.locked_until is None:
            store.add_event(None, "login", f"failed sign-in for {name!r} from {client}", actor=name or "?")
            return "Wrong user name or password."
        wait = max(1, int((res.locked_until - now()).total_seconds()))
        who = "this account" if res.locked == "account" else "this address"
        store.add_event(
            None,
            "login",
            f"sign-in for {name!r} from {client} refused: {who} is locked until "
            f"{res.locked_until:%H:%M:%S} UTC",
            actor=name or "?",
        )
        minutes = int(FAILURE_WINDOW / timedelta(minutes=1))
        return (
            f"Too many failed sign-ins for {who} ({MAX_FAILURES} within {minutes} minutes). "
            f"Try again in {wait // 60} min {wait % 60:02d} s (after {res.locked_until:%H:%M:%S} UTC)."
        )
    st.session_state.user = res.user
    st.session_state[TOKEN] = res.token
    st.session_state.pop(NOTICE, None)
    st.session_state.cookie = res.token
    store.add_event(
        None,
        "login",
        f"{res.user['name']} signed in as {res.user['role']} from {client}",
        actor=res.user["name"],
    )
    return None


def sign_out() -> None:
    """End the session this browser session holds, in the store (so its cookie opens nothing any more), and
    clear the cookie."""
    user = st.session_state.get("user")
    ended = service().store.end_session(st.session_state.get(TOKEN))
    if user:
        service().store.add_event(
            None,
            "login",
            f"{user['name']} signed out" + ("" if ended else " (the session had already ended)"),
            actor=user["name"],
        )
    st.session_state.user = None
    st.session_state[TOKEN] = ""
    st.session_state.cookie = ""


def write_cookie() -> None:
    """Hand a pending session token to the browser as an HttpOnly cookie (or clear it after sign-out): the
    page exchanges a one-time code for it at the server's cookie route. The script is drawn again on each
    run until the code is taken, since a run that forwards to another page may end before the browser got
    it."""
    token = st.session_state.pop("cookie", None)
    if token:
        st.session_state[CODE] = session_cookie.offer(token, int(SESSION_HOURS * 3600))
    elif token == "":
        st.session_state.pop(CODE, None)
        st.html(session_cookie.script(None), unsafe_allow_javascript=True, width="content")
    code = st.session_state.get(CODE)
    if code and session_cookie.pending(code):
        st.html(session_cookie.script(code), unsafe_allow_javascript=True, width="content")
    elif code:
        del st.session_state[CODE]
