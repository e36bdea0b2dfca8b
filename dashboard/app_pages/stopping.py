"""Stopping criteria (operator): view and edit a campaign's [stop] and [gates] tables.

Changes go through engine.campaign.update_criteria (the whole config validated, one event with who and what);
the controller re-reads the config before every unit, so a running campaign applies them at its next check.
"""

import dataclasses
import typing

import streamlit as st

from dashboard import queries
from dashboard.auth import require_page
from dashboard.config_form import dataclass_form, form_values, section_errors
from dashboard.reward_jobs import unknown_tests
from dashboard.service import service
from engine.campaign import CRITERIA_SECTIONS
from engine.config import CampaignConfig, ConfigError, config_from_dict

user = require_page("stopping")
svc = service()
st.title("Stopping criteria")
st.caption(
    "Decided before a campaign starts, checked before every Grow step; "
    "every change is logged with who and when."
)
cid = queries.pick_campaign("stop_pick")
if cid is None:
    st.info("No campaigns yet.")
    st.stop()
row = svc.store.campaign(cid)
finished = row["state"] in ("DONE", "STOPPED")
hints = typing.get_type_hints(CampaignConfig)
sections = [f.name for f in dataclasses.fields(CampaignConfig) if f.name in CRITERIA_SECTIONS]
if "stop_error" not in st.session_state:
    st.session_state.stop_error = None


def save(section: str, prefix: str) -> None:
    values = form_values(hints[section], prefix)
    errors = section_errors(row["config"], section, values)
    if section == "gates" and not any(e["field"] == "gates.reward_tests_skip" for e in errors):
        skip = values.get("reward_tests_skip") or []
        if why := unknown_tests(config_from_dict(row["config"]).reward, skip):
            errors.append({"field": "gates.reward_tests_skip", "message": f"gates.reward_tests_skip: {why}"})
    if errors:  # every field's error at once, each under its field
        st.session_state.stop_error = errors
        return
    try:
        changed = svc.update_criteria(cid, section, values, user["name"])
        st.session_state.stop_error = None
        st.toast(
            f"[{section}] saved: "
            + (", ".join(f"{k} {a} → {b}" for k, (a, b) in changed.items()) or "no change")
        )
    except ConfigError as e:
        st.session_state.stop_error = {"field": e.field, "message": f"{e.field} = {e.value!r}: {e.allowed}"}


st.markdown(f"Campaign `{cid}` · state `{row['state']}`" + (" · finished: read-only" if finished else ""))
for section in sections:
    prefix = f"{section}_{cid}"
    with st.form(f"form_{section}"):
        st.markdown(f"**[{section}]**")
        dataclass_form(
            hints[section],
            row["config"].get(section, {}),
            prefix,
            section,
            st.session_state.stop_error,
            disabled=finished,
        )
        st.form_submit_button(
            f"Save [{section}]", type="primary", disabled=finished, on_click=save, args=(section, prefix)
        )

st.subheader("History")
events = svc.store.recent_events(
    cid, 100, kinds=["criteria", "stop_criterion", "gate", "reward_tests", "request"]
)
st.dataframe(
    [{k: e[k] for k in ("ts", "actor", "kind", "message")} for e in events],
    hide_index=True,
    key="stop_history",
)
