"""Reward distributions page: every chart drawn from SQL, and the store's views checked against
plain Python over the same samples."""

from __future__ import annotations

import math
from itertools import combinations

import pytest
from apptest_helpers import AUDITOR, _service, app, frame, texts


@pytest.mark.slow
def test_distributions_page_draws_every_chart_from_sql(campaign):
    db, cid, _ = campaign
    at = app(db, AUDITOR, cid)
    assert not at.exception and [t.value for t in at.title] == ["Reward distributions"]
    # Histogram, ECDF and the open tab (per-source bands); the other tabs run their query only when opened.
    assert [e.key for e in at.get("plotly_chart")] == ["dist_hist", "dist_ecdf", "dist_bands"]
    for tab, key in (("Reward vs length", "dist_length"), ("Best-of-N", "dist_bon"), ("Candidates", None)):
        at.session_state["dist_tabs"] = tab
        at.run()
        assert not at.exception and [e.key for e in at.get("plotly_chart")][2:] == ([key] if key else []), tab
    assert frame(at, "text")["reward"].between(0.9, 1.0).all()  # candidates in the default range 0.9..1.0
    at.session_state["dist_tabs"] = "Per-source percentiles"
    at.run()
    store = _service(db).store
    (n,) = (
        store.cursor()
        .execute("SELECT count(*) FROM samples WHERE campaign_id = ? AND grow = 1", [cid])
        .fetchone()
    )
    assert f"Grow 1: {n:,} scored pairs" in texts(at, "caption")
    filters = frame(at, "rule")
    assert list(filters["kept pairs"]) == [f["kept"] for f in store.filters(cid)]
    at.slider(key="dist_tau").set_value(0.5).run()
    taus = frame(at, "τ")
    (kept,) = (
        store.cursor()
        .execute("SELECT count(*) FROM samples WHERE campaign_id = ? AND grow = 1 AND reward > 0.5", [cid])
        .fetchone()
    )
    assert int(taus.loc[taus["τ"] == 0.5, "kept pairs"].iloc[0]) == kept


@pytest.mark.slow
def test_views_match_plain_python(campaign):
    db, cid, _ = campaign
    store = _service(db).store
    rows = (
        store.cursor()
        .execute(
            "SELECT source_id, sample_idx, reward, n_tokens FROM samples WHERE campaign_id = ? AND grow = 1",
            [cid],
        )
        .fetchall()
    )
    hist = store.reward_histogram(cid, bins=10)
    assert sum(h["n"] for h in hist) == len(rows) and math.isclose(hist[-1]["ecdf"], 1.0)
    for h in hist:
        assert h["n"] == sum(1 for r in rows if min(max(int(math.floor(r[2] * 10)), 0), 9) == h["bin"])
    for k in store.kept_shares(cid, 1, [0.0, 0.5, 0.99]):
        assert k["kept"] == sum(1 for r in rows if r[2] > k["tau"])
    gen = [r for r in rows if r[1] >= 0]
    by_src: dict[str, list[float]] = {}
    for sid, _, rew, _ in gen:
        by_src.setdefault(sid, []).append(rew)
    for b in store.grow_best_of_n(cid, 1, [1, 2]):  # exact expectation over all n-subsets of each source
        want = sum(
            sum(max(c) for c in combinations(v, b["n"])) / math.comb(len(v), b["n"]) for v in by_src.values()
        )
        assert math.isclose(b["best_of_n"], want / len(by_src), rel_tol=1e-9)
    sp = store.source_percentiles(cid, 1, bands=4, taus=[0.5])
    assert sp["n_sources"] == len(by_src) and sp["empty_at"][0]["sources"] == sum(
        max(v) <= 0.5 for v in by_src.values()
    )
    rl = store.reward_vs_length(cid, 1)
    assert sum(c["n"] for c in rl["cells"]) == sum(1 for r in gen if r[3] is not None)


@pytest.mark.slow
def test_distributions_figures_match_sql_counts_with_the_toggle_off_and_on(campaign):
    """Every share and count on the page says what it counts and equals a plain SQL count on the store:
    all pairs of D_g with the toggle off, generated candidates (sample_idx >= 0) alone with it on."""
    db, cid, _ = campaign
    store = _service(db).store

    def count(where: str) -> int:
        sql = f"SELECT count(*) FROM samples WHERE campaign_id = ? AND grow = 1 AND {where}"
        return store.cursor().execute(sql, [cid]).fetchone()[0]

    (f,) = store.filters(cid)
    assert f["rule"] == "binary"  # ReST-EM keeps R = 1
    kept = "reward >= 1.0 - 1e-9"
    at = app(db, AUDITOR, cid)
    at.session_state["dist_tabs"] = "Candidates"
    at.session_state["dist_range"] = (0.0, 1.0)
    for gen, only, kept_col, n_col, share_col in (
        (False, "true", "kept pairs", "pairs in D_g", "share of D_g kept"),
        (True, "sample_idx >= 0", "kept generated", "generated candidates", "share of generated kept"),
    ):
        at.toggle(key="dist_gen").set_value(gen)
        at.slider(key="dist_tau").set_value(0.5)
        at.run()
        assert not at.exception
        caption = texts(at, "caption")
        assert ("generated candidates only" in caption) == gen
        assert (
            f"Grow 1: {count('true'):,} scored pairs = {count('sample_idx >= 0'):,} generated + "
            f"{count('sample_idx < 0'):,} original pairs of D" in caption
        )
        filters = frame(at, kept_col)
        row = filters.iloc[0]
        n, k = count(only), count(f"{only} AND {kept}")
        assert int(row[kept_col]) == k and int(row[n_col]) == n and math.isclose(row[share_col], k / n)
        if not gen:
            assert int(row["of them original pairs"]) == count(f"sample_idx < 0 AND {kept}")
        taus = frame(at, "τ")
        hit = taus[taus["τ"] == 0.5].iloc[0]
        assert int(hit[kept_col]) == count(f"{only} AND reward > 0.5") and int(hit[n_col]) == n
        cands = frame(at, "origin")
        assert len(cands) == min(20, n)
        assert set(cands["origin"]) == ({"generated"} if gen else {"generated", "reference"})
        assert (cands["sample_idx"] >= 0).all() == gen
        assert ("No generated candidate passed" in texts(at, "warning")) == (gen and k == 0 and f["kept"] > 0)
