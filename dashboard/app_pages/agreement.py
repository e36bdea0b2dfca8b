"""Agreement (auditor; operators too): annotator agreement, the human eval diff with its interval, and how
well the reward tracks people per Grow step (Spearman, Kendall).
"""

import streamlit as st

from dashboard import queries
from dashboard.auth import require_page
from dashboard.report_html import DIFF_NUMBERS, human_diff_rows
from dashboard.service import service

require_page("agreement")
store = service().store
st.title("Agreement and human vs reward")
queries.needs("ratings", "rated_rewards", "progress")
from engine.ratings import rating_stats  # noqa: E402  (scipy; only once the module is there)

cid = queries.pick_campaign("agree_pick")
if cid is None:
    st.info("No campaigns yet.")
    st.stop()
stats = rating_stats(store, cid)
p, a = stats["progress"], stats["agreement"]
if not p["ratings"]:
    st.info(
        "No ratings yet"
        + (f" ({p['tasks']} rating tasks wait for annotators on the Rate page)" if p["tasks"] else "")
        + ". To get some: create rating tasks on the Governance page (operators: **Rating tasks**, one click "
        "builds BC vs the latest checkpoint on validation sources) or the Rate page, or with "
        f"`restgov ratings create {cid}`; annotators then rate them on the Rate page.",
        icon=":material/lightbulb:",
    )
    st.stop()
# Reliability of the agreement: only "reliable" is good news; anything else is a warning, never green.
LABEL_COLOR = {"reliable": "green", "tentative": "yellow", "unreliable": "orange", "undefined": "gray"}
c1, c2, c3, c4 = st.columns(4)
c1.metric("Tasks complete", f"{p['complete']} / {p['tasks']}")
c2.metric("Ratings", p["ratings"])
c3.metric("Annotators", p["annotators"])
c4.metric("Krippendorff's alpha", "-" if a["alpha"] != a["alpha"] else f"{a['alpha']:.3f}")
c4.badge(
    a["label"],
    color=LABEL_COLOR.get(a["label"], "orange"),
    icon=":material/check_circle:" if a["label"] == "reliable" else ":material/warning:",
)
sim = stats["simulated"]
if sim["ratings"]:
    st.warning(
        f"{sim['ratings']} of {p['ratings']} ratings are simulated (written by "
        f"{', '.join(sim['annotators'])} from an oracle metric, not by people); "
        "every figure below includes them.",
        icon=":material/smart_toy:",
    )
st.subheader("Human eval diff (policy under review minus its baseline, 0..6 scale)")
st.dataframe(
    human_diff_rows(stats["pairs"]),
    hide_index=True,
    key="agree_pairs",
    column_config={k: st.column_config.NumberColumn(format="%.3f") for k in DIFF_NUMBERS}
    | {k: st.column_config.NumberColumn(format="percent") for k in ("win", "tie", "loss")},
)
st.subheader("Reward vs human score per Grow step")
st.dataframe(stats["correlation"], hide_index=True, key="agree_corr")
rows = store.rated_rewards(cid)
if rows:
    import plotly.express as px

    fig = px.scatter(
        rows,
        x="reward",
        y="human",
        color=[f"Grow {r['grow']}" for r in rows],
        labels={"human": "mean human score (0..6)", "color": "Grow step"},
        height=360,
    )
    st.plotly_chart(fig, key="agree_scatter")
