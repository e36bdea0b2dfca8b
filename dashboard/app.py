"""restgov dashboard entry: `restgov dashboard [--db PATH] [--port N] [--local]`.

Builds the navigation from the signed-in user's role: a page of another role is registered only as a hidden
refusal under its URL, so opening it by URL says "Access refused" and never runs the page's file; every page
also checks the role itself at its top.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `streamlit run dashboard/app.py` puts only dashboard/ on the path
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from dashboard import auth, service  # noqa: E402

st.set_page_config(page_title="restgov", layout="wide")

SIGN_IN = "app_pages/login.py"

user = auth.current_user()
if user is None:
    # Every page's URL shows the sign-in form, so a shared link survives signing in: the form's rerun keeps
    # the URL, which then opens that page (or its refusal) for the account just signed in.
    pg = st.navigation(
        [st.Page(SIGN_IN, title="Sign in", icon=":material/login:", url_path="login", default=True)]
        + [st.Page(SIGN_IN, title="Sign in", url_path=key, visibility="hidden") for key in auth.PAGES],
        position="hidden",
    )
else:
    keys = auth.pages_for(user["role"])
    sections: dict[str, list] = {}
    own: dict[str, st.Page] = {}
    for key, p in auth.PAGES.items():
        if key in keys:
            own[key] = st.Page(p["file"], title=p["title"], icon=p["icon"], url_path=key)
            sections.setdefault(p["section"], []).append(own[key])
        else:  # the URL answers with a refusal; the page's own file is never run for this role
            sections.setdefault("", []).append(
                st.Page(auth.refusal(key), title=p["title"], url_path=key, visibility="hidden")
            )
    # Streamlit serves its default page at "/" only, never under that page's own url_path: so no page of
    # the role is the default (each answers at /<key>), and "/" forwards to the role's first page.
    home = own[keys[0]]

    def start() -> None:
        st.switch_page(home)

    sections.setdefault("", []).append(
        st.Page(start, title=home.title, url_path="start", default=True, visibility="hidden")
    )
    pg = st.navigation(sections)
    with st.sidebar:
        st.caption(
            f"Signed in as **{user['name']}** ({user['role']})"
            + (" · local mode" if user.get("local") else "")
        )
        if user["role"] == "operator":  # the server's file system is the operators' concern only
            st.caption(f"Store: `{service.settings().db}`")
        if not user.get("local"):
            st.button("Sign out", key="sign_out", on_click=auth.sign_out, icon=":material/logout:")
auth.write_cookie()
pg.run()
