"""Rating leases: a served task's place is held for its annotator, so a task is never handed out beyond its
required count, and annotators working at the same time spread over the tasks instead of colliding on one.

Real DuckDB files, real threads: the Rate page's own store calls (next_task, then submit_view / skip_view).
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter

import duckdb
import pytest

from engine.store import Store, now

N_TASKS, REQUIRED, N_ANNOTATORS, N_REQUESTS = 300, 3, 20, 50


def _seed(store: Store, n: int, required: int, cid: str = "load") -> None:
    store.cursor().executemany(
        "INSERT INTO rating_tasks (campaign_id, batch, source_id, source, policy_a, text_a, policy_b, "
        "text_b, required_ratings, created_at) VALUES (?, 'b1', ?, ?, 'p', ?, 'q', ?, ?, ?)",
        [(cid, f"s{i}", f"{i} + {i}?", f"{2 * i}", f"{2 * i + 1}", required, now()) for i in range(n)],
    )


def _lease(store: Store, view: str):
    return store.query_value("SELECT leased_until FROM rating_views WHERE token = ?", [view])


def _run_annotators(stores: list[Store], n_annotators: int, n_requests: int) -> dict[str, list]:
    """Each annotator thread (on stores[k % len(stores)]) asks for a task and submits it, `n_requests` times
    or until nothing is left for them; returns each annotator's outcomes."""
    outcomes: dict[str, list] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(n_annotators)

    def annotator(k: int) -> None:
        store, who, rng = stores[k % len(stores)], f"ann{k:02d}", random.Random(k)
        mine = outcomes.setdefault(who, [])
        try:
            start.wait()
            for _ in range(n_requests):
                task = store.next_task(who)
                if task is None:
                    break
                mine.append(store.submit_view(task["view"], who, rng.randrange(7), rng.randrange(7)))
        except BaseException as e:  # noqa: BLE001 - reported by the test with the thread's name
            errors.append(e)

    threads = [threading.Thread(target=annotator, args=(k,)) for k in range(n_annotators)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads)
    return outcomes


def test_twenty_annotators_at_once_fill_every_task_exactly(tmp_path):
    """20 annotators x 50 requests on 300 tasks needing 3 ratings: 1000 requests for 900 places. Every task
    ends with exactly 3 ratings, every submit is stored, and the 100 requests too many find nothing left."""
    store = Store(tmp_path / "load.duckdb")
    _seed(store, N_TASKS, REQUIRED)
    outcomes = _run_annotators([store], N_ANNOTATORS, N_REQUESTS)

    every = [o for mine in outcomes.values() for o in mine]
    codes = Counter(o.code for o in every)
    print("outcomes:", dict(codes), "per annotator:", sorted(len(m) for m in outcomes.values()))
    rows = store.cursor().execute("SELECT task_id, annotator, rating_id FROM ratings").fetchall()
    assert len(rows) == codes["stored"]  # rows == successful submits
    assert sorted(r[2] for r in rows) == sorted(o.rating_id for o in every if o.stored)
    assert len({(t, a) for t, a, _ in rows}) == len(rows)  # no annotator rated a task twice
    per_task = Counter(t for t, _, _ in rows)
    assert max(per_task.values()) == REQUIRED  # no task over its required count
    assert len(rows) == N_TASKS * REQUIRED == 900 and len(per_task) == N_TASKS  # all complete
    assert codes == {"stored": 900}  # a served task was held: no submit found it taken by others
    assert store.progress("load") | {"annotators": None} == {
        "tasks": N_TASKS,
        "complete": N_TASKS,
        "partial": 0,
        "unrated": 0,
        "ratings": 900,
        "annotators": None,
        "simulated": 0,
    }
    assert store.next_task("ann00") is None and store.next_task("someone new") is None
    # Held places end with the rating: nothing is left leased.
    assert store.query_value("SELECT count(*) FROM rating_views WHERE leased_until IS NOT NULL", []) == 0
    store.close()


def test_two_store_objects_on_one_file_never_overfill_a_task(tmp_path):
    """Two Store objects in one process on the same file share DuckDB's database but not the store's lock:
    the lease is still taken atomically with its check, because every change of a task's places writes
    the task's row in the same transaction, and a write-write conflict makes the later one run again."""
    first = Store(tmp_path / "two.duckdb")
    _seed(first, 30, 2)
    second = Store(tmp_path / "two.duckdb")
    outcomes = _run_annotators([first, second], 8, 10)
    every = [o for mine in outcomes.values() for o in mine]
    rows = first.cursor().execute("SELECT task_id, annotator FROM ratings").fetchall()
    assert len(rows) == sum(o.stored for o in every) == 60  # 80 requests for 60 places: all filled
    assert Counter(t for t, _ in rows) == {t: 2 for t in range(1, 31)}
    assert len(set(rows)) == len(rows)
    second.close()
    first.close()


@pytest.fixture
def small(tmp_path):
    store = Store(tmp_path / "lease.duckdb")
    _seed(store, 2, 1)
    yield store
    store.close()


