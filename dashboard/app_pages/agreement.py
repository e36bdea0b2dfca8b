"""Agreement (auditor; operators too): annotator agreement, the human eval diff with its interval, and how
well the reward tracks people per Grow step (Spearman, Kendall).
"""

import streamlit as st

from dashboard import queries
from dashboard.auth import require_page
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
c1, c2, c3, c4 = st.columns(4)
c1.metric("Tasks complete", f"{p['complete']} / {p['tasks']}")
c2.metric("Ratings", p["ratings"])
c3.metric("Annotators", p["annotators"])
c4.metric(
    "Krippendorff's alpha",
    "-" if a["alpha"] != a["alpha"] else f"{a['alpha']:.3f}",
    a["label"],
    delta_color="off",
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
st.dataframe(stats["pairs"], hide_index=True, key="agree_pairs")
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
        labels={"human": "mean human score (0..6)"},
        height=360,
    )
    st.plotly_chart(fig, key="agree_scatter")
