"""Concurrent submits against one real store: every submit through a view token ends in an explicit outcome.

Twenty annotator threads each ask for a task and submit it twenty times over 100 tasks that need three
ratings, with a short pause between reading the task and submitting it (an annotator scoring), and some
clicks arrive twice. Each submit is stored or refused with a reason; nothing is lost and nothing is stored
twice.
"""

from __future__ import annotations

import random
import threading
from collections import Counter

from engine.store import Store, SubmitOutcome, now

N_TASKS, REQUIRED, N_ANNOTATORS, N_SUBMITS = 100, 3, 20, 20


def _seed(store: Store) -> None:
    store.cursor().executemany(
        "INSERT INTO rating_tasks (campaign_id, batch, source_id, source, policy_a, text_a, policy_b, "
        "text_b, required_ratings, created_at) VALUES ('race', 'b1', ?, ?, 'p', ?, 'q', ?, ?, ?)",
        [(f"s{i}", f"{i} + {i}?", f"{2 * i}", f"{2 * i + 1}", REQUIRED, now()) for i in range(N_TASKS)],
    )


def test_concurrent_submits_each_get_an_outcome_and_none_is_lost(tmp_path):
    store = Store(tmp_path / "race.duckdb")
    _seed(store)
    outcomes: dict[str, list[SubmitOutcome]] = {}
    served: Counter = Counter()  # tasks each annotator was served (some run out of tasks before N_SUBMITS)
    errors: list[BaseException] = []
    start = threading.Barrier(N_ANNOTATORS)

    def annotator(k: int) -> None:
        who, rng, mine = f"ann{k:02d}", random.Random(k), []
        outcomes[who] = mine
        try:
            start.wait()
            for i in range(N_SUBMITS):
                task = store.next_task(who)
                if task is None:
                    break
                served[who] += 1
                threading.Event().wait(rng.uniform(0, 0.01))  # scoring: others submit meanwhile
                mine.append(store.submit_view(task["view"], who, rng.randrange(7), rng.randrange(7)))
                if i % 7 == 3:  # a double click: the same token again
                    mine.append(store.submit_view(task["view"], who, 3, 3))
        except BaseException as e:  # noqa: BLE001 - reported below with the thread's name
            errors.append(e)

    threads = [threading.Thread(target=annotator, args=(k,)) for k in range(N_ANNOTATORS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads)

    every = [o for mine in outcomes.values() for o in mine]
    codes = Counter(o.code for o in every)
    print("outcomes:", dict(codes))
    assert set(codes) <= {"stored", "already_rated", "complete"}, codes
    assert all(o.reason for o in every)  # a refusal always says why; a stored one says so
    assert all((o.rating_id is not None) == o.stored for o in every)
    assert codes["already_rated"] >= 1  # the double clicks were refused, not stored twice
    rows = store.cursor().execute("SELECT task_id, annotator, rating_id FROM ratings").fetchall()
    assert len(rows) == codes["stored"]  # rows stored == submits reported stored
    assert sorted(r[2] for r in rows) == sorted(o.rating_id for o in every if o.stored)
    assert len({(t, a) for t, a, _ in rows}) == len(rows)  # no (task, annotator) pair twice
    per_task = Counter(t for t, _, _ in rows)
    assert max(per_task.values()) <= REQUIRED  # no task over its required count
    for who, mine in outcomes.items():  # each annotator's stored outcomes are exactly their rows
        assert sum(o.stored for o in mine) == sum(a == who for _, a, _ in rows)
    # A task served is held for its annotator (a lease), so no submit finds it completed by others: 400
    # requests for 300 places fill every task.
    assert codes["complete"] == 0 and codes["stored"] == N_TASKS * REQUIRED
    for who, mine in outcomes.items():  # one outcome per submit: one per task served, plus the double clicks
        assert len(mine) == served[who] + sum(i % 7 == 3 for i in range(served[who]))
    store.close()


def test_a_token_served_to_someone_else_is_refused_not_stored(tmp_path):
    store = Store(tmp_path / "own.duckdb")
    _seed(store)
    t = store.next_task("ann")
    out = store.submit_view(t["view"], "bob", 2, 2)
    assert (out.stored, out.code, out.rating_id) == (False, "not_yours", None)
    assert "not served to you" in out.reason
    assert store.submit_view("0123456789abcdef", "ann", 2, 2).code == "not_yours"
    assert store.cursor().execute("SELECT count(*) FROM ratings").fetchone() == (0,)
    assert store.submit_view(t["view"], "ann", 2, 2).stored
    store.close()
