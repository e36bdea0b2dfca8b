"""Human side-by-side ratings in DuckDB: rating tasks built from two policies' samples, append-only ratings.

Annotators are plain name strings here (a later issue adds a users table with password hashes).
"""

from __future__ import annotations

import hashlib
import random

import duckdb

from .core import now

SCHEMA = """
CREATE SEQUENCE IF NOT EXISTS rating_task_seq;
CREATE SEQUENCE IF NOT EXISTS rating_seq;
CREATE TABLE IF NOT EXISTS rating_tasks (
    task_id BIGINT DEFAULT nextval('rating_task_seq') PRIMARY KEY, campaign_id VARCHAR NOT NULL,
    batch VARCHAR NOT NULL, source_id VARCHAR NOT NULL, source VARCHAR NOT NULL,
    policy_a VARCHAR NOT NULL, text_a VARCHAR NOT NULL, policy_b VARCHAR NOT NULL, text_b VARCHAR NOT NULL,
    grow INTEGER,                 -- Grow step of side b's sample (the policy under review)
    required_ratings INTEGER NOT NULL, created_at TIMESTAMP NOT NULL,
    grow_a INTEGER, sample_idx_a INTEGER, sample_idx_b INTEGER);  -- locate each side's row in samples
CREATE TABLE IF NOT EXISTS ratings (
    rating_id BIGINT DEFAULT nextval('rating_seq') PRIMARY KEY, task_id BIGINT NOT NULL,
    annotator VARCHAR NOT NULL, score_a SMALLINT NOT NULL, score_b SMALLINT NOT NULL,
    shown_order VARCHAR NOT NULL, ts TIMESTAMP NOT NULL,
    UNIQUE (task_id, annotator));  -- backstop for two submissions racing past the check in submit_rating
CREATE TABLE IF NOT EXISTS rating_skips (  -- append-only: an annotator passed on a task (see next_task)
    task_id BIGINT NOT NULL, annotator VARCHAR NOT NULL, ts TIMESTAMP NOT NULL);
"""

REFERENCE = "reference"  # pseudo-policy: the original reference of the source (sample_idx -1)
SCORES = range(0, 7)  # the paper's 0..6 scale


def shown_order(annotator: str, task_id: int) -> str:
    """'ab' or 'ba': a stable per-(annotator, task) coin, so a page reload shows the same sides again."""
    h = hashlib.sha256(f"{annotator}\x00{task_id}".encode()).digest()
    return "ab" if h[0] % 2 == 0 else "ba"


def _check_score(name: str, v) -> int:
    # bool is an int subclass and 3.0 "looks" fine: both are input mistakes on a 0..6 integer scale.
    if isinstance(v, bool) or not hasattr(v, "__index__") or int(v) not in SCORES:
        raise ValueError(f"{name} must be an integer from 0 to 6, got {v!r}")
    return int(v)


