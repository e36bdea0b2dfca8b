"""Agreement page: a hint where ratings come from while there are none; with ratings, the reliability of
the agreement in a warning colour unless reliable, the per-policy means as numbers, and the scatter's
legend titled by what it colours."""

from __future__ import annotations

import json

import pytest
from apptest_helpers import AUDITOR, _service, app, texts

PAGE = "app_pages/agreement.py"


@pytest.fixture(scope="module")
def rated(tmp_path_factory):
    from rating_store import rating_campaign

    return rating_campaign(tmp_path_factory.mktemp("agree-rated"))


def agreement(db, cid):
    at = app(db, AUDITOR, cid)
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    return at


def test_agreement_page_says_how_to_get_ratings_then_shows_them(rated):
    from engine.ratings import rating_stats

    db, cid = rated
    store = _service(db).store
    hint = texts(agreement(db, cid), "info")
    assert (
        "No ratings yet" in hint and "Governance page" in hint and f"`restgov ratings create {cid}`" in hint
    )

    made = store.create_rating_tasks(cid, "base", "g1-i1", n=6, required_ratings=2, seed=0)
    for tid in made["task_ids"]:  # two annotators who disagree on every task: agreement is unreliable
        store.submit_rating(tid, "ann", 6, 0, "ab")
        store.submit_rating(tid, "bob", 0, 6, "ab")
    stats = rating_stats(store, cid)
    assert stats["agreement"]["label"] == "unreliable"
    at = agreement(db, cid)
    assert ":orange-badge[:material/warning: unreliable]" in texts(at, "markdown")
    assert "green-badge" not in texts(at, "markdown")
    pairs = next(d.value for d in at.dataframe if "mean baseline" in d.value.columns)
    assert "mean" not in pairs.columns
    (want,) = stats["pairs"]
    row = pairs.iloc[0]
    assert row["mean baseline"] == pytest.approx(want["mean"][want["baseline"]])
    assert row["mean other"] == pytest.approx(want["mean"][want["other"]])
    (chart,) = at.get("plotly_chart")
    layout = json.loads(chart.proto.spec)["layout"]
    assert layout["legend"]["title"]["text"] == "Grow step"
