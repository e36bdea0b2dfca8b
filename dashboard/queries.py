"""What the pages read, cached per campaign "stamp" (last state change, samples ingested), plus the campaign
picker.

The aggregations themselves are SQL in engine/store/views.py; caching them means a widget click on a
16M-sample step reuses the numbers instead of re-scanning, while a new shard or state change refreshes them.
"""

from __future__ import annotations

import streamlit as st

from dashboard.charts import filter_thresholds
from dashboard.service import service
from engine.report import campaign_status


def campaigns() -> list[dict]:
    """Campaigns newest first, with `running` (a thread of this server drives it) and sample counts."""
    svc = service()
    running = set(svc.running())
    return [c | {"running": c["id"] in running} for c in svc.store.campaign_list()]


def stamp(cid: str) -> tuple:
    row = next((c for c in service().store.campaign_list() if c["id"] == cid), None)
    return (str(row["updated_at"]), row["n_samples"], row["state"]) if row else ()


def pick_campaign(key: str, label: str = "Campaign") -> str | None:
    """A campaign selectbox (widget key `key`) whose choice holds across reruns and pages.

    The choice is remembered in st.session_state.cid. It becomes the widget's value only when this picker
    has no value yet (the page's first run in this session) or when `cid` changed since this picker last
    ran (chosen on another page, or a campaign just created); otherwise the widget keeps what the user
    chose. The options read "name · id", a text that does not change while a campaign runs, so the
    browser's selection stays valid; the campaign's state is in the picker's label, read in this run.
    """
    rows = {c["id"]: c for c in campaigns()}
    if not rows:
        return None
    ids = list(rows)
    want = st.session_state.get("cid")  # the campaign chosen on another page, or just created
    seen = f"_{key}_cid"  # `cid` as this picker left it on its last run
    if want in rows and (key not in st.session_state or st.session_state.get(seen) != want):
        st.session_state[key] = want
    shown = rows.get(st.session_state.get(key)) or rows[ids[0]]
    state = shown["state"] + (" · running" if shown["running"] else "")
    cid = st.selectbox(
        f"{label} · {state}",
        ids,
        key=key,
        format_func=lambda i: f"{rows[i]['name']} · {i}" if i in rows else str(i),
    )
    st.session_state.cid = st.session_state[seen] = cid
    return cid


@st.cache_data(ttl=3600, max_entries=128, show_spinner=False)
def status(cid: str, stamp: tuple) -> dict:
    return campaign_status(service().store, cid)


@st.cache_data(ttl=3600, max_entries=128, show_spinner=False)
def grows(cid: str, stamp: tuple) -> list[int]:
    return service().store.reward_grows(cid)


@st.cache_data(ttl=3600, max_entries=128, show_spinner=False)
def histogram(cid: str, bins: int, generated_only: bool, stamp: tuple) -> list[dict]:
    return service().store.reward_histogram(cid, bins, generated_only)


@st.cache_data(ttl=3600, max_entries=128, show_spinner=False)
def thresholds(cid: str, stamp: tuple) -> list[dict]:
    """The Improve filters applied so far with their kept share and where a chart draws them
    (charts.filter_thresholds)."""
    return filter_thresholds(service().store.filters(cid))


@st.cache_data(ttl=3600, max_entries=128, show_spinner=False)
def kept_shares(cid: str, grow: int, taus: tuple[float, ...], stamp: tuple) -> list[dict]:
    return service().store.kept_shares(cid, grow, list(taus))


@st.cache_data(ttl=3600, max_entries=64, show_spinner=False)
def source_percentiles(cid: str, grow: int, taus: tuple[float, ...], stamp: tuple) -> dict:
    return service().store.source_percentiles(cid, grow, taus=list(taus))


@st.cache_data(ttl=3600, max_entries=64, show_spinner=False)
def reward_vs_length(cid: str, grow: int, stamp: tuple) -> dict:
    return service().store.reward_vs_length(cid, grow)


@st.cache_data(ttl=3600, max_entries=64, show_spinner=False)
def samples_between(cid: str, grow: int, lo: float, hi: float, stamp: tuple) -> list[dict]:
    return service().store.samples_between(cid, grow, lo, hi, 20)


def best_of_n_curves(cid: str, grow: int, stamp: tuple) -> dict[str, dict[int, float]]:
    """Best-of-N curves: Grow step `grow` from its stored samples, and each policy at the final evaluation."""
    k = service().store.campaign(cid)["config"]["grow"]["samples_per_source"]
    rows = grow_best_of_n(cid, grow, tuple(n for n in (1, 2, 4, 8, 16, 32, 64, 100) if n <= k), stamp)
    n_sources = rows[0]["sources"] if rows else 0
    name = f"Grow {grow} samples (expected best of N of the K={k}, {n_sources:,} sources)"
    return {name: {r["n"]: r["best_of_n"] for r in rows}} | {
        f"{policy} at evaluation": pts for policy, pts in eval_best_of_n(cid, stamp).items()
    }


@st.cache_data(ttl=3600, max_entries=128, show_spinner=False)
def eval_best_of_n(cid: str, stamp: tuple) -> dict[str, dict[int, float]]:
    """The final step's Best-of-N curve per policy (BC baseline and final policy), from the evals table."""
    out: dict[str, dict[int, float]] = {}
    for e in service().store.evals(cid):
        if e["step_key"] == "final" and e["metric"] == "best_of_n":
            out.setdefault(e["policy"], {})[e["n"]] = e["value"]
    return out


@st.cache_data(ttl=3600, max_entries=64, show_spinner=False)
def grow_best_of_n(cid: str, grow: int, ns: tuple[int, ...], stamp: tuple) -> list[dict]:
    return service().store.grow_best_of_n(cid, grow, list(ns))


def needs(*apis: str) -> None:
    """Stop the page with a clear message when the store lacks one of the methods `apis` it calls."""
    store = service().store
    missing = [a for a in apis if not hasattr(store, a)]
    if missing:
        st.info(
            "This page needs store methods this store does not have (missing: " + ", ".join(missing) + ").",
            icon=":material/construction:",
        )
        st.stop()