def test_a_served_task_is_held_and_a_reload_shows_it_again(small):
    store = small
    t = store.next_task("ann")
    until = _lease(store, t["view"])
    assert until is not None and 590 <= (until - now()).total_seconds() <= 600  # 10 minutes by default
    other = store.next_task("bob")
    assert other["task_id"] != t["task_id"]  # the only place of ann's task is hers while she holds it
    assert store.next_task("cid") is None  # both tasks held: nothing for a third annotator now
    # The Rate page's progress line agrees: nothing left for the third, one (her own held task) for ann.
    assert store.annotator_progress("cid")["left"] == 0 and store.annotator_progress("ann")["left"] == 1
    again = store.next_task("ann")  # a reload: same task, same sides, same token
    assert {k: again[k] for k in ("task_id", "view", "text_left", "text_right", "shown_order")} == {
        k: t[k] for k in ("task_id", "view", "text_left", "text_right", "shown_order")
    }
    shown = store.view_task(t["view"], "ann")  # the page showing its pinned task renews the hold
    assert shown["view"] == t["view"] and _lease(store, t["view"]) > until
    assert store.submit_view(t["view"], "ann", 5, 1).stored
    assert _lease(store, t["view"]) is None  # completed by the rating
    assert store.query_value("SELECT count(*) FROM rating_views", []) == 2  # one view per served pair


def test_a_skip_releases_the_place_at_once(small):
    store = small
    t = store.next_task("ann")
    store.next_task("bob")
    assert store.next_task("cid") is None
    store.skip_view(t["view"], "ann")
    assert _lease(store, t["view"]) is None
    freed = store.next_task("cid")
    assert freed["task_id"] == t["task_id"]  # the place ann gave up is served next
    assert store.submit_view(freed["view"], "cid", 2, 2).stored
    assert store.submit_view(t["view"], "ann", 3, 3).code == "complete"  # a late click on the skipped task


def test_an_abandoned_page_frees_its_place_when_the_lease_runs_out(small):
    store = small
    store.rating_lease_seconds = 0.3
    t = store.next_task("ann")
    store.next_task("bob")
    assert store.next_task("cid") is None
    time.sleep(0.4)  # ann's and bob's pages are left idle past their holds
    taken = store.next_task("cid", lease_seconds=60)
    assert taken["task_id"] == t["task_id"]  # the most advanced open task, here the first one
    # ann comes back: her task went to cid meanwhile, so her page moves on and a late submit says why.
    assert store.view_task(t["view"], "ann") is None
    out = store.submit_view(t["view"], "ann", 4, 4)
    assert (out.code, out.stored) == ("complete", False) and "hold on it ran out" in out.reason
    nxt = store.next_task("ann")  # bob's task is free again (his hold ran out too): ann gets it
    assert nxt is not None and nxt["task_id"] != t["task_id"]
    assert store.submit_view(taken["view"], "cid", 6, 0).stored
    # An expired hold whose place nobody took still takes the rating.
    time.sleep(0.4)
    assert store.submit_view(nxt["view"], "ann", 1, 2).stored
    assert Counter(r["task_id"] for r in store.ratings("load")) == {1: 1, 2: 1}


def test_lease_time_must_be_positive(small):
    with pytest.raises(ValueError, match="lease_seconds must be a number of seconds > 0, got 0"):
        small.next_task("ann", lease_seconds=0)
    small.rating_lease_seconds = -5
    with pytest.raises(ValueError, match="got -5"):
        small.next_task("ann")
    assert small.query_value("SELECT count(*) FROM rating_views", []) == 0


def test_a_store_from_before_leases_gets_its_columns_and_serves(tmp_path):
    path = tmp_path / "old.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute(
            "CREATE TABLE rating_tasks (task_id BIGINT PRIMARY KEY, campaign_id VARCHAR NOT NULL, "
            "batch VARCHAR NOT NULL, source_id VARCHAR NOT NULL, source VARCHAR NOT NULL, "
            "policy_a VARCHAR NOT NULL, text_a VARCHAR NOT NULL, policy_b VARCHAR NOT NULL, "
            "text_b VARCHAR NOT NULL, grow INTEGER, required_ratings INTEGER NOT NULL, "
            "created_at TIMESTAMP NOT NULL);"
            "CREATE TABLE rating_views (task_id BIGINT NOT NULL, annotator VARCHAR NOT NULL, "
            "shown_order VARCHAR NOT NULL, token VARCHAR NOT NULL UNIQUE, served_at TIMESTAMP NOT NULL, "
            "PRIMARY KEY (task_id, annotator));"
            "INSERT INTO rating_tasks VALUES (1, 'old', 'b1', 's1', 'src', 'p', 'x', 'q', 'y', NULL, 2, "
            "now()::TIMESTAMP);"
            "INSERT INTO rating_views VALUES (1, 'ann', 'ba', '00ff00ff00ff00ff', now()::TIMESTAMP);"
        )
    store = Store(path)
    t = store.next_task("ann")  # the view served before leases existed comes back, now held
    assert (t["view"], t["shown_order"]) == ("00ff00ff00ff00ff", "ba") and _lease(
        store, t["view"]
    ) is not None
    assert store.next_task("bob")["task_id"] == 1  # one place of two held: the other is free
    assert store.next_task("cid") is None
    store.close()


def test_leaving_the_rate_page_releases_the_place_at_once(small):
    store = small
    held = store.next_task("ann")
    other = store.next_task("bob")
    assert store.next_task("cid") is None  # both places held
    store.release_leases("ann")  # what the dashboard calls when ann opens another page
    assert _lease(store, held["view"]) is None and _lease(store, other["view"]) is not None
    assert store.next_task("cid")["task_id"] == held["task_id"]
