"""Reward distributions (operator, auditor): histograms and ECDFs per Grow step with the Improve thresholds,
per-source percentiles, reward against output length and Best-of-N. All binned in DuckDB
(engine/store/views.py).
"""

import streamlit as st

from dashboard import charts, queries
from dashboard.auth import require_page
from dashboard.service import service

require_page("distributions")
svc = service()
st.title("Reward distributions")
cid = queries.pick_campaign("dist_pick")
if cid is None:
    st.info("No campaigns yet.")
    st.stop()
c1, c2 = st.columns(2)
bins = c1.select_slider("Histogram bins", [10, 20, 50, 100, 200], value=50, key="dist_bins")
gen = c2.toggle("Generated candidates only (leave out the original pairs of D)", key="dist_gen")
grows = queries.grows(cid, queries.stamp(cid))


@st.fragment(run_every="3s" if svc.running(cid) else None)
def overlaid() -> None:
    """Refreshes while the campaign runs: a Grow step's histogram fills in as its shards are ingested."""
    stamp = queries.stamp(cid)
    if queries.grows(cid, stamp) != grows:
        st.rerun()  # a new Grow step has samples: redraw the whole page (its step picker too)
    if not grows:
        st.info("No scored samples yet: the charts appear when the first Grow shard is ingested.")
        return
    rows, th = queries.histogram(cid, bins, gen, stamp), queries.thresholds(cid, stamp)
    counts = {r["grow"]: 0 for r in rows}
    for r in rows:
        counts[r["grow"]] += r["n"]
    st.caption(
        " · ".join(f"Grow {g}: {n:,} scored pairs" for g, n in counts.items()), help="Updates as shards land."
    )
    left, right = st.columns(2)
    left.plotly_chart(charts.histogram(rows, th), key="dist_hist")
    right.plotly_chart(charts.ecdf(rows, th), key="dist_ecdf")
    if th:
        st.dataframe(
            [
                {k: t[k] for k in ("grow", "improve", "rule", "param", "tau", "kept", "n_total", "share")}
                for t in th
            ],
            hide_index=True,
            key="dist_filters",
            column_config={"share": st.column_config.NumberColumn(format="percent")},
        )


overlaid()
if not grows:
    st.stop()


@st.fragment(run_every="10s" if svc.running(cid) else None)
def one_step() -> None:
    """One Grow step's per-source, length and Best-of-N views (refreshed less often: heavier queries)."""
    stamp = queries.stamp(cid)
    st.subheader("One Grow step")
    c1, c2 = st.columns(2)
    g = c1.selectbox("Grow step", grows, index=len(grows) - 1, key="dist_grow")
    tau = c2.slider("What-if threshold τ (keep R > τ)", 0.0, 1.0, 0.8, 0.01, key="dist_tau")
    drawn = (t["tau"] for t in queries.thresholds(cid, stamp) if t["grow"] == g and t["tau"] is not None)
    taus = tuple(sorted({round(tau, 4), *drawn}))
    pct = st.column_config.NumberColumn(format="percent")
    st.dataframe(
        [
            {"τ": k["tau"], "kept pairs": k["kept"], "share of D_g kept": k["share"]}
            for k in queries.kept_shares(cid, g, taus, stamp)
        ],
        hide_index=True,
        key="dist_taus",
        column_config={"share of D_g kept": pct},
    )
    # Tabs that rerun on a switch: only the open tab's query runs (each is a full scan of the step).
    tabs = st.tabs(
        ["Per-source percentiles", "Reward vs length", "Best-of-N", "Candidates"],
        key="dist_tabs",
        on_change="rerun",
    )
    if tabs[0].open:
        sp = queries.source_percentiles(cid, g, taus, stamp)
        sampled = (
            f" of {sp['n_sources_total']:,}, a uniform sample"
            if sp["n_sources_total"] > sp["n_sources"]
            else ""
        )
        tabs[0].markdown(f"{sp['n_sources']:,} sources{sampled}; generated candidates")
        tabs[0].plotly_chart(charts.source_bands(sp["bands"]), key="dist_bands")
        tabs[0].dataframe(
            [
                {
                    "τ": e["tau"],
                    "sources with no candidate above τ": e["sources"],
                    "share of sources": e["share"],
                }
                for e in sp["empty_at"]
            ],
            hide_index=True,
            key="dist_empty",
            column_config={"share of sources": pct},
        )
    if tabs[1].open:
        tabs[1].plotly_chart(
            charts.reward_vs_length(queries.reward_vs_length(cid, g, stamp)), key="dist_length"
        )
    if tabs[2].open:
        tabs[2].plotly_chart(charts.best_of_n(queries.best_of_n_curves(cid, g, stamp)), key="dist_bon")
        tabs[2].caption(
            "Evaluation curves come from the campaign's final step (BC baseline `base` and the final "
            "policy); the Grow curve is computed from the stored samples of the step chosen above."
        )
    if tabs[3].open:
        lo, hi = tabs[3].slider("Reward range", 0.0, 1.0, (0.9, 1.0), 0.01, key="dist_range")
        tabs[3].dataframe(queries.samples_between(cid, g, lo, hi, stamp), hide_index=True, key="dist_samples")


one_step()
