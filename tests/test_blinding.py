"""Blinding on a real DuckDB file: stored sides drawn per task, display orders drawn once per annotator and
kept, statistics read by policy whatever the side and order, gate tasks built from validation outputs, the
simulated annotator flagged, and the Rate page (Streamlit AppTest) showing neither policy nor task id and
drawing model text literally.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine import ratings as hr
from engine.rewards import chrf
from engine.steps.grow import SAMPLE_SCHEMA
from engine.store.core import CoreStore
from engine.store.ratings import RatingsMixin

CID = "blind"
N_TRAIN, N_VAL = 220, 60
NEW = "g2-i1"


class S(RatingsMixin, CoreStore):
    pass


def _eval_output(cid: str, policy: str, split: str, sid: str, text: str, shard: str = "e1") -> list:
    return [cid, policy, split, sid, text, len(text.split()), 0.5, shard]


def add_eval_outputs(store, rows: list[list]) -> None:
    store.cursor().executemany("INSERT INTO eval_outputs VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)


@pytest.fixture
def store(tmp_path: Path) -> S:
    """Training sources with one Grow sample each of base (grow 1) and g1-i1 (grow 2); validation sources with
    greedy outputs of base and g2-i1 (the last one without any)."""
    s = S(tmp_path / "b.duckdb")
    s.create_campaign(CID, "blinding", "rest", {}, str(tmp_path))
    s.add_prompts(
        CID, "train", [(f"t{i}", f"train source {i}", f"train reference {i}") for i in range(N_TRAIN)]
    )
    s.add_prompts(
        CID, "validation", [(f"v{i}", f"val source {i}", f"val reference {i}") for i in range(N_VAL)]
    )
    for g, pol in ((1, "base"), (2, "g1-i1")):
        rows = [
            dict(
                grow=g,
                source_id=f"t{i}",
                sample_idx=0,
                text=f"{pol} says {i}",
                n_tokens=3,
                sum_logprob=-1.0,
                policy=pol,
                reward=0.5,
                reward_version="v",
            )
            for i in range(N_TRAIN)
        ]
        pq.write_table(pa.Table.from_pylist(rows, schema=SAMPLE_SCHEMA), tmp_path / f"g{g}.parquet")
        s.ingest_shard(CID, "samples", f"g{g}", tmp_path / f"g{g}.parquet")
    add_eval_outputs(
        s,
        [
            _eval_output(CID, p, "validation", f"v{i}", f"{p} answer {i}")
            for p in ("base", NEW)
            for i in range(59)
        ],
    )
    return s


def _orientations(tasks: list[dict], baseline: str) -> Counter:
    return Counter("baseline-a" if t["policy_a"] == baseline else "baseline-b" for t in tasks)


# ---------------------------------------------------------------- stored sides


def test_stored_sides_are_drawn_per_task_for_samples_and_gate_tasks(store: S):
    made = store.create_rating_tasks(CID, "base", "g1-i1", n=200, required_ratings=1, seed=0)
    assert made["n_tasks"] == 200
    tasks = store.rating_tasks(CID)
    for t in tasks:  # whichever side a policy landed on, its own text is there, and the baseline is recorded
        assert t["baseline"] == "base" and {t["policy_a"], t["policy_b"]} == {"base", "g1-i1"}
        assert t["text_a"] == f"{t['policy_a']} says {t['source_id'][1:]}"
        assert t["text_b"] == f"{t['policy_b']} says {t['source_id'][1:]}"
    sides = _orientations(tasks, "base")
    # Both occur, and neither dominates: outside 60..140 of 200 has probability about 1e-8 for a fair coin.
    assert set(sides) == {"baseline-a", "baseline-b"} and 60 <= sides["baseline-a"] <= 140, sides

    # Gate tasks from validation outputs: the same coin per task (59 tasks; all on one side: p = 2^-58).
    gate = store.create_gate_tasks(CID, NEW, n=100, required_ratings=1)
    assert gate["n_tasks"] == 59
    gtasks = [t for t in store.rating_tasks(CID) if t["split"] == "validation"]
    assert set(_orientations(gtasks, "base")) == {"baseline-a", "baseline-b"}


# ---------------------------------------------------------------- display order


def test_display_order_is_drawn_once_stored_and_survives_a_restart(store: S, tmp_path: Path):
    store.create_rating_tasks(CID, "base", "g1-i1", n=1, required_ratings=100, seed=0)
    (task,) = store.rating_tasks(CID)
    first = {f"ann{i}": store.next_task(f"ann{i}", CID) for i in range(60)}
    assert set(Counter(t["shown_order"] for t in first.values())) == {"ab", "ba"}
    tokens = [t["view"] for t in first.values()]
    assert len(set(tokens)) == 60 and all(re.fullmatch(r"[0-9a-f]{16}", v) for v in tokens)
    for ann, t in first.items():  # a reload: the same view, order and sides
        again = store.next_task(ann, CID)
        assert (again["view"], again["shown_order"], again["text_left"], again["text_right"]) == (
            t["view"],
            t["shown_order"],
            t["text_left"],
            t["text_right"],
        )
        sides = (task["text_a"], task["text_b"])
        assert (t["text_left"], t["text_right"]) == (sides if t["shown_order"] == "ab" else sides[::-1])
    (n_views,) = store.cursor().execute("SELECT count(*) FROM rating_views").fetchone()
    assert n_views == 60  # one row per (task, annotator), drawn the first time only
    store.close()
    reopened = S(tmp_path / "b.duckdb")  # the order lives in the store, not in a process or a browser
    for ann, t in first.items():
        assert reopened.next_task(ann, CID)["view"] == t["view"]
        assert reopened.rating_view(t["view"])["shown_order"] == t["shown_order"]


def test_submission_takes_the_order_from_the_store(store: S):
    store.create_rating_tasks(CID, "base", "g1-i1", n=2, required_ratings=2, seed=0)
    t = store.next_task("ann", CID)
    # A token is only good for the annotator it was served to: anything else is refused, and says so.
    assert store.submit_view(t["view"], "bob", 1, 2).code == "not_yours"
    assert store.submit_view("0123456789abcdef", "ann", 1, 2).code == "not_yours"
    assert store.ratings(CID) == []
    assert store.submit_view(t["view"], "ann", score_left=6, score_right=1).stored
    assert store.submit_view(t["view"], "ann", 6, 1).code == "already_rated"
    (r,) = store.ratings(CID)
    task = next(x for x in store.rating_tasks(CID) if x["task_id"] == t["task_id"])
    left_side = "a" if t["shown_order"] == "ab" else "b"
    assert r[f"score_{left_side}"] == 6 and r["shown_order"] == t["shown_order"] and not r["simulated"]
    assert task[f"text_{left_side}"] == t["text_left"]
    nxt = store.next_task("ann", CID)
    assert nxt["task_id"] != t["task_id"]
    store.skip_view(nxt["view"], "ann")
    assert store.next_task("ann", CID) is None


# ---------------------------------------------------------------- statistics by policy


def _row(task: int, ann: str, pa_: str, a: int, pb_: str, b: int, order: str) -> dict:
    return dict(
        task_id=task,
        annotator=ann,
        policy_a=pa_,
        policy_b=pb_,
        score_a=a,
        score_b=b,
        shown_order=order,
        baseline="base",
    )


def test_human_eval_diff_reads_ratings_by_policy_in_both_orientations_and_orders():
    rows = [
        _row(1, "x", "base", 2, "new", 4, "ab"),  # t1 stored (base, new): base 2, 2; new 4, 5 -> +2.5
        _row(1, "y", "base", 2, "new", 5, "ba"),
        _row(2, "x", "new", 6, "base", 3, "ab"),  # t2 stored (new, base): new 6, 5; base 3, 3 -> +2.5
        _row(2, "y", "new", 5, "base", 3, "ba"),
        _row(3, "x", "new", 1, "base", 4, "ba"),  # t3: new 1, base 4 -> -3
        _row(4, "y", "base", 3, "new", 3, "ab"),  # t4: tie -> 0
    ]
    # By hand: diff = (2.5 + 2.5 - 3 + 0) / 4 = 0.5;
    # base means (2, 3, 4, 3) -> 3.0; new (4.5, 5.5, 1, 3) -> 3.5.
    # Per rating (new - base): +2, +3, +3, +2, -3, 0 -> win 4/6, tie 1/6, loss 1/6. Reading by stored side
    # instead (b - a) would give (2.5 - 2.5 + 3 + 0) / 4 = 0.75.
    res = hr.human_eval_diff(rows, baseline="base", seed=0)
    assert res["diff"] == pytest.approx(0.5) and res["mean"] == {"base": 3.0, "new": 3.5}
    assert (res["baseline"], res["other"], res["n_tasks"], res["n_ratings"]) == ("base", "new", 4, 6)
    assert (res["win"], res["tie"], res["loss"]) == pytest.approx((4 / 6, 1 / 6, 1 / 6))
    assert -3 <= res["ci_low"] < 0.5 < res["ci_high"] <= 2.5
    assert hr.human_eval_diff(rows, seed=0)["diff"] == pytest.approx(0.5)  # the recorded baseline
    assert hr.human_eval_diff(rows, baseline="new")["diff"] == pytest.approx(-0.5)
    (table,) = hr.human_eval_table(rows)
    assert (table["baseline"], table["diff"]) == ("base", pytest.approx(0.5))
    # Agreement is over candidates: swapping which policy was stored as side a changes nothing.
    flipped = [
        r | dict(policy_a=r["policy_b"], policy_b=r["policy_a"], score_a=r["score_b"], score_b=r["score_a"])
        for r in rows
    ]
    assert hr.human_eval_diff(flipped, baseline="base")["diff"] == pytest.approx(0.5)
    assert hr.agreement(flipped)["alpha"] == pytest.approx(hr.agreement(rows)["alpha"])


def _judge(text: str) -> int:
    """A rater who reads the candidate: base's answer to source i is worth i % 3, the new policy's two points
    more for i < 30 and one point more from 30 on."""
    policy, _, i = text.split()
    i = int(i)
    return i % 3 + (0 if policy == "base" else 2 if i < 30 else 1)


def test_gate_diff_from_the_store_with_ratings_in_both_orders(store: S):
    add_eval_outputs(
        store, [_eval_output(CID, p, "validation", "v59", f"{p} answer 59") for p in ("base", NEW)]
    )
    made = store.create_gate_tasks(CID, NEW, baseline="base", n=60, required_ratings=2)
    assert made["n_tasks"] == 60
    for ann in ("ann", "bob"):
        while (t := store.next_task(ann, CID)) is not None:
            store.submit_view(t["view"], ann, _judge(t["text_left"]), _judge(t["text_right"]))
    rows = [r for r in store.ratings(CID) if {r["policy_a"], r["policy_b"]} == {"base", NEW}]
    assert len(rows) == 120
    assert {r["shown_order"] for r in rows} == {"ab", "ba"}
    assert {r["policy_a"] for r in rows} == {"base", NEW}
    # By hand over i = 0..59: diff = (30 * 2 + 30 * 1) / 60 = 1.5; base's mean is mean(i % 3) = 60 / 60 = 1.0.
    res = hr.human_eval_diff(rows, baseline="base")
    assert res["diff"] == pytest.approx(1.5) and res["mean"] == {"base": 1.0, NEW: 2.5}
    assert 1.0 <= res["ci_low"] < 1.5 < res["ci_high"] <= 2.0 and res["preferred"] == NEW
    assert (res["win"], res["tie"], res["loss"]) == (1.0, 0.0, 0.0)
    assert hr.rating_stats(store, CID)["pairs"][0]["diff"] == pytest.approx(1.5)
    assert hr.agreement(rows)["alpha"] == 1.0  # the two raters read every candidate the same


# ---------------------------------------------------------------- gate tasks


def test_gate_tasks_come_from_eval_outputs_and_top_up(store: S):
    out = store.create_gate_tasks(CID, NEW, n=5, required_ratings=2)
    assert (out["n_tasks"], out["batch"], out["n_existing"]) == (5, f"gate-{NEW}", 0)
    tasks = store.rating_tasks(CID)
    for t in tasks:
        i = t["source_id"][1:]
        assert t["split"] == "validation" and t["source"] == f"val source {i}" and t["required_ratings"] == 2
        assert {t["text_a"], t["text_b"]} == {f"base answer {i}", f"{NEW} answer {i}"}
        assert t["baseline"] == "base" and t["grow"] is None and t["sample_idx_a"] is None
    # The gate may call it every time it is checked: nothing is added once n tasks exist for the pair.
    assert store.create_gate_tasks(CID, NEW, n=5)["n_tasks"] == 0
    more = store.create_gate_tasks(CID, NEW, n=8)
    assert (more["n_tasks"], more["n_existing"]) == (3, 5)
    assert store.create_gate_tasks("blind", "base", baseline=NEW, n=8)["n_tasks"] == 0  # the pair either way
    assert len({t["source_id"] for t in store.rating_tasks(CID)}) == 8
    # Training-sample tasks of another pair do not count, and a source missing from the prompts is not used.
    add_eval_outputs(store, [_eval_output(CID, NEW, "validation", "v-unknown", "orphan")])
    store.create_gate_tasks(CID, NEW, n=100)
    assert "v-unknown" not in {t["source_id"] for t in store.rating_tasks(CID)}
    assert len(store.rating_tasks(CID)) == 59
    with pytest.raises(ValueError, match=r"policy 'g9-i9' has no validation outputs.*\['base', 'g2-i1'\]"):
        store.create_gate_tasks(CID, "g9-i9")
    with pytest.raises(ValueError, match="compares two policies"):
        store.create_gate_tasks(CID, "base")
    ref = store.create_gate_tasks(CID, NEW, baseline="reference", n=3)
    assert ref["n_tasks"] == 3
    (t,) = [x for x in store.rating_tasks(CID) if x["task_id"] == ref["task_ids"][0]]
    assert f"val reference {t['source_id'][1:]}" in (t["text_a"], t["text_b"])


# ---------------------------------------------------------------- simulated annotator


def test_simulated_ratings_are_flagged_and_reported(store: S):
    store.create_gate_tasks(CID, NEW, baseline="reference", n=6, required_ratings=5)
    oracle = lambda source, text, reference: chrf(text, reference)  # noqa: E731
    out = hr.simulate_ratings(store, CID, oracle, noise=0.0, seed=0)
    assert out["n_ratings"] == 6 and out["annotator"] == "simulated-oracle"
    tasks = {t["task_id"]: t for t in store.rating_tasks(CID)}
    prompts = dict(
        store.cursor()
        .execute("SELECT source_id, reference FROM prompts WHERE split = 'validation'")
        .fetchall()
    )
    for r in store.ratings(CID):
        t = tasks[r["task_id"]]
        ref = prompts[t["source_id"]]
        assert r["simulated"] is True and r["annotator"] == "simulated-oracle"
        for side in "ab":  # noise 0: exactly the oracle on the 0..6 scale; the reference itself scores 6
            assert r[f"score_{side}"] == round(6 * chrf(t[f"text_{side}"], ref))
            if t[f"policy_{side}"] == "reference":
                assert r[f"score_{side}"] == 6
    # A person rates one task: the statistics say how many of the ratings are simulated.
    t = store.next_task("ann", CID)
    store.submit_view(t["view"], "ann", 3, 4)
    st = hr.rating_stats(store, CID)
    assert st["simulated"] == {"ratings": 6, "annotators": ["simulated-oracle"]}
    assert st["progress"]["simulated"] == 6 and st["progress"]["ratings"] == 7
    assert st["pairs"][0]["n_simulated"] == 6 and st["pairs"][0]["n_ratings"] == 7
    assert st["agreement"]["simulated_ratings"] == 6 and st["agreement"]["simulated_annotators"] == 1
    assert [r["annotator"] for r in store.ratings(CID, simulated=False)] == ["ann"]
    assert len(store.ratings(CID, simulated=True)) == 6
    # Again: every open task already has this annotator's rating. A person's name is refused.
    assert hr.simulate_ratings(store, CID, oracle)["n_ratings"] == 0
    with pytest.raises(ValueError, match="'ann' has ratings made by a person"):
        hr.simulate_ratings(store, CID, oracle, annotator="ann")
    with pytest.raises(ValueError, match=r"oracle must return a value in \[0, 1\]"):
        hr.simulate_ratings(store, CID, lambda s, t, r: 7.0, annotator="sim-2")
    # Noise is seeded: the same seed gives the same scores, and noise moves some of them off the oracle.
    noisy = [hr.simulate_ratings(store, CID, oracle, noise=0.3, seed=5, annotator=f"sim-{k}") for k in (3, 4)]
    scores = {
        a: sorted(
            (r["task_id"], r["score_a"], r["score_b"]) for r in store.ratings(CID) if r["annotator"] == a
        )
        for a in ("sim-3", "sim-4", "simulated-oracle")
    }
    assert noisy[0]["n_ratings"] == noisy[1]["n_ratings"] > 0
    assert scores["sim-3"] == scores["sim-4"]
    exact = {s[0]: s for s in scores["simulated-oracle"]}
    assert any(s != exact[s[0]] for s in scores["sim-3"] if s[0] in exact)


# ---------------------------------------------------------------- the Rate page


MARKUP = "**bold** <b>x</b>\n# title"
SECRET = ("pol-alpha-secret", "pol-omega-secret")
WORD = dict(zip(SECRET, ("kiwi", "plum")))  # what tells the two candidates apart, with no policy name in it


def _page_dump(at) -> str:
    """Everything the app sent for the page: every element's and block's protobuf, as text."""
    out: list[str] = []

    def walk(node) -> None:
        proto = getattr(node, "proto", None)
        if proto is not None:
            out.append(str(proto))
        children = getattr(node, "children", None) or {}
        for child in children.values():
            walk(child)

    walk(at._tree)
    return "\n".join(out)


@pytest.fixture
def rate_db(empty_db: Path, tmp_path: Path) -> Path:
    """The dashboard's store with gate tasks between two policies with telltale names, on task ids too long to
    appear on the page by chance; sources and candidates carry Markdown and HTML."""
    from apptest_helpers import _service

    store = _service(empty_db).store
    store.create_campaign("blind-page", "blind-page", "rest", {}, str(tmp_path))
    store.cursor().execute("SELECT max(nextval('rating_task_seq')) FROM range(734511)")
    store.add_prompts(
        "blind-page", "validation", [(f"v{i}", f"{MARKUP} source {i}", f"ref {i}") for i in range(3)]
    )
    add_eval_outputs(
        store,
        [
            _eval_output("blind-page", p, "validation", f"v{i}", f"{MARKUP} {WORD[p]} {i}")
            for p in SECRET
            for i in range(3)
        ],
    )
    made = store.create_gate_tasks("blind-page", SECRET[1], baseline=SECRET[0], n=3, required_ratings=1)
    assert made["n_tasks"] == 3 and min(made["task_ids"]) > 700000
    return empty_db


def test_rate_page_is_blind_literal_and_stable(rate_db: Path):
    from apptest_helpers import ANNOTATOR, _service, app, texts
    from test_page_rate import view_token

    store = _service(rate_db).store
    at = app(rate_db, ANNOTATOR)
    assert not at.exception
    view = view_token(at)
    served = store.rating_view(view)
    task = next(t for t in store.rating_tasks("blind-page") if t["task_id"] == served["task_id"])
    page = _page_dump(at)
    assert view in page and "kiwi" in page and "plum" in page  # the dump holds the widgets and candidates
    for secret in (*SECRET, "secret", "alpha", "omega", str(task["task_id"]), task["batch"]):
        assert secret not in page, secret
    assert not re.search(r"Task \d", page)
    # Literal text: the candidates in code blocks, the source in a text element, exactly as stored; nothing
    # of theirs is handed to Markdown or HTML.
    sides = (task["text_a"], task["text_b"])
    assert (at.code[0].value, at.code[1].value) == (sides if served["shown_order"] == "ab" else sides[::-1])
    assert [t.value for t in at.text] == [task["source"]]
    rendered = texts(at, "markdown") + texts(at, "caption") + "".join(h.proto.body for h in at.get("html"))
    assert "bold" not in rendered and "<b>x</b>" not in rendered and "title" not in rendered
    # A new session (a reload) shows the same task in the same order.
    again = app(rate_db, ANNOTATOR)
    assert view_token(again) == view and (again.code[0].value, again.code[1].value) == (
        at.code[0].value,
        at.code[1].value,
    )
    # Submitting through the page stores the scores on the sides the store says were shown.
    at.button_group(key=f"rate_left_{view}").set_value(5)
    at = at.button_group(key=f"rate_right_{view}").set_value(1).run()
    at = at.button(key=f"rate_submit_{view}").click().run()
    assert not at.exception
    (r,) = store.ratings("blind-page")
    left = "a" if served["shown_order"] == "ab" else "b"
    right = "b" if left == "a" else "a"
    assert (r[f"score_{left}"], r[f"score_{right}"], r["shown_order"]) == (5, 1, served["shown_order"])
    assert view_token(at) != view  # the next task, in a view of its own


def test_agreement_page_says_how_many_ratings_are_simulated(rate_db: Path):
    from apptest_helpers import AUDITOR, _service, app, texts

    store = _service(rate_db).store
    out = hr.simulate_ratings(store, "blind-page", lambda s, t, r: 0.5, noise=0.0)
    assert out["n_ratings"] == 3
    at = app(rate_db, AUDITOR, "blind-page")
    at.switch_page("app_pages/agreement.py").run()
    assert not at.exception
    assert "3 of 3 ratings are simulated (written by simulated-oracle" in texts(at, "warning")


OLD_SCHEMA = """
CREATE SEQUENCE rating_task_seq; CREATE SEQUENCE rating_seq;
CREATE TABLE rating_tasks (
    task_id BIGINT DEFAULT nextval('rating_task_seq') PRIMARY KEY, campaign_id VARCHAR NOT NULL,
    batch VARCHAR NOT NULL, source_id VARCHAR NOT NULL, source VARCHAR NOT NULL,
    policy_a VARCHAR NOT NULL, text_a VARCHAR NOT NULL, policy_b VARCHAR NOT NULL, text_b VARCHAR NOT NULL,
    grow INTEGER, required_ratings INTEGER NOT NULL, created_at TIMESTAMP NOT NULL,
    grow_a INTEGER, sample_idx_a INTEGER, sample_idx_b INTEGER);
