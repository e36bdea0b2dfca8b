"""The dashboard's server entry (`restgov dashboard` runs `streamlit run dashboard/serve.py`): the app of
dashboard/app.py plus the route that sets the HttpOnly session cookie (dashboard/session_cookie.py).

Served as `streamlit run dashboard/app.py` instead, everything works except that a sign-in lasts only as long
as the browser tab (no cookie is set, so a reload or a new tab asks to sign in again).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from dashboard import session_cookie  # noqa: E402

app = st.App(Path(__file__).resolve().parent / "app.py", routes=session_cookie.routes())
