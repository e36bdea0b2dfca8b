"""Rate page: blind ratings stored exactly as shown, and skips kept away for the browser session only.

The page knows a task only by the opaque token of the annotator's view (its widgets' keys end with it); the
tests map a token back to its task through the store.
"""

from __future__ import annotations

import time

import pytest
from apptest_helpers import AUDITOR, _service, app, button, texts


def view_token(at) -> str:
    """The view token of the task on the Rate page, from its Submit button's key."""
    return next(b.key for b in at.button if (b.key or "").startswith("rate_submit_")).removeprefix(
        "rate_submit_"
    )


@pytest.mark.slow
def test_annotator_rates_blind_and_exactly_those_ratings_are_stored(campaign):
    db, cid, _ = campaign
    store = _service(db).store
    made = store.create_rating_tasks(cid, "reference", "base", n=3, required_ratings=1, seed=1)
    assert made["n_tasks"] == 3
    at = app(db, {"name": "ann", "role": "annotator"})
    assert [t.value for t in at.title] == ["Rate"]
    shown = []
    for left, right in ((6, 1), (2, 5), (3, 3)):
        view = view_token(at)
        tid = store.rating_view(view)["task_id"]
        page_text = texts(at, "markdown") + texts(at, "caption") + texts(at, "code") + texts(at, "text")
        assert "reference" not in page_text and "base" not in page_text  # blind: no policy names
        shown.append((tid, at.code[0].value, at.code[1].value, left, right))
        at.button_group(key=f"rate_left_{view}").set_value(left)
        at = (
            at.button_group(key=f"rate_right_{view}").set_value(right).run()
        )  # Submit is enabled once both are scored
        at = at.button(key=f"rate_submit_{view}").click().run()
        assert not at.exception
    assert "Nothing left to rate" in texts(at, "success")
    rows = {r["task_id"]: r for r in store.ratings(cid) if r["annotator"] == "ann"}
    tasks = {t["task_id"]: t for t in store.rating_tasks(cid)}
    assert sorted(rows) == sorted(t for t, *_ in shown)
    for tid, text_left, text_right, left, right in shown:
        r, t = rows[tid], tasks[tid]
        # The order stored is the order shown: left was text_a exactly when shown_order is "ab".
        assert (text_left, text_right) == (
            (t["text_a"], t["text_b"]) if r["shown_order"] == "ab" else (t["text_b"], t["text_a"])
        )
        assert (r["score_a"], r["score_b"]) == ((left, right) if r["shown_order"] == "ab" else (right, left))
        assert r["simulated"] is False
    at = app(db, AUDITOR, cid)
    at.switch_page("app_pages/agreement.py").run()
    assert not at.exception and at.metric[1].value == "3"  # ratings


def test_rate_skip_keeps_the_task_away_for_this_session_only(synthetic):
    db, cid = synthetic
    store = _service(db).store
    made = store.create_rating_tasks(cid, "reference", "base", n=2, required_ratings=1, seed=3, batch="skip")[
        "task_ids"
    ]
    who = {"name": "sam", "role": "annotator"}
    at = app(db, who)
    skipped = []
    for _ in made:
        skipped.append(view_token(at))
        at = at.button(key=f"rate_skip_{skipped[-1]}").click().run()
        assert not at.exception
    assert sorted(store.rating_view(v)["task_id"] for v in skipped) == sorted(made)
    assert "Nothing left to rate" in texts(at, "success")
    assert "2 skipped this session" in texts(at, "caption")
    assert store.next_task("sam") is None and store.ratings(cid) == []  # skips are not ratings
    (n,) = store.cursor().execute("SELECT count(*) FROM rating_skips WHERE annotator = 'sam'").fetchone()
    assert n == 2
    assert view_token(app(db, who)) == skipped[0]  # a new session serves them again, in the same view
    at = button(at, "Show the 2 skipped task(s) again").click().run()
    assert view_token(at) == skipped[0]
    # Blind: the keyboard script and the page name no policy and show no reward.
    page = texts(at, "markdown") + texts(at, "caption") + "".join(h.proto.body for h in at.get("html"))
    assert "reference" not in page and "base" not in page and "reward" not in page.lower()
    assert "keydown" in "".join(h.proto.body for h in at.get("html"))


