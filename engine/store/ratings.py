"""Human side-by-side ratings in DuckDB: rating tasks built from two policies' outputs, append-only ratings.

Blinding. Which policy is stored as side a of a task is drawn at random when the task is created
(`policy_a`/`policy_b` mean "stored side a/b"; `baseline` records the policy the task was requested against).
The order an annotator sees the two sides in is drawn with `secrets` the first time the task is served to
them and kept in `rating_views` with an opaque token, so a reload shows the same sides, nobody can recompute
the order, and a submission takes the order from the store rather than from the page.

Leases. Serving a task holds one of its places for the annotator (`rating_views.leased_until`), checked and
taken in one transaction, so concurrent annotators spread over the tasks and none is handed out beyond its
required count; a skip releases the place, a rating completes it, an abandoned page's hold runs out
(`rating_lease_seconds`, 10 minutes). engine/SCHEMA.md, "Rating leases", says how the transaction is made
atomic.

Annotators are plain name strings here (engine/store/users.py holds the accounts).
"""

from __future__ import annotations

import random
import secrets
import threading
from dataclasses import dataclass
from datetime import timedelta

import duckdb

from .core import now

SCHEMA = """
CREATE SEQUENCE IF NOT EXISTS rating_task_seq;
CREATE SEQUENCE IF NOT EXISTS rating_seq;
CREATE TABLE IF NOT EXISTS eval_outputs (
    campaign_id VARCHAR, policy VARCHAR, split VARCHAR, source_id VARCHAR, text VARCHAR, n_tokens INTEGER,
    reward DOUBLE, shard_id VARCHAR);
CREATE TABLE IF NOT EXISTS rating_tasks (
    task_id BIGINT DEFAULT nextval('rating_task_seq') PRIMARY KEY, campaign_id VARCHAR NOT NULL,
    batch VARCHAR NOT NULL, source_id VARCHAR NOT NULL, source VARCHAR NOT NULL,
    policy_a VARCHAR NOT NULL, text_a VARCHAR NOT NULL, policy_b VARCHAR NOT NULL, text_b VARCHAR NOT NULL,
    grow INTEGER,                 -- Grow step of side b's sample (NULL for validation outputs)
    required_ratings INTEGER NOT NULL, created_at TIMESTAMP NOT NULL,
    grow_a INTEGER, sample_idx_a INTEGER, sample_idx_b INTEGER,  -- locate each side's row in samples
    baseline VARCHAR,             -- the policy the other one is judged against (NULL: side a, older tasks)
    split VARCHAR,                -- the candidates' split: 'train' (Grow samples) or an eval split
    slot_changes BIGINT DEFAULT 0);  -- bumped by every lease, release and rating of the task (see next_task)
ALTER TABLE rating_tasks ADD COLUMN IF NOT EXISTS baseline VARCHAR;
ALTER TABLE rating_tasks ADD COLUMN IF NOT EXISTS split VARCHAR;
ALTER TABLE rating_tasks ADD COLUMN IF NOT EXISTS slot_changes BIGINT DEFAULT 0;
CREATE TABLE IF NOT EXISTS ratings (
    rating_id BIGINT DEFAULT nextval('rating_seq') PRIMARY KEY, task_id BIGINT NOT NULL,
    annotator VARCHAR NOT NULL, score_a SMALLINT NOT NULL, score_b SMALLINT NOT NULL,
    shown_order VARCHAR NOT NULL, ts TIMESTAMP NOT NULL,
    simulated BOOLEAN DEFAULT false,  -- written by engine.ratings.simulate_ratings, not by a person
    UNIQUE (task_id, annotator));  -- backstop for two submissions racing past the check in submit_rating
ALTER TABLE ratings ADD COLUMN IF NOT EXISTS simulated BOOLEAN DEFAULT false;
CREATE TABLE IF NOT EXISTS rating_skips (  -- append-only: an annotator passed on a task (see next_task)
    task_id BIGINT NOT NULL, annotator VARCHAR NOT NULL, ts TIMESTAMP NOT NULL);
CREATE TABLE IF NOT EXISTS rating_views (  -- the display order drawn when a task is first served to someone
    task_id BIGINT NOT NULL, annotator VARCHAR NOT NULL, shown_order VARCHAR NOT NULL,
    token VARCHAR NOT NULL UNIQUE, served_at TIMESTAMP NOT NULL,
    leased_until TIMESTAMP,       -- the task's place is held for this annotator until then (NULL: released)
    PRIMARY KEY (task_id, annotator));
ALTER TABLE rating_views ADD COLUMN IF NOT EXISTS leased_until TIMESTAMP;
"""

LEASE_SECONDS = 600.0  # how long a served task's place is held for its annotator (Store.rating_lease_seconds)


