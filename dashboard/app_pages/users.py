"""Users (operator): accounts and roles. Passwords are stored only as salted scrypt hashes.

While the dashboard runs it owns the database, so accounts are managed here (or with `restgov users add`
while it is stopped). Any change to an account (role, password, removal) ends its open sessions at once:
its browser tabs are refused at their next click.
"""

import streamlit as st

from dashboard.auth import ROLES, require_page
from dashboard.service import service

NO_ROLE = "no role (disable)"

user = require_page("users")
store = service().store
st.title("Users")

with st.form("user_add", clear_on_submit=True):
    c1, c2, c3 = st.columns(3)
    name = c1.text_input("User name", key="user_name")
    role = c2.selectbox("Role", ROLES, key="user_role")
    password = c3.text_input("Password (8+ characters)", type="password", key="user_password")
    replace = st.checkbox("Reset the password and role if the user exists", key="user_replace")
    if st.form_submit_button("Save user", type="primary"):
        try:
            store.add_user(name.strip(), role, password, actor=user["name"], replace=replace)
            st.success(f"Saved {name.strip()} ({role}).")
        except ValueError as e:
            st.error(str(e))

rows = store.users()
st.dataframe(
    [
        r | {"role": "no role" if r["disabled"] else r["role"], "live sessions": store.sessions(r["name"])}
        for r in rows
    ],
    hide_index=True,
    key="user_table",
)
st.caption(
    "disabled: an account with no role (kept for its history; it cannot sign in). live sessions: signed-in "
    "browsers whose session has not ended or expired (12 hours)."
)
others = [r["name"] for r in rows if r["name"] != user["name"]]  # never your own account: keep one operator

c1, c2, c3 = st.columns([2, 2, 1], vertical_alignment="bottom")
who_role = c1.selectbox("Change the role of", others, index=None, key="user_role_pick")
new_role = c2.selectbox("New role", [*ROLES, NO_ROLE], key="user_role_new")
if c3.button("Change role", key="user_role_apply", disabled=who_role is None):
    store.set_role(who_role, None if new_role == NO_ROLE else new_role, actor=user["name"])
    st.session_state["user_done"] = f"{who_role} now has {new_role}; their open sessions were ended."
    st.rerun()

c1, c2 = st.columns([4, 1], vertical_alignment="bottom")
who = c1.selectbox("Remove a user", others, index=None, key="user_remove_pick")
if c2.button("Remove", key="user_remove", disabled=who is None):
    store.remove_user(who, actor=user["name"])
    st.session_state["user_done"] = f"Removed {who}; their open sessions were ended."
    st.rerun()
if done := st.session_state.pop("user_done", None):
    st.success(done)

st.subheader("Account events")
st.dataframe(
    [{k: e[k] for k in ("ts", "actor", "kind", "message")} for e in store.recent_events(None, 100)],
    hide_index=True,
    key="user_events",
)