def test_rate_submit_rates_the_task_shown_and_says_when_it_was_refused(synthetic, monkeypatch):
    """Submit acts on the task the page showed, even when the store would now serve another, and every click
    ends in a message: stored, or not stored with the reason."""
    db, cid = synthetic
    store = _service(db).store
    monkeypatch.setattr(store, "rating_lease_seconds", 0.3)  # a short hold on a served task, to outlast
    store.create_rating_tasks(cid, "base", "g1-i1", n=3, required_ratings=2, seed=5, batch="race")
    who = {"name": "rita", "role": "annotator"}
    at = app(db, who)
    view = view_token(at)
    tid = store.rating_view(view)["task_id"]
    at.button_group(key=f"rate_left_{view}").set_value(4)
    at = at.button_group(key=f"rate_right_{view}").set_value(2).run()
    time.sleep(0.4)  # rita's page stays idle past her hold on the task
    # Meanwhile others give the task all its required ratings: the store would serve rita another task now.
    for other in ("oleg", "olaf", "omar"):
        t = store.next_task(other)
        while t is not None and t["task_id"] != tid:  # pass on tasks until the one rita has open
            store.skip_view(t["view"], other)
            t = store.next_task(other)
        if t is not None:
            assert store.submit_view(t["view"], other, 3, 3).stored
    assert store.next_task("rita")["view"] != view
    at = at.button(key=f"rate_submit_{view}").click().run()
    assert not at.exception
    assert "Not stored: this task got its required ratings" in texts(at, "warning")
    assert [r for r in store.ratings(cid) if r["annotator"] == "rita"] == []
    # The next task: rated in another tab first, then submitted here.
    view = view_token(at)
    assert store.submit_view(view, "rita", 1, 1).stored
    at.button_group(key=f"rate_left_{view}").set_value(5)
    at = at.button_group(key=f"rate_right_{view}").set_value(5).run()
    assert "rated in another tab" in texts(at, "info")  # the page moved on, and said why
    view = view_token(at)
    at.button_group(key=f"rate_left_{view}").set_value(6)
    at = at.button_group(key=f"rate_right_{view}").set_value(0).run()
    at = at.button(key=f"rate_submit_{view}").click().run()
    assert not at.exception and "Rating stored." in texts(at, "success")
    mine = [r for r in store.ratings(cid) if r["annotator"] == "rita"]
    assert len(mine) == 2 and store.rating_view(view)["task_id"] in {r["task_id"] for r in mine}


def test_submit_with_one_candidate_scored_names_the_other_and_keeps_the_score(empty_db):
    """Submit (Enter from the keyboard) with only Candidate A scored stores nothing, says that Candidate B is
    still to score, and keeps A's score; once B is scored the message goes and Submit stores both."""
    from engine.store import now

    store = _service(empty_db).store
    store.cursor().execute(
        "INSERT INTO rating_tasks (campaign_id, batch, source_id, source, policy_a, text_a, policy_b, "
        "text_b, required_ratings, created_at) VALUES ('solo', 'b1', 's0', 'What is 2 + 3?', 'pa', "
        "'It is 5.', 'pb', 'Maybe 6.', 1, ?)",
        [now()],
    )
    at = app(empty_db, {"name": "ann", "role": "annotator"})
    view = view_token(at)
    at = at.button_group(key=f"rate_left_{view}").set_value(5).run()
    at = at.button(key=f"rate_submit_{view}").click().run()
    assert not at.exception
    warning = texts(at, "warning")
    assert "Not stored: **Candidate B** has no score yet" in warning and "Candidate A" not in warning
    assert at.button_group(key=f"rate_left_{view}").value == 5 and store.ratings("solo") == []
    at = at.button_group(key=f"rate_right_{view}").set_value(2).run()
    assert "Not stored" not in texts(at, "warning")  # the note goes once B has its score
    at = at.button(key=f"rate_submit_{view}").click().run()
    assert "Rating stored." in texts(at, "success")
    (r,) = store.ratings("solo")
    assert (r["score_a"], r["score_b"]) == ((5, 2) if r["shown_order"] == "ab" else (2, 5))