class RatingsMixin:
    SCHEMA = SCHEMA

    # ---------------------------------------------------------------- tasks
    def _rating_sources(self, cid: str, policy: str) -> set[str]:
        if policy == REFERENCE:
            sql = "SELECT source_id FROM prompts WHERE campaign_id = ? AND split = 'train' AND coalesce(reference, '') <> ''"
            return {r[0] for r in self.cursor().execute(sql, [cid]).fetchall()}
        sql = (
            "SELECT DISTINCT source_id FROM samples WHERE campaign_id = ? AND policy = ? AND sample_idx >= 0"
        )
        return {r[0] for r in self.cursor().execute(sql, [cid, policy]).fetchall()}

    def _rating_candidates(self, cid: str, policy: str, sids: list[str]) -> dict[str, list[tuple]]:
        """(grow, sample_idx, text) candidates per source, in a stable order so a seed picks the same one."""
        if policy == REFERENCE:
            sql = (
                "SELECT source_id, NULL, -1, reference FROM prompts WHERE campaign_id = ? AND split = 'train' "
                "AND list_contains(?, source_id)"
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

    def create_rating_tasks(
        self,
        cid: str,
        policy_a: str,
        policy_b: str,
        n: int,
        required_ratings: int = 3,
        seed: int = 0,
        batch: str | None = None,
    ) -> dict:
        """Up to `n` new tasks, one per source, each pairing one seeded-random sample of each policy.

        Policies are checkpoint ids ("base", "g1-i2") or "reference". Sources that already have a task for
        the same pair are skipped, so a second call adds new sources. Returns {batch, n_tasks, task_ids}.
        """
        if policy_a == policy_b:
            raise ValueError(f"policy_a and policy_b are both {policy_a!r}: a task compares two policies")
        if n < 1 or required_ratings < 1:
            raise ValueError(
                f"n and required_ratings must be >= 1, got n={n}, required_ratings={required_ratings}"
            )
        if self.campaign(cid) is None:
            raise KeyError(f"no campaign {cid!r}")
        have = {p: self._rating_sources(cid, p) for p in (policy_a, policy_b)}
        for p, s in have.items():
            if not s:
                known = [
                    r[0]
                    for r in self.cursor()
                    .execute(
                        "SELECT DISTINCT policy FROM samples WHERE campaign_id = ? AND sample_idx >= 0 ORDER BY 1",
                        [cid],
                    )
                    .fetchall()
                ]
                raise ValueError(
                    f"policy {p!r} has no samples in campaign {cid}; sampled policies: {known} (or 'reference')"
                )
        done = {
            r[0]
            for r in self.cursor()
            .execute(
                "SELECT source_id FROM rating_tasks WHERE campaign_id = ? AND policy_a = ? AND policy_b = ?",
                [cid, policy_a, policy_b],
            )
            .fetchall()
        }
        common = sorted((have[policy_a] & have[policy_b]) - done)
        rng = random.Random(seed)  # Python's RNG, not DuckDB's hash(): stable across DuckDB versions
        chosen = sorted(rng.sample(common, min(n, len(common))))
        if not chosen:
            return {"batch": batch, "n_tasks": 0, "task_ids": []}
        cand = {p: self._rating_candidates(cid, p, chosen) for p in (policy_a, policy_b)}
        src = dict(
            self.cursor()
            .execute(
                "SELECT source_id, source FROM prompts WHERE campaign_id = ? AND split = 'train' AND list_contains(?, source_id)",
                [cid, chosen],
            )
            .fetchall()
        )
        if batch is None:
            (k,) = (
                self.cursor()
                .execute("SELECT count(DISTINCT batch) FROM rating_tasks WHERE campaign_id = ?", [cid])
                .fetchone()
            )
            batch = f"b{k + 1}"
        t, ids = now(), []
        with self.transaction() as cur:  # type: ignore[attr-defined]
            for sid in chosen:
                ga, ia, ta = rng.choice(cand[policy_a][sid])
                gb, ib, tb = rng.choice(cand[policy_b][sid])
                # A reference has no Grow step of its own: its reward row is the original pair mixed into D_g.
                ga, gb = ga if ga is not None else gb, gb if gb is not None else ga
                (tid,) = cur.execute(
                    "INSERT INTO rating_tasks (campaign_id, batch, source_id, source, policy_a, text_a, policy_b, text_b, "
                    "grow, required_ratings, created_at, grow_a, sample_idx_a, sample_idx_b) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING task_id",
                    [
                        cid,
                        batch,
                        sid,
                        src.get(sid, ""),
                        policy_a,
                        ta,
                        policy_b,
                        tb,
                        gb,
                        required_ratings,
                        t,
                        ga,
                        ia,
                        ib,
                    ],
                ).fetchone()
                ids.append(tid)
        return {"batch": batch, "n_tasks": len(ids), "task_ids": ids}

    # ---------------------------------------------------------------- serving and submitting
    def next_task(self, annotator: str, cid: str | None = None, skipped_since=None) -> dict | None:
        """The next open task this annotator has not rated nor skipped, sides in their own order; None when nothing is left.

        Tasks with the most ratings come first so tasks complete (and overlap for agreement) before new ones
        start. Policy names are left out: the annotator rates blind. A task this annotator skipped at or after
        `skipped_since` (a UTC timestamp, e.g. the start of their session) is not served; None leaves out
        every task they ever skipped.
        """
        where = "t.campaign_id = $cid AND " if cid is not None else ""
        sql = (
            "WITH c AS (SELECT task_id, count(DISTINCT annotator) AS n, bool_or(annotator = $who) AS mine "
            "FROM ratings GROUP BY task_id), "
            "k AS (SELECT DISTINCT task_id FROM rating_skips WHERE annotator = $who "
            "AND ($since::TIMESTAMP IS NULL OR ts >= $since::TIMESTAMP)) "
            "SELECT t.task_id, t.campaign_id, t.batch, t.source_id, t.source, t.text_a, t.text_b, t.required_ratings, "
            "coalesce(c.n, 0) AS n_ratings FROM rating_tasks t LEFT JOIN c USING (task_id) "
            f"WHERE {where}coalesce(c.n, 0) < t.required_ratings AND NOT coalesce(c.mine, false) "
            "AND t.task_id NOT IN (SELECT task_id FROM k) "
            "ORDER BY n_ratings DESC, t.task_id LIMIT 1"
        )
        params = {"who": annotator, "since": skipped_since} | ({"cid": cid} if cid is not None else {})
        rows = self._rows(sql, params)
        if not rows:
            return None
        r = rows[0]
        order = shown_order(annotator, r["task_id"])
        left, right = (r.pop("text_a"), r.pop("text_b"))
        if order == "ba":
            left, right = right, left
        return r | {"text_left": left, "text_right": right, "shown_order": order}

    def skip_task(self, task_id: int, annotator: str) -> None:
        """Append a skip: next_task passes over this task for this annotator (from now on, see `skipped_since`)."""
        if not annotator or not annotator.strip():
            raise ValueError("annotator name is empty")
        cur = self.cursor()
        if not cur.execute("SELECT 1 FROM rating_tasks WHERE task_id = ?", [task_id]).fetchone():
            raise KeyError(f"no rating task {task_id}")
        cur.execute("INSERT INTO rating_skips VALUES (?, ?, ?)", [task_id, annotator, now()])

    def submit_rating(
        self, task_id: int, annotator: str, score_left: int, score_right: int, shown_order: str
    ) -> int:
        """Append one rating; left/right are mapped back to a/b through `shown_order`. Returns the rating id."""
        sl, sr = _check_score("score_left", score_left), _check_score("score_right", score_right)
        if shown_order not in ("ab", "ba"):
            raise ValueError(f"shown_order must be 'ab' or 'ba', got {shown_order!r}")
        if not annotator or not annotator.strip():
            raise ValueError("annotator name is empty")
        score_a, score_b = (sl, sr) if shown_order == "ab" else (sr, sl)
        cur = self.cursor()
        if not cur.execute("SELECT 1 FROM rating_tasks WHERE task_id = ?", [task_id]).fetchone():
            raise KeyError(f"no rating task {task_id}")
        dup = f"{annotator!r} already rated task {task_id}; ratings are append-only and one per annotator and task"
        if cur.execute(
            "SELECT 1 FROM ratings WHERE task_id = ? AND annotator = ?", [task_id, annotator]
        ).fetchone():
            raise ValueError(dup)
        try:
            (rid,) = cur.execute(
                "INSERT INTO ratings (task_id, annotator, score_a, score_b, shown_order, ts) VALUES (?, ?, ?, ?, ?, ?) "
                "RETURNING rating_id",
                [task_id, annotator, score_a, score_b, shown_order, now()],
            ).fetchone()
        except duckdb.ConstraintException as e:
            raise ValueError(dup) from e
        return int(rid)

    # ---------------------------------------------------------------- reading
    def ratings(self, cid: str) -> list[dict]:
        return self._rows(
            "SELECT r.rating_id, r.task_id, t.batch, t.source_id, t.grow, r.annotator, t.policy_a, t.policy_b, "
            "r.score_a, r.score_b, r.shown_order, r.ts FROM ratings r JOIN rating_tasks t USING (task_id) "
            "WHERE t.campaign_id = ? ORDER BY r.rating_id",
            [cid],
        )

    def rating_tasks(self, cid: str) -> list[dict]:
        return self._rows("SELECT * FROM rating_tasks WHERE campaign_id = ? ORDER BY task_id", [cid])

    def progress(self, cid: str) -> dict:
        """Task and rating counts: tasks, complete, partial, unrated, ratings, annotators."""
        return self._rows(
            "WITH c AS (SELECT task_id, count(DISTINCT annotator) AS n, count(*) AS k FROM ratings GROUP BY task_id), "
            "t AS (SELECT t.required_ratings AS req, coalesce(c.n, 0) AS n, coalesce(c.k, 0) AS k "
            "FROM rating_tasks t LEFT JOIN c USING (task_id) WHERE t.campaign_id = ?) "
            "SELECT count(*) AS tasks, count(*) FILTER (WHERE n >= req) AS complete, "
            "count(*) FILTER (WHERE n > 0 AND n < req) AS partial, count(*) FILTER (WHERE n = 0) AS unrated, "
            "coalesce(sum(k), 0)::BIGINT AS ratings, "
            "(SELECT count(DISTINCT annotator) FROM ratings JOIN rating_tasks USING (task_id) WHERE campaign_id = ?) "
            "AS annotators FROM t",
            [cid, cid],
        )[0]

    def rated_rewards(self, cid: str) -> list[dict]:
        """One row per rated text: its Grow step, policy, reward (from samples) and mean human score."""
        return self._rows(
            "WITH m AS (SELECT task_id, avg(score_a) AS ha, avg(score_b) AS hb, count(*) AS n FROM ratings GROUP BY task_id), "
            "sides AS (SELECT t.task_id, 'a' AS side, t.policy_a AS policy, t.grow_a AS grow, t.sample_idx_a AS idx, "
            "t.source_id, m.ha AS human, m.n FROM rating_tasks t JOIN m USING (task_id) WHERE t.campaign_id = $cid "
            "UNION ALL SELECT t.task_id, 'b', t.policy_b, t.grow, t.sample_idx_b, t.source_id, m.hb, m.n "
            "FROM rating_tasks t JOIN m USING (task_id) WHERE t.campaign_id = $cid) "
            "SELECT d.task_id, d.side, d.policy, d.grow, d.source_id, d.idx AS sample_idx, d.human, d.n AS n_ratings, s.reward "
            "FROM sides d JOIN samples s ON s.campaign_id = $cid AND s.grow = d.grow AND s.source_id = d.source_id "
            "AND s.sample_idx = d.idx ORDER BY d.grow, d.task_id, d.side",
            {"cid": cid},
        )
