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

user = auth.current_user()
if user is None:
    pg = st.navigation(
        [st.Page("app_pages/login.py", title="Sign in", icon=":material/login:", url_path="login")],
        position="hidden",
    )
else:
    keys = auth.pages_for(user["role"])
    sections: dict[str, list] = {}
    for key, p in auth.PAGES.items():
        if key in keys:
            page = st.Page(p["file"], title=p["title"], icon=p["icon"], url_path=key, default=key == keys[0])
            sections.setdefault(p["section"], []).append(page)
        else:  # the URL answers with a refusal; the page's own file is never run for this role
            sections.setdefault("", []).append(
                st.Page(auth.refusal(key), title=p["title"], url_path=key, visibility="hidden")
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
