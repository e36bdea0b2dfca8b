"""Sign-in page: the only page registered until someone signs in."""

import streamlit as st

from dashboard import auth
from dashboard.service import service

st.title("restgov")
st.caption("Reinforced Self-Training campaigns: run, rate, audit.")

if notice := st.session_state.get(auth.NOTICE):  # a session of this tab ended (account changed, signed out)
    st.error(notice, icon=":material/block:")

users = service().store.users()
if not users:
    st.info(
        "No accounts yet. Stop the dashboard and create one, e.g. "
        "`restgov users add alice --role operator`, or start it in local mode for a single person on this "
        "machine: `restgov dashboard --local`."
    )

with st.form("login_form"):
    name = st.text_input("User name", key="login_name")
    password = st.text_input("Password", type="password", key="login_password")
    submitted = st.form_submit_button("Sign in", type="primary")

if submitted:
    problem = auth.sign_in(name, password)
    if problem is None:
        st.rerun()
    st.error(problem)
