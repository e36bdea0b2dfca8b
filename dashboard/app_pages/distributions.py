"""Reward distributions (operator, auditor): histograms and ECDFs per Grow step with the Improve thresholds,
per-source percentiles, reward against output length and Best-of-N. All binned in DuckDB
(engine/store/views.py).
"""

import streamlit as st

from dashboard import charts, queries
from dashboard.auth import require_page
from dashboard.service import service


@st.cache_data(ttl=3600, max_entries=64, show_spinner=False)
def pair_counts(cid: str, stamp: tuple) -> dict[int, dict]:
    return {r["grow"]: r for r in service().store.grow_pair_counts(cid)}


@st.cache_data(ttl=3600, max_entries=64, show_spinner=False)
def filter_counts(cid: str, stamp: tuple) -> list[dict]:
    return service().store.filter_counts(cid)


@st.cache_data(ttl=3600, max_entries=128, show_spinner=False)
def kept_shares(cid: str, grow: int, taus: tuple[float, ...], gen: bool, stamp: tuple) -> list[dict]:
    return service().store.kept_shares(cid, grow, list(taus), gen)


@st.cache_data(ttl=3600, max_entries=64, show_spinner=False)
def samples_between(cid: str, grow: int, lo: float, hi: float, gen: bool, stamp: tuple) -> list[dict]:
    return service().store.samples_between(cid, grow, lo, hi, 20, gen)


def filter_rows(filters: list[dict], gen: bool) -> list[dict]:
    """The Improve filters with kept / counted / share over what the page counts: every pair of D_g, or the
    generated candidates alone (the original pairs of D a filter keeps are then left out of both)."""
    out = []
    for f in filters:
        kept, n = (f["kept_generated"], f["n_generated"]) if gen else (f["kept"], f["n_total"])
        tau = f["tau"] if f["tau"] is not None else (1.0 if f["rule"] == "binary" else None)
        share = kept / n if n else None
        out.append(
            f
            | {"kept_n": kept, "counted": n, "share": share, "tau_drawn": tau}
            | {"share_of": "generated" if gen else "D_g"}
        )
    return out


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
COUNTS = (
    "generated candidates only" if gen else "all pairs of D_g (generated candidates and original pairs of D)"
)
KEPT, COUNTED, SHARE = (
    ("kept generated", "generated candidates", "share of generated kept")
    if gen
    else ("kept pairs", "pairs in D_g", "share of D_g kept")
)
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
    rows, th = queries.histogram(cid, bins, gen, stamp), filter_rows(filter_counts(cid, stamp), gen)
    counts = pair_counts(cid, stamp)
    st.caption(
        f"Charts and tables count **{COUNTS}**. "
        + " · ".join(
            f"Grow {g}: {c['n_total']:,} scored pairs = {c['n_generated']:,} generated + "
            f"{c['n_reference']:,} original pairs of D"
            for g, c in counts.items()
        ),
        help="Updates as shards land. The original pairs of D (the reference answers, sample index -1) are "
        "mixed into D_g and scored like the generated candidates; the toggle leaves them out.",
    )
    left, right = st.columns(2)
    of = "generated" if gen else "D_g"
    left.plotly_chart(charts.histogram(rows, th, of), key="dist_hist")
    right.plotly_chart(charts.ecdf(rows, th, of), key="dist_ecdf")
    if th:
        st.markdown(f"**Improve filters** (what each kept, counting {COUNTS})")
        st.dataframe(
            [
                {k: t[k] for k in ("grow", "improve", "rule", "param", "tau")}
                | {KEPT: t["kept_n"], COUNTED: t["counted"], SHARE: t["share"]}
                | ({} if gen else {"of them original pairs": t["kept_reference"]})
                for t in th
            ],
            hide_index=True,
            key="dist_filters",
            column_config={SHARE: st.column_config.NumberColumn(format="percent")},
        )
        if gen and (none := [t for t in th if t["kept_n"] == 0 and t["kept"]]):
            st.warning(
                "No generated candidate passed the filter of "
                + ", ".join(f"g{t['grow']}-i{t['improve']}" for t in none)
                + ": what it kept were original pairs of D only.",
                icon=":material/warning:",
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
    st.markdown(f"**What a threshold keeps in Grow {g}** (counting {COUNTS})")
    st.dataframe(
        [
            {"τ": k["tau"], KEPT: k["kept"], COUNTED: k["n_total"], SHARE: k["share"]}
            for k in kept_shares(cid, g, taus, gen, stamp)
        ],
        hide_index=True,
        key="dist_taus",
        column_config={SHARE: pct},
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
        tabs[1].caption("Generated candidates only: an original pair of D has no length of the policy's own.")
        tabs[1].plotly_chart(
            charts.reward_vs_length(queries.reward_vs_length(cid, g, stamp)), key="dist_length"
        )
    if tabs[2].open:
        tabs[2].plotly_chart(charts.best_of_n(queries.best_of_n_curves(cid, g, stamp)), key="dist_bon")
        tabs[2].caption(
            "Evaluation curves come from the campaign's final step (BC baseline `base` and the final "
            "policy); the Grow curve is computed from the generated candidates of the step chosen above."
        )
    if tabs[3].open:
        lo, hi = tabs[3].slider("Reward range", 0.0, 1.0, (0.9, 1.0), 0.01, key="dist_range")
        found = samples_between(cid, g, lo, hi, gen, stamp)
        n_ref = sum(r["origin"] == "reference" for r in found)
        tabs[3].caption(
            f"Up to 20 candidates of Grow {g} with {lo:g} ≤ reward ≤ {hi:g}, highest first, from {COUNTS}: "
            f"{len(found) - n_ref} generated, {n_ref} original pairs of D (sample index -1)."
        )
        if found:
            tabs[3].dataframe(found, hide_index=True, key="dist_samples")
        else:
            tabs[3].info(
                f"No {'generated candidate' if gen else 'pair'} of Grow {g} has a reward in [{lo:g}, {hi:g}]."
            )


one_step()