def _taken(where: str) -> str:
    """CTE `c`: per task (of those matching `where` on task_id), the places taken for annotator $who at time
    $now: `taken` = ratings plus live leases of other annotators ($who's own lease left out), `n` = ratings,
    `mine` = $who rated it. Storing a rating ends its annotator's lease in the same transaction, so nobody
    is counted twice."""
    return (
        "c AS (SELECT task_id, count(*) AS taken, count(*) FILTER (WHERE rated) AS n, "
        "bool_or(rated AND annotator = $who) AS mine FROM ("
        f"SELECT task_id, annotator, true AS rated FROM ratings WHERE {where} "
        f"UNION ALL SELECT task_id, annotator, false FROM rating_views WHERE {where} AND leased_until > $now "
        "AND annotator <> $who) GROUP BY task_id)"
    )


# The columns of a task as the Rate page gets it (before `_shown` puts its sides in the annotator's order).
_TASK_COLS = (
    "t.task_id, t.campaign_id, t.batch, t.source_id, t.source, t.text_a, t.text_b, t.required_ratings, "
    "coalesce(c.n, 0) AS n_ratings"
)


REFERENCE = "reference"  # pseudo-policy: the original reference of the source (sample_idx -1)
SCORES = range(0, 7)  # the paper's 0..6 scale
ORDERS = ("ab", "ba")
_SIDES = random.SystemRandom()  # stored sides: not reproducible from a seed, unlike the choice of sources


def _check_score(name: str, v) -> int:
    # bool is an int subclass and 3.0 "looks" fine: both are input mistakes on a 0..6 integer scale.
    if isinstance(v, bool) or not hasattr(v, "__index__") or int(v) not in SCORES:
        raise ValueError(f"{name} must be an integer from 0 to 6, got {v!r}")
    return int(v)


def _check_annotator(annotator: str) -> None:
    if not annotator or not annotator.strip():
        raise ValueError("annotator name is empty")


@dataclass(frozen=True)
class SubmitOutcome:
    """What became of one submit through a view token: stored, or refused with a reason for the annotator.

    `code` is "stored", "already_rated" (this annotator rated the task before: another tab, a second click),
    "complete" (others gave the task its required ratings first) or "not_yours" (the token is unknown or was
    served to someone else). `reason` is one plain sentence the Rate page shows; it names no task or policy.
    """

    code: str
    reason: str
    rating_id: int | None = None

    @property
    def stored(self) -> bool:
        return self.code == "stored"


_REFUSALS = {
    "already_rated": "Not stored: you already rated this task (in another tab, or with an earlier click).",
    "complete": "Not stored: this task got its required ratings from other annotators after your hold on it "
    "ran out (the page had been left idle).",
    "not_yours": "Not stored: this rating view was not served to you (reload the page for a task of yours).",
}


