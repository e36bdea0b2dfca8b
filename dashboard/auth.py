"""Who is signed in and what each role may open: the one table both the navigation and every page check.

Sign-in keeps a random session token in a browser cookie (the store holds only its hash), so opening a page
by URL or reloading keeps the session. Local mode (`restgov dashboard --local`, env RESTGOV_LOCAL=1) skips
sign-in: one operator named "local", allowed only while the server listens on a loopback address.
"""

from __future__ import annotations

import streamlit as st

from dashboard.service import service, settings

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
        file="app_pages/reward_tests.py",
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
COOKIE = "restgov_session"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def local_mode_allowed() -> bool:
    return settings().local and (st.get_option("server.address") or "") in LOOPBACK


def current_user() -> dict | None:
    """The signed-in user {name, role}: set once per browser session, from local mode or the session
    cookie."""
    if "user" not in st.session_state:
        if local_mode_allowed():
            st.session_state.user = {"name": "local", "role": "operator", "local": True}
        else:
            st.session_state.user = service().store.session_user(_cookie())
    return st.session_state.user


def _cookie() -> str | None:
    try:
        token = st.context.cookies.get(COOKIE)
    except Exception:  # noqa: BLE001 - no browser request (AppTest, bare mode)
        return None
    return token if isinstance(token, str) else None


def pages_for(role: str) -> list[str]:
    return [k for k, p in PAGES.items() if role in p["roles"]]


def require_page(key: str) -> dict:
    """Top of every page: the user, or a refusal (and the page stops) when the role may not open it."""
    user = current_user()
    page = PAGES[key]
    if user is None or user["role"] not in page["roles"]:
        who = f"{user['name']} ({user['role']})" if user else "nobody (not signed in)"
        st.error(
            f"Access refused: **{page['title']}** is for {' and '.join(page['roles'])} accounts; "
            f"you are {who}."
        )
        st.stop()
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


def sign_in(name: str, password: str) -> bool:
    store = service().store
    user = store.verify_user(name.strip(), password)
    if user is None:
        store.add_event(None, "login", f"failed sign-in for {name.strip()!r}", actor=name.strip() or "?")
        return False
    st.session_state.user = user
    st.session_state.cookie = store.create_session(user["name"])
    store.add_event(None, "login", f"{user['name']} signed in as {user['role']}", actor=user["name"])
    return True


def sign_out() -> None:
    user = st.session_state.get("user")
    service().store.end_session(_cookie())
    if user:
        service().store.add_event(None, "login", f"{user['name']} signed out", actor=user["name"])
    st.session_state.user = None
    st.session_state.cookie = ""


def write_cookie() -> None:
    """Hand a pending session token to the browser (or clear it after sign-out), once."""
    token = st.session_state.pop("cookie", None)
    if token is None:
        return
    age = 12 * 3600 if token else 0
    st.html(
        f'<script>document.cookie = "{COOKIE}={token}; path=/; max-age={age}; SameSite=Strict";</script>',
        unsafe_allow_javascript=True,
        width="content",
    )