CREATE TABLE ratings (
    rating_id BIGINT DEFAULT nextval('rating_seq') PRIMARY KEY, task_id BIGINT NOT NULL,
    annotator VARCHAR NOT NULL, score_a SMALLINT NOT NULL, score_b SMALLINT NOT NULL,
    shown_order VARCHAR NOT NULL, ts TIMESTAMP NOT NULL, UNIQUE (task_id, annotator));
INSERT INTO rating_tasks (campaign_id, batch, source_id, source, policy_a, text_a, policy_b, text_b,
    required_ratings, created_at) VALUES ('old', 'b1', 's1', 'src', 'base', 'A', 'g1-i1', 'B', 2, now());
INSERT INTO ratings (task_id, annotator, score_a, score_b, shown_order, ts)
    VALUES (1, 'ann', 2, 5, 'ba', now());
"""


def test_a_store_made_before_blinding_opens_and_reads_side_a_as_the_baseline(tmp_path: Path):
    import duckdb

    path = tmp_path / "old.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute(OLD_SCHEMA)
    s = S(path)
    s.create_campaign("old", "old", "rest", {}, str(tmp_path))
    (r,) = s.ratings("old")
    assert (r["baseline"], r["split"], r["simulated"], r["score_a"], r["score_b"]) == (
        "base",
        "train",
        False,
        2,
        5,
    )
    assert hr.human_eval_diff([r])["diff"] == 3.0 and hr.human_eval_diff([r])["baseline"] == "base"
    t = s.next_task("bob", "old")  # the task is still open for a second annotator, in a view of their own
    assert t["task_id"] == 1 and s.rating_view(t["view"])["annotator"] == "bob"
    s.submit_view(t["view"], "bob", 1, 1)
    assert s.progress("old") == {
        "tasks": 1,
        "complete": 1,
        "partial": 0,
        "unrated": 0,
        "ratings": 2,
        "annotators": 2,
        "simulated": 0,
    }


def test_operator_builds_validation_tasks_from_the_rate_page(empty_db: Path, tmp_path: Path):
    from apptest_helpers import OPERATOR, _service, app, texts

    store = _service(empty_db).store
    store.create_campaign("ops", "ops", "rest", {}, str(tmp_path))
    for pol in ("base", NEW):
        store.add_checkpoint("ops", pol, str(tmp_path / pol), None, None, None)
    store.add_prompts("ops", "validation", [(f"v{i}", f"val source {i}", f"ref {i}") for i in range(4)])
    add_eval_outputs(
        store,
        [
            _eval_output("ops", p, "validation", f"v{i}", f"{p} answer {i}")
            for p in ("base", NEW)
            for i in range(4)
        ],
    )
    at = app(empty_db, OPERATOR, "ops")
    at.switch_page("app_pages/rate.py").run()
    # No Grow samples in this campaign: the samples form offers no pair and says why.
    assert "No policy has generated samples in this campaign yet." in texts(at, "caption")
    at = at.radio(key="rate_origin").set_value("Validation outputs (greedy)").run()
    # Only policies with validation outputs are offered; the default pair is BC vs the latest checkpoint.
    assert list(at.selectbox(key="rate_pa").options) == ["reference", "base", NEW]
    assert at.selectbox(key="rate_pa").value == "base" and at.selectbox(key="rate_pb").value == NEW
    at = at.number_input(key="rate_n").set_value(3).run()
    at = at.button(key="rate_create").click().run()
    assert not at.exception and "3 tasks created." in texts(at, "success")
    tasks = store.rating_tasks("ops")
    assert len(tasks) == 3 and {t["split"] for t in tasks} == {"validation"}
    assert {t["baseline"] for t in tasks} == {"base"} and all(
        {t["policy_a"], t["policy_b"]} == {"base", NEW} for t in tasks
    )