class RatingsMixin:
    SCHEMA = SCHEMA
    rating_lease_seconds: float = LEASE_SECONDS  # set on a store to change its default lease time

    # ---------------------------------------------------------------- tasks
    def _rating_sources(self, cid: str, policy: str) -> set[str]:
        if policy == REFERENCE:
            sql = (
                "SELECT source_id FROM prompts WHERE campaign_id = ? AND split = 'train' "
                "AND coalesce(reference, '') <> ''"
            )
            return {r[0] for r in self.cursor().execute(sql, [cid]).fetchall()}
        sql = (
            "SELECT DISTINCT source_id FROM samples WHERE campaign_id = ? AND policy = ? AND sample_idx >= 0"
        )
        return {r[0] for r in self.cursor().execute(sql, [cid, policy]).fetchall()}

    def _rating_candidates(self, cid: str, policy: str, sids: list[str]) -> dict[str, list[tuple]]:
        """(grow, sample_idx, text) candidates per source, in a stable order so a seed picks the same one."""
        if policy == REFERENCE:
            sql = (
                "SELECT source_id, NULL, -1, reference FROM prompts WHERE campaign_id = ? "
                "AND split = 'train' AND list_contains(?, source_id)"
            )
            params = [cid, sids]
        else:
            sql = (
                "SELECT source_id, grow, sample_idx, text FROM samples WHERE campaign_id = ? AND policy = ? "
                "AND sample_idx >= 0 AND list_contains(?, source_id) ORDER BY source_id, grow, sample_idx"
            )
            params = [cid, policy, sids]
        out: dict[str, list[tuple]] = {}
        for sid, g, idx, text in self.cursor().execute(sql, params).fetchall():
            out.setdefault(sid, []).append((g, idx, text))
        return out

    def _check_pair(self, cid: str, baseline: str, other: str, n: int, required_ratings: int) -> None:
        if baseline == other:
            raise ValueError(f"both policies are {baseline!r}: a task compares two policies")
        if n < 1 or required_ratings < 1:
            raise ValueError(
                f"n and required_ratings must be >= 1, got n={n}, required_ratings={required_ratings}"
            )
        if self.campaign(cid) is None:  # type: ignore[attr-defined]
            raise KeyError(f"no campaign {cid!r}")

    def _tasked_sources(self, cid: str, p: str, q: str, split: str) -> set[str]:
        """Sources already tasked for the pair {p, q} on `split`, whichever side each policy is on."""
        sql = (
            "SELECT source_id FROM rating_tasks WHERE campaign_id = ? AND coalesce(split, 'train') = ? "
            "AND ((policy_a = ? AND policy_b = ?) OR (policy_a = ? AND policy_b = ?))"
        )
        return {r[0] for r in self.cursor().execute(sql, [cid, split, p, q, q, p]).fetchall()}

    def _next_batch(self, cid: str) -> str:
        (k,) = (
            self.cursor()
            .execute("SELECT count(DISTINCT batch) FROM rating_tasks WHERE campaign_id = ?", [cid])
            .fetchone()
        )
        return f"b{k + 1}"

    def _insert_tasks(self, rows: list[dict]) -> list[int]:
        """Insert tasks given as (baseline side, other side); which one is stored as side a is drawn here.

        Each row: campaign_id, batch, source_id, source, split, required_ratings, baseline, and `sides`, a
        pair of (policy, text, grow, sample_idx) for the baseline and the other policy.
        """
        t, ids = now(), []
        with self.transaction() as cur:  # type: ignore[attr-defined]
            for r in rows:
                a, b = r["sides"]
                if _SIDES.random() < 0.5:
                    a, b = b, a
                (tid,) = cur.execute(
                    "INSERT INTO rating_tasks (campaign_id, batch, source_id, source, policy_a, text_a, "
                    "policy_b, text_b, grow, required_ratings, created_at, grow_a, sample_idx_a, "
                    "sample_idx_b, baseline, split) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING task_id",
                    [
                        r["campaign_id"],
                        r["batch"],
                        r["source_id"],
                        r["source"],
                        a[0],
                        a[1],
                        b[0],
                        b[1],
                        b[2],
                        r["required_ratings"],
                        t,
                        a[2],
                        a[3],
                        b[3],
                        r["baseline"],
                        r["split"],
                    ],
                ).fetchone()
                ids.append(int(tid))
        return ids

    def create_rating_tasks(
        self,
        cid: str,
        baseline: str,
        other: str,
        n: int,
        required_ratings: int = 3,
        seed: int = 0,
        batch: str | None = None,
    ) -> dict:
        """Up to `n` new tasks from Grow samples, one per training source, pairing one seeded-random sample of
        each policy.

        Policies are checkpoint ids ("base", "g1-i2") or "reference"; `baseline` is recorded as the policy the
        other is judged against. The seed picks the sources and the samples; which policy is stored as side
        a is drawn per task from the system's randomness. Sources that already have a task for the same pair
        (in either orientation) are skipped, so a second call adds new sources. Returns
        {batch, n_tasks, task_ids}.
        """
        self._check_pair(cid, baseline, other, n, required_ratings)
        have = {p: self._rating_sources(cid, p) for p in (baseline, other)}
        for p, s in have.items():
            if not s:
                known = [
                    r[0]
                    for r in self.cursor()
                    .execute(
                        "SELECT DISTINCT policy FROM samples WHERE campaign_id = ? AND sample_idx >= 0 "
                        "ORDER BY 1",
                        [cid],
                    )
                    .fetchall()
                ]
                raise ValueError(
                    f"policy {p!r} has no samples in campaign {cid}; "
                    f"sampled policies: {known} (or 'reference')"
                )
        done = self._tasked_sources(cid, baseline, other, "train")
        common = sorted((have[baseline] & have[other]) - done)
        rng = random.Random(seed)  # Python's RNG, not DuckDB's hash(): stable across DuckDB versions
        chosen = sorted(rng.sample(common, min(n, len(common))))
        if not chosen:
            return {"batch": batch, "n_tasks": 0, "task_ids": []}
        cand = {p: self._rating_candidates(cid, p, chosen) for p in (baseline, other)}
        src = dict(
            self.cursor()
            .execute(
                "SELECT source_id, source FROM prompts WHERE campaign_id = ? AND split = 'train' "
                "AND list_contains(?, source_id)",
                [cid, chosen],
            )
            .fetchall()
        )
        batch = batch or self._next_batch(cid)
        rows = []
        for sid in chosen:
            ga, ia, ta = rng.choice(cand[baseline][sid])
            gb, ib, tb = rng.choice(cand[other][sid])
            # A reference has no Grow step of its own: its reward row is the original pair mixed into D_g.
            ga, gb = ga if ga is not None else gb, gb if gb is not None else ga
            rows.append(
                dict(
                    campaign_id=cid,
                    batch=batch,
                    source_id=sid,
                    source=src.get(sid, ""),
                    split="train",
                    required_ratings=required_ratings,
                    baseline=baseline,
                    sides=((baseline, ta, ga, ia), (other, tb, gb, ib)),
                )
            )
        ids = self._insert_tasks(rows)
        return {"batch": batch, "n_tasks": len(ids), "task_ids": ids}

    def _eval_texts(self, cid: str, policy: str, split: str) -> dict[str, str]:
        """source_id -> text of `policy` on `split`: its greedy output, or the reference for 'reference'."""
        if policy == REFERENCE:
            sql = (
                "SELECT source_id, reference FROM prompts WHERE campaign_id = ? AND split = ? "
                "AND coalesce(reference, '') <> ''"
            )
            return dict(self.cursor().execute(sql, [cid, split]).fetchall())
        # One row per (policy, split, source) is expected; should a source appear twice, the first shard wins.
        sql = (
            "SELECT source_id, first(text ORDER BY shard_id NULLS LAST, text) FROM eval_outputs "
            "WHERE campaign_id = ? AND policy = ? AND split = ? AND text IS NOT NULL GROUP BY source_id"
        )
        return dict(self.cursor().execute(sql, [cid, policy, split]).fetchall())

    def create_gate_tasks(
        self,
        cid: str,
        policy: str,
        baseline: str = "base",
        split: str = "validation",
        n: int = 50,
        required_ratings: int = 3,
        seed: int = 0,
        batch: str | None = None,
    ) -> dict:
        """Side-by-side tasks for the human gate from `eval_outputs`: `policy` against `baseline` on the same
        sources of `split`, until the pair has `n` tasks on that split.

        Idempotent: sources already tasked for the pair (either orientation) are skipped and only the
        shortfall is created, so calling it every time the gate is checked adds nothing once `n` exist (or
        once every common source is tasked). The seed picks the sources; the stored sides are drawn at random
        per task. `baseline` may be "reference" (the split's references). Raises ValueError when either
        policy has no output on `split`. Returns {batch, n_tasks (new), task_ids (new), n_existing}.
        """
        self._check_pair(cid, baseline, policy, n, required_ratings)
        texts = {p: self._eval_texts(cid, p, split) for p in (baseline, policy)}
        for p, t in texts.items():
            if not t:
                known = [
                    r[0]
                    for r in self.cursor()
                    .execute(
                        "SELECT DISTINCT policy FROM eval_outputs WHERE campaign_id = ? AND split = ? "
                        "ORDER BY 1",
                        [cid, split],
                    )
                    .fetchall()
                ]
                raise ValueError(
                    f"policy {p!r} has no {split} outputs in campaign {cid}; policies with {split} outputs: "
                    f"{known} (or 'reference')"
                )
        done = self._tasked_sources(cid, baseline, policy, split)
        src = dict(
            self.cursor()
            .execute(
                "SELECT source_id, source FROM prompts WHERE campaign_id = ? AND split = ?", [cid, split]
            )
            .fetchall()
        )
        # A task without its source cannot be rated: only sources the store knows the text of are used.
        common = sorted((texts[baseline].keys() & texts[policy].keys() & src.keys()) - done)
        want = max(0, n - len(done))
        chosen = sorted(random.Random(seed).sample(common, min(want, len(common))))
        out = {"batch": batch, "n_tasks": 0, "task_ids": [], "n_existing": len(done)}
        if not chosen:
            return out
        batch = batch or f"gate-{policy}"
        rows = [
            dict(
                campaign_id=cid,
                batch=batch,
                source_id=sid,
                source=src[sid],
                split=split,
                required_ratings=required_ratings,
                baseline=baseline,
                sides=(
                    (baseline, texts[baseline][sid], None, None),
                    (policy, texts[policy][sid], None, None),
                ),
            )
            for sid in chosen
        ]
        ids = self._insert_tasks(rows)
        return out | {"batch": batch, "n_tasks": len(ids), "task_ids": ids}

    # ---------------------------------------------------------------- serving and submitting
    # Every change of who holds a task's places (a lease taken, renewed or released, a rating stored) runs in
    # one store transaction that first bumps the task's `slot_changes`, under the store's rating lock. The
    # lock orders the threads of this process (the dashboard's sessions share one Store); the bump makes any
    # other transaction on the same task (another connection to the file) a write-write conflict, which
    # `_retry` runs again on a fresh snapshot. So the check "ratings + others' live leases < required" and the
    # write that relies on it are atomic.

    def _lease_delta(self, lease_seconds: float | None) -> timedelta:
        s = self.rating_lease_seconds if lease_seconds is None else lease_seconds
        if isinstance(s, bool) or not isinstance(s, int | float) or not s > 0:
            raise ValueError(f"lease_seconds must be a number of seconds > 0, got {s!r}")
        return timedelta(seconds=float(s))

    def _rating_lock(self) -> threading.RLock:
        """One lock per store around every rating write with its checks (see above)."""
        return self.__dict__.setdefault("_ratings_lock", threading.RLock())

    def _rating_write(self, fn):
        """Run `fn(cur)` in one transaction under the rating lock, again on a write-write conflict."""

        def attempt():
            with self.transaction() as cur:  # type: ignore[attr-defined]
                return fn(cur)

        with self._rating_lock():
            return self._retry(attempt)  # type: ignore[attr-defined]

    @staticmethod
    def _bump(cur, task_id: int) -> None:
        cur.execute(
            "UPDATE rating_tasks SET slot_changes = coalesce(slot_changes, 0) + 1 WHERE task_id = ?",
            [task_id],
        )

    @staticmethod
    def _new_view(cur, task_id: int, annotator: str, until, order: str | None = None) -> dict:
        """Serve a task to an annotator for the first time: draw the display order (unless given) and the
        token, and hold its place until `until` (None: no lease, for a rating made elsewhere)."""
        view = {"shown_order": order or secrets.choice(ORDERS), "token": secrets.token_hex(8)}
        cur.execute(
            "INSERT INTO rating_views (task_id, annotator, shown_order, token, served_at, leased_until) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [task_id, annotator, view["shown_order"], view["token"], now(), until],
        )
        return view

    @staticmethod
    def _hold(cur, task_id: int, annotator: str, until) -> None:
        """Take or renew this annotator's lease on a task served to them before."""
        cur.execute(
            "UPDATE rating_views SET leased_until = ? WHERE task_id = ? AND annotator = ?",
            [until, task_id, annotator],
        )

    @staticmethod
    def _release(cur, task_id: int, annotator: str) -> None:
        cur.execute(
            "UPDATE rating_views SET leased_until = NULL WHERE task_id = ? AND annotator = ? "
            "AND leased_until IS NOT NULL",
            [task_id, annotator],
        )

    def _view(self, task_id: int, annotator: str) -> dict | None:
        rows = self._rows(  # type: ignore[attr-defined]
            "SELECT task_id, annotator, shown_order, token, served_at FROM rating_views "
            "WHERE task_id = ? AND annotator = ?",
            [task_id, annotator],
        )
        return rows[0] if rows else None

    def rating_view(self, token: str) -> dict | None:
        """The view behind an opaque token: task_id, annotator, shown_order, served_at; None if unknown."""
        rows = self._rows(  # type: ignore[attr-defined]
            "SELECT task_id, annotator, shown_order, token, served_at FROM rating_views WHERE token = ?",
            [token],
        )
        return rows[0] if rows else None

    @staticmethod
    def _shown(task: dict, view: dict) -> dict:
        """A task row as the Rate page gets it: sides in this annotator's order, the view token, no policy."""
        left, right = task.pop("text_a"), task.pop("text_b")
        if view["shown_order"] == "ba":
            left, right = right, left
        return task | {
            "text_left": left,
            "text_right": right,
            "shown_order": view["shown_order"],
            "view": view["token"],
        }

    def next_task(
        self, annotator: str, cid: str | None = None, skipped_since=None, lease_seconds: float | None = None
    ) -> dict | None:
        """Serve this annotator the next task with a free place for them, and hold that place; None when none.

        A task is open to an annotator when they have not rated it, nor skipped it at or after
        `skipped_since` (a UTC timestamp, e.g. the start of their session; None: ever), and its ratings plus
        the live leases of other annotators are fewer than its required ratings. Serving takes (or renews) a
        lease on the task for this annotator for `lease_seconds` (default `rating_lease_seconds`, 10
        minutes) in the same transaction as that check, so a task is never handed out beyond its required
        count; an abandoned page frees its place when the lease runs out, a skip or a submit at once.

        Order: the task this annotator holds a live lease on (a reload shows the same task and sides), then a
        task served to them before, then the open task with the most places taken (ratings and leases), so
        tasks complete (and overlap for agreement) before new ones start. The display order is drawn on the
        first serving and stored (`rating_views`); `view` is the opaque token a page uses instead of the task
        id. Policy names are left out: the annotator rates blind. `n_ratings` counts stored ratings.
        """
        _check_annotator(annotator)
        delta = self._lease_delta(lease_seconds)
        where = "t.campaign_id = $cid AND " if cid is not None else ""
        sql = (
            f"WITH {_taken('true')}, "
            "m AS (SELECT task_id, max(k) AS k, min(k) AS skipped, any_value(token) AS token, "
            "any_value(shown_order) AS shown_order FROM ("
            "SELECT task_id, CASE WHEN leased_until > $now THEN 2 ELSE 1 END AS k, token, shown_order "
            "FROM rating_views WHERE annotator = $who "
            "UNION ALL SELECT task_id, -1, NULL, NULL FROM rating_skips WHERE annotator = $who "
            "AND ($since::TIMESTAMP IS NULL OR ts >= $since::TIMESTAMP)) GROUP BY task_id) "
            f"SELECT {_TASK_COLS}, m.token, m.shown_order FROM rating_tasks t "
            "LEFT JOIN c USING (task_id) LEFT JOIN m USING (task_id) "
            f"WHERE {where}coalesce(c.taken, 0) < t.required_ratings AND NOT coalesce(c.mine, false) "
            "AND coalesce(m.skipped, 0) >= 0 "
            "ORDER BY coalesce(m.k, 0) DESC, coalesce(c.taken, 0) DESC, t.task_id LIMIT 1"
        )
        params = {"who": annotator, "since": skipped_since} | ({"cid": cid} if cid is not None else {})

        def take(cur) -> dict | None:
            t = now()
            rows = self._rows(sql, params | {"now": t})  # type: ignore[attr-defined]
            if not rows:
                return None
            task = rows[0]
            task_id, token, order = task["task_id"], task.pop("token"), task.pop("shown_order")
            self._bump(cur, task_id)
            if token is None:
                view = self._new_view(cur, task_id, annotator, t + delta)
            else:
                view = {"token": token, "shown_order": order}
                self._hold(cur, task_id, annotator, t + delta)
            return self._shown(task, view)

        return self._rating_write(take)

    def _served(self, token: str, annotator: str, at) -> tuple[dict | None, str | None]:
        """The task behind a view token with that view's order, and why it takes no rating from `annotator`
        at time `at` (a _REFUSALS code) or None. Full means its ratings plus other annotators' live leases
        reach its required count."""
        view = self.rating_view(token)
        if view is None or view["annotator"] != annotator:
            return None, "not_yours"
        rows = self._rows(  # type: ignore[attr-defined]
            "SELECT t.task_id, t.campaign_id, t.batch, t.source_id, t.source, t.text_a, t.text_b, "
            "t.required_ratings, r.n AS n_ratings, r.mine, l.leased FROM rating_tasks t, "
            "(SELECT count(*) AS n, count(*) FILTER (WHERE annotator = $who) AS mine FROM ratings "
            "WHERE task_id = $task) r, "
            "(SELECT count(*) AS leased FROM rating_views WHERE task_id = $task AND leased_until > $now "
            "AND annotator <> $who) l WHERE t.task_id = $task",
            {"task": view["task_id"], "who": annotator, "now": at},
        )
        if not rows:
            return None, "not_yours"  # no such task any more
        task = rows[0] | {"shown_order": view["shown_order"]}
        mine, leased = task.pop("mine"), task.pop("leased")
        if mine:
            return task, "already_rated"
        return task, "complete" if task["n_ratings"] + leased >= task["required_ratings"] else None

    def view_task(self, token: str, annotator: str, lease_seconds: float | None = None) -> dict | None:
        """The task behind a view token served to `annotator`, as next_task returns it, while it still takes
        their rating (not rated by them, and their lease is live or the task still has a free place); None
        otherwise. Showing it renews their lease, so a page in use keeps its task. The Rate page keeps
        showing the task it served until it is submitted or skipped, rather than whichever task next_task
        would serve now."""
        delta = self._lease_delta(lease_seconds)

        def show(cur) -> dict | None:
            t = now()
            task, code = self._served(token, annotator, t)
            if code is not None:
                return None
            self._bump(cur, task["task_id"])
            self._hold(cur, task["task_id"], annotator, t + delta)
            return self._shown(task, {"token": token, "shown_order": task.pop("shown_order")})

        return self._rating_write(show)

    def _own_view(self, token: str, annotator: str) -> dict:
        view = self.rating_view(token)
        if view is None or view["annotator"] != annotator:
            raise KeyError(f"no rating view {token!r} for {annotator!r}")
        return view

    def skip_task(self, task_id: int, annotator: str) -> None:
        """Append a skip and release this annotator's lease on the task: next_task passes over it for them
        (see `skipped_since`) and its place goes to someone else."""
        _check_annotator(annotator)

        def skip(cur) -> None:
            if not cur.execute("SELECT 1 FROM rating_tasks WHERE task_id = ?", [task_id]).fetchone():
                raise KeyError(f"no rating task {task_id}")
            self._bump(cur, task_id)
            cur.execute("INSERT INTO rating_skips VALUES (?, ?, ?)", [task_id, annotator, now()])
            self._release(cur, task_id, annotator)

        self._rating_write(skip)

    def release_leases(self, annotator: str) -> None:
        """End every live lease of this annotator (they left the Rate page): the places go to others at once
        instead of when the lease runs out. Their views stay, so coming back shows a task again."""
        _check_annotator(annotator)

        def release(cur) -> None:
            cur.execute(
                "UPDATE rating_views SET leased_until = NULL "
                "WHERE annotator = ? AND leased_until IS NOT NULL",
                [annotator],
            )

        self._rating_write(release)

    def skip_view(self, token: str, annotator: str) -> None:
        """skip_task for the task behind a view token served to this annotator (what the Rate page calls)."""
        self.skip_task(self._own_view(token, annotator)["task_id"], annotator)

    def submit_view(self, token: str, annotator: str, score_left: int, score_right: int) -> SubmitOutcome:
        """Rate the task behind a view token served to this annotator; the order comes from the store.

        The token names the task the page showed, whatever next_task would serve now. The rating is stored
        if that task still takes it: the view is this annotator's, they have not rated the task, and its
        ratings plus other annotators' live leases are short of its required count (always so while this
        annotator's own lease is live). Storing it completes their lease. Otherwise nothing is stored and the
        outcome says why (SubmitOutcome): a submit is never dropped without one. Scores outside 0..6 and an
        empty annotator raise ValueError.
        """
        sl, sr = _check_score("score_left", score_left), _check_score("score_right", score_right)
        _check_annotator(annotator)

        def submit(cur) -> SubmitOutcome:
            task, code = self._served(token, annotator, now())
            if code is not None:
                return SubmitOutcome(code, _REFUSALS[code])
            self._bump(cur, task["task_id"])
            rid = self._append_rating(cur, task["task_id"], annotator, sl, sr, task["shown_order"], False)
            return SubmitOutcome("stored", "Rating stored.", rid)

        try:
            return self._rating_write(submit)
        except ValueError:  # the UNIQUE backstop: rated through another path meanwhile
            return SubmitOutcome("already_rated", _REFUSALS["already_rated"])

    def submit_rating(
        self,
        task_id: int,
        annotator: str,
        score_left: int,
        score_right: int,
        shown_order: str | None = None,
        simulated: bool = False,
    ) -> int:
        """Append one rating; left/right are mapped back to a/b through the order stored for this annotator.

        `shown_order` None takes the order the task was served in (an error if it never was). Given, it must
        agree with the stored order; a task never served through next_task gets it recorded as its view (a
        rating made elsewhere whose order the caller knows). `simulated` marks a rating no person made.
        The annotator's lease on the task, if any, is completed. Returns the rating id.
        """
        sl, sr = _check_score("score_left", score_left), _check_score("score_right", score_right)
        if shown_order is not None and shown_order not in ORDERS:
            raise ValueError(f"shown_order must be 'ab' or 'ba', got {shown_order!r}")
        _check_annotator(annotator)
        return self._rating_write(
            lambda cur: self._insert_rating(cur, task_id, annotator, sl, sr, shown_order, simulated)
        )

    def _insert_rating(self, cur, task_id, annotator, sl, sr, shown_order, simulated) -> int:
        if not cur.execute("SELECT 1 FROM rating_tasks WHERE task_id = ?", [task_id]).fetchone():
            raise KeyError(f"no rating task {task_id}")
        self._bump(cur, task_id)
        dup = (
            f"{annotator!r} already rated task {task_id}; "
            "ratings are append-only and one per annotator and task"
        )
        if cur.execute(
            "SELECT 1 FROM ratings WHERE task_id = ? AND annotator = ?", [task_id, annotator]
        ).fetchone():
            raise ValueError(dup)
        view = self._view(task_id, annotator)
        if view is None and shown_order is None:
            raise ValueError(
                f"task {task_id} was never served to {annotator!r}: no display order to map back"
            )
        if view is not None and shown_order is not None and shown_order != view["shown_order"]:
            raise ValueError(
                f"task {task_id} was shown to {annotator!r} in order {view['shown_order']!r}, "
                f"not {shown_order!r}"
            )
        order = (
            view["shown_order"]
            if view is not None
            else self._new_view(cur, task_id, annotator, None, shown_order)["shown_order"]
        )
        return self._append_rating(cur, task_id, annotator, sl, sr, order, simulated)

    def _append_rating(self, cur, task_id, annotator, sl, sr, order, simulated) -> int:
        """Insert the rating (scores mapped back to the stored sides) and complete the annotator's lease."""
        score_a, score_b = (sl, sr) if order == "ab" else (sr, sl)
        try:
            (rid,) = cur.execute(
                "INSERT INTO ratings (task_id, annotator, score_a, score_b, shown_order, ts, simulated) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING rating_id",
                [task_id, annotator, score_a, score_b, order, now(), bool(simulated)],
            ).fetchone()
        except duckdb.ConstraintException as e:
            raise ValueError(
                f"{annotator!r} already rated task {task_id}; "
                "ratings are append-only and one per annotator and task"
            ) from e
        self._release(cur, task_id, annotator)
        return int(rid)

    # ---------------------------------------------------------------- reading
    def ratings(self, cid: str, simulated: bool | None = None) -> list[dict]:
        """Every rating of the campaign with its task's policies and `split`.

        `baseline` falls back to side a for tasks that recorded none (before sides were drawn at random,
        side a was the baseline). `simulated` False keeps only people's ratings, True only simulated ones,
        None every rating.
        """
        return self._rows(  # type: ignore[attr-defined]
            "SELECT r.rating_id, r.task_id, t.batch, t.source_id, coalesce(t.split, 'train') AS split, "
            "t.grow, "
            "r.annotator, t.policy_a, t.policy_b, coalesce(t.baseline, t.policy_a) AS baseline, r.score_a, "
            "r.score_b, r.shown_order, r.ts, coalesce(r.simulated, false) AS simulated "
            "FROM ratings r JOIN rating_tasks t USING (task_id) "
            "WHERE t.campaign_id = ? AND (?::BOOLEAN IS NULL OR coalesce(r.simulated, false) = ?::BOOLEAN) "
            "ORDER BY r.rating_id",
            [cid, simulated, simulated],
        )

    def rating_tasks(self, cid: str) -> list[dict]:
        return self._rows(  # type: ignore[attr-defined]
            "SELECT * FROM rating_tasks WHERE campaign_id = ? ORDER BY task_id", [cid]
        )

    def open_tasks(self, cid: str, annotator: str) -> list[dict]:
        """Tasks with a free place for `annotator` (short of ratings counting other annotators' live leases,
        not rated by them), with both sides and the source's reference (what engine.ratings.simulate_ratings
        scores), in task order."""
        return self._rows(  # type: ignore[attr-defined]
            f"WITH {_taken('true')} "
            "SELECT t.task_id, t.source_id, t.source, t.policy_a, t.text_a, t.policy_b, t.text_b, "
            "p.reference FROM rating_tasks t LEFT JOIN c USING (task_id) "
            "LEFT JOIN prompts p ON p.campaign_id = t.campaign_id "
            "AND p.split = coalesce(t.split, 'train') AND p.source_id = t.source_id "
            "WHERE t.campaign_id = $cid AND coalesce(c.taken, 0) < t.required_ratings "
            "AND NOT coalesce(c.mine, false) "
            "ORDER BY t.task_id",
            {"cid": cid, "who": annotator, "now": now()},
        )

    def progress(self, cid: str) -> dict:
        """Task and rating counts: tasks, complete, partial, unrated, ratings, annotators, and simulated (how
        many of the ratings engine.ratings.simulate_ratings wrote)."""
        return self._rows(  # type: ignore[attr-defined]
            "WITH c AS (SELECT task_id, count(DISTINCT annotator) AS n, count(*) AS k, "
            "count(*) FILTER (WHERE coalesce(simulated, false)) AS s FROM ratings GROUP BY task_id), "
            "t AS (SELECT t.required_ratings AS req, coalesce(c.n, 0) AS n, coalesce(c.k, 0) AS k, "
            "coalesce(c.s, 0) AS s FROM rating_tasks t LEFT JOIN c USING (task_id) WHERE t.campaign_id = ?) "
            "SELECT count(*) AS tasks, count(*) FILTER (WHERE n >= req) AS complete, "
            "count(*) FILTER (WHERE n > 0 AND n < req) AS partial, count(*) FILTER (WHERE n = 0) AS unrated, "
            "coalesce(sum(k), 0)::BIGINT AS ratings, "
            "(SELECT count(DISTINCT annotator) FROM ratings JOIN rating_tasks USING (task_id) "
            "WHERE campaign_id = ?) "
            "AS annotators, coalesce(sum(s), 0)::BIGINT AS simulated FROM t",
            [cid, cid],
        )[0]

    def rated_rewards(self, cid: str) -> list[dict]:
        """One row per rated Grow sample: its Grow step, policy, reward (from samples) and mean human score.

        Texts of validation-output tasks carry no Grow step and are left out."""
        return self._rows(  # type: ignore[attr-defined]
            "WITH m AS (SELECT task_id, avg(score_a) AS ha, avg(score_b) AS hb, count(*) AS n FROM ratings "
            "GROUP BY task_id), "
            "sides AS (SELECT t.task_id, 'a' AS side, t.policy_a AS policy, t.grow_a AS grow, "
            "t.sample_idx_a AS idx, t.source_id, m.ha AS human, m.n "
            "FROM rating_tasks t JOIN m USING (task_id) WHERE t.campaign_id = $cid "
            "UNION ALL SELECT t.task_id, 'b', t.policy_b, t.grow, t.sample_idx_b, t.source_id, m.hb, m.n "
            "FROM rating_tasks t JOIN m USING (task_id) WHERE t.campaign_id = $cid) "
            "SELECT d.task_id, d.side, d.policy, d.grow, d.source_id, d.idx AS sample_idx, d.human, "
            "d.n AS n_ratings, s.reward "
            "FROM sides d JOIN samples s ON s.campaign_id = $cid AND s.grow = d.grow "
            "AND s.source_id = d.source_id "
            "AND s.sample_idx = d.idx ORDER BY d.grow, d.task_id, d.side",
            {"cid": cid},
        )
