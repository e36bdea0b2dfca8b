"""restgov dashboard entry: `restgov dashboard [--db PATH] [--port N] [--local]`.

Builds the navigation from the signed-in user's role, so a page of another role is not registered at all
(its URL falls back to the user's first page, with a refusal notice); every page also checks the role itself.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `streamlit run dashboard/app.py` puts only dashboard/ on the path
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from dashboard import auth  # noqa: E402

st.set_page_config(page_title="restgov", layout="wide")

user = auth.current_user()
if user is None:
    pg = st.navigation([st.Page("app_pages/login.py", title="Sign in", icon=":material/login:", url_path="login")],
                       position="hidden")
else:
    keys = auth.pages_for(user["role"])
    sections: dict[str, list] = {}
    for key in keys:
        p = auth.PAGES[key]
        sections.setdefault(p["section"], []).append(
            st.Page(p["file"], title=p["title"], icon=p["icon"], url_path=key, default=key == keys[0]))
    pg = st.navigation(sections)
    if "refused" not in st.session_state:  # the URL this browser session opened, checked once
        asked = auth.requested_page()
        st.session_state.refused = asked if asked and asked not in keys else None
        if st.session_state.refused:
            auth.service().store.add_event(None, "access", f"{user['name']} ({user['role']}) refused page {asked}",
                                           actor=user["name"])
    if st.session_state.refused and pg.url_path != keys[0]:
        st.session_state.refused = None  # shown until the user moves on
    if st.session_state.refused:
        page = auth.PAGES[st.session_state.refused]
        st.error(f"Access refused: **{page['title']}** is for {' and '.join(page['roles'])} accounts; "
                 f"you are signed in as {user['name']} ({user['role']}).", icon=":material/block:")
    with st.sidebar:
        st.caption(f"Signed in as **{user['name']}** ({user['role']})" + (" · local mode" if user.get("local") else ""))
        st.caption(f"Store: `{auth.settings().db}`")
        if not user.get("local"):
            st.button("Sign out", key="sign_out", on_click=auth.sign_out, icon=":material/logout:")
auth.write_cookie()
pg.run()
