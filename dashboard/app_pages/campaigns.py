"""Campaigns (operator): create from a demo recipe, a TOML upload or a form; start, pause, resume, stop; live
progress."""

import streamlit as st

from dashboard import campaigns_create, campaigns_live, grow_placement, queries
from dashboard.auth import require_page
from dashboard.service import service

user = require_page("campaigns")
svc = service()
st.title("Campaigns")

if msg := st.session_state.pop("created", None):
    st.success(msg)

# Keyed with on_change="rerun" so both keep their open state when a widget inside reruns the page.
with st.expander(
    "New campaign",
    expanded=not queries.campaigns(),
    icon=":material/add:",
    key="new_expander",
    on_change="rerun",
):
    t_recipe, t_upload, t_form = st.tabs(
        ["Demo recipe", "Upload TOML", "Form"], key="new_tabs", on_change="rerun"
    )
    with t_recipe:
        campaigns_create.recipe_tab(svc, user)
    with t_upload:
        campaigns_create.upload_tab(svc, user)
    with t_form:
        campaigns_create.form_tab(svc, user)


ids = {c["id"] for c in queries.campaigns()}


@st.fragment(run_every="3s" if svc.running() or any(j["status"] == "preparing" for j in svc.jobs()) else None)
def table() -> None:
    new = [j["cid"] for j in svc.jobs() if j["cid"] and j["cid"] not in ids]
    if new:  # a recipe launched from here created its campaign: select it and redraw the page
        st.session_state.cid = new[0]
        st.rerun()
    campaigns_live.campaign_table()


table()
cid = queries.pick_campaign("campaigns_pick")
if cid:
    campaigns_live.controls(svc, cid, user)
    campaigns_live.panel(svc, cid)
    grow_placement.section(svc, cid)
