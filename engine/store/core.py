"""The DuckDB store core: campaigns, events, steps, prompts, samples, evals, checkpoints.

Every value goes through `?` placeholders; each thread uses its own cursor. Samples are appended from
immutable Parquet shards inside a transaction that also records the shard id, so ingesting the same
shard twice is a no-op. The schema is documented in engine/SCHEMA.md.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

SCHEMA = """
CREATE SEQUENCE IF NOT EXISTS event_seq;
CREATE TABLE IF NOT EXISTS campaigns (
    id VARCHAR PRIMARY KEY, name VARCHAR NOT NULL, mode VARCHAR NOT NULL, state VARCHAR NOT NULL,
    stop_reason VARCHAR, config JSON NOT NULL, run_dir VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL, updated_at TIMESTAMP NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    id BIGINT DEFAULT nextval('event_seq') PRIMARY KEY, campaign_id VARCHAR, ts TIMESTAMP NOT NULL,
    actor VARCHAR NOT NULL, kind VARCHAR NOT NULL, state VARCHAR, message VARCHAR, payload JSON);
CREATE TABLE IF NOT EXISTS steps (
    campaign_id VARCHAR, step_key VARCHAR, kind VARCHAR NOT NULL, grow INTEGER, improve INTEGER,
    status VARCHAR NOT NULL, started_at TIMESTAMP, finished_at TIMESTAMP, seconds DOUBLE, result JSON,
    PRIMARY KEY (campaign_id, step_key));
CREATE TABLE IF NOT EXISTS prompts (
    campaign_id VARCHAR, split VARCHAR, source_id VARCHAR, source VARCHAR NOT NULL, reference VARCHAR,
    PRIMARY KEY (campaign_id, split, source_id));
CREATE TABLE IF NOT EXISTS samples (
    campaign_id VARCHAR NOT NULL, grow INTEGER NOT NULL, source_id VARCHAR NOT NULL,
    sample_idx INTEGER NOT NULL,          -- 0..K-1; -1 for an original (source, reference) pair of D
    text VARCHAR NOT NULL, n_tokens INTEGER, sum_logprob DOUBLE, policy VARCHAR NOT NULL,
    reward DOUBLE NOT NULL, reward_version VARCHAR NOT NULL, shard_id VARCHAR NOT NULL);
CREATE TABLE IF NOT EXISTS shards (
    shard_id VARCHAR PRIMARY KEY, campaign_id VARCHAR NOT NULL, kind VARCHAR NOT NULL,
    n_rows BIGINT NOT NULL, ingested_at TIMESTAMP NOT NULL);
ALTER TABLE samples ADD COLUMN IF NOT EXISTS base_logprob DOUBLE;  -- log p(text) under the BC policy
CREATE TABLE IF NOT EXISTS sample_audits (  -- audit metrics of each Grow sample, never trained on
    campaign_id VARCHAR NOT NULL, grow INTEGER NOT NULL, source_id VARCHAR NOT NULL,
    sample_idx INTEGER NOT NULL, metric VARCHAR NOT NULL, value DOUBLE, shard_id VARCHAR NOT NULL);
CREATE TABLE IF NOT EXISTS reference_rewards (  -- the reward of each source's reference, per Grow step
    campaign_id VARCHAR, grow INTEGER, source_id VARCHAR, reward DOUBLE, reward_version VARCHAR,
    shard_id VARCHAR);
CREATE TABLE IF NOT EXISTS eval_outputs (  -- greedy outputs of each checkpoint on validation / test
    campaign_id VARCHAR, policy VARCHAR, split VARCHAR, source_id VARCHAR, text VARCHAR, n_tokens INTEGER,
    reward DOUBLE, shard_id VARCHAR);
CREATE TABLE IF NOT EXISTS curves (
    campaign_id VARCHAR NOT NULL, step_key VARCHAR NOT NULL, step INTEGER NOT NULL,
    loss DOUBLE, lr DOUBLE, val_reward DOUBLE, shard_id VARCHAR NOT NULL);
CREATE TABLE IF NOT EXISTS evals (
    campaign_id VARCHAR, step_key VARCHAR, policy VARCHAR, split VARCHAR, metric VARCHAR, n INTEGER,
    value DOUBLE, PRIMARY KEY (campaign_id, step_key, policy, split, metric, n));
CREATE TABLE IF NOT EXISTS checkpoints (
    campaign_id VARCHAR, policy VARCHAR, path VARCHAR NOT NULL, parent VARCHAR, grow INTEGER,
    improve INTEGER, created_at TIMESTAMP, PRIMARY KEY (campaign_id, policy));
CREATE TABLE IF NOT EXISTS reward_models (
    version VARCHAR PRIMARY KEY, name VARCHAR NOT NULL, kind VARCHAR NOT NULL, path VARCHAR,
    created_at TIMESTAMP NOT NULL);
"""


# Shard kinds (by file name prefix in a step's shards/ folder) and the table each is appended to.
SHARD_TABLES = {
    "samples": "samples",
    "curves": "curves",
    "audits": "sample_audits",
    "refs": "reference_rewards",
    "outputs": "eval_outputs",
}


def shard_kind(name: str) -> str:
    """The kind of a shard file from its name: samples-00003.parquet, curve-ATTEMPT.parquet, outputs.parquet,
    ..."""
    stem = name.split("-")[0].split(".")[0]
    return "curves" if stem == "curve" else stem


class StoreError(RuntimeError):
    """The store cannot be opened; the message is one line naming the file."""


class StoreMissing(StoreError):
    """The file (or its folder) does not exist and the caller may not create it."""


class StoreBusy(StoreError):
    """Another process (a dashboard, a `restgov run`) holds the file."""


class StoreDamaged(StoreError):
    """The file exists but is not a readable DuckDB database (truncated, overwritten, corrupted)."""


_RESTORE = "Restore it from a backup (README: 'Backup and restore') or point --db at another file."


def _open_error(path: Path, e: duckdb.Error) -> StoreError:
    """The StoreError a DuckDB error on opening `path` stands for."""
    msg = " ".join(str(e).split())
    if "Could not set lock" in msg or "Conflicting lock" in msg:
        return StoreBusy(
            f"cannot open {path}: another restgov process (a dashboard or a `restgov run`) holds it. "
            "Stop it, or point --db at another file."
        )
    if "Permission denied" in msg:
        return StoreError(
            f"cannot open {path}: permission denied: point --db at a file you may write, or change the "
            "permissions of the file and its folder"
        )
    return StoreDamaged(
        f"cannot open {path}: the file is damaged (not a readable DuckDB database: {msg}). {_RESTORE}"
    )


def _check_folder(path: Path, create: bool) -> None:
    """StoreMissing when the folder of a missing store file does not exist and may not be created, StoreError
    when a part of that folder's path is a file."""
    folder = path.parent
    if folder.is_dir():
        return
    anc = folder
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if anc.exists() and not anc.is_dir():
        raise StoreError(f"cannot open {path}: {anc} is a file, not a folder: point --db at another path")
    if not create:
        raise StoreMissing(
            f"cannot open {path}: the folder {folder} does not exist "
            "(only `restgov run`, `restgov demo` and `restgov dashboard` create one)"
        )


# Store objects of this process per resolved file path: only the first checks the file for truncation (later
# ones share its in-memory database, whose block counts include blocks not written yet).
_OPEN: dict[str, int] = {}
_OPEN_LOCK = threading.Lock()
DUCKDB_HEADER_BYTES = 3 * 4096  # the file header and the two database headers before the first block


def _truncation(con: duckdb.DuckDBPyConnection, path: Path) -> str | None:
    """Why the file is too short to hold the blocks in use, or None. A truncated copy can open and then fail
    on the first table read from a missing block, after a command has started its work.

    Only blocks in use count: a file may legitimately end before free blocks at its tail, so a file shorter
    than all its blocks is not damaged by itself. Call it on a connection just opened, the first of this
    process on the file.
    """
    ((block_size, total, free),) = con.execute(
        "SELECT block_size, total_blocks, free_blocks FROM pragma_database_size() "
        "WHERE database_name = current_database()"
    ).fetchall()
    used = int(total) - int(free)
    need = DUCKDB_HEADER_BYTES + used * int(block_size)
    have = path.stat().st_size
    if used > 0 and have < need:
        return f"truncated: {have} bytes, where its {used} blocks in use need {need} bytes"
    return None


def now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class CoreStore:
    """A DuckDB file opened read-write by this process. Use one `Store` per process and `cursor()` per thread.

    Feature mixins (engine/store/*.py) add their tables through a `SCHEMA` class attribute each.
    """

    SCHEMA = SCHEMA

    def __init__(self, path: str | Path, create: bool = True):
        """Open `path`; `create` makes its folder and the file when missing, else StoreMissing. StoreBusy when
        another process holds the file, StoreDamaged when it is not a readable DuckDB database."""
        self.path = Path(path)
        if not self.path.exists():
            _check_folder(self.path, create)
            if not create:
                raise StoreMissing(
                    f"cannot open {self.path}: no such file "
                    "(`restgov run`, `restgov demo` and `restgov dashboard` create one)"
                )
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise StoreError(
                    f"cannot open {self.path}: cannot create the folder {self.path.parent} "
                    f"({(e.strerror or str(e)).lower()}): point --db at a folder you can write to"
                ) from e
        elif self.path.is_dir():
            raise StoreError(
                f"cannot open {self.path}: it is a folder, not a DuckDB file: give a file name, "
                f"e.g. {self.path / 'restgov.duckdb'}"
            )
        self._key = str(self.path.resolve())
        try:
            self._con = duckdb.connect(str(self.path))
        except duckdb.Error as e:
            raise _open_error(self.path, e) from e
        self._local = threading.local()
        with _OPEN_LOCK:
            first = not _OPEN.get(self._key)
            _OPEN[self._key] = _OPEN.get(self._key, 0) + 1
        self._closed = False
        try:
            if first and (truncated := _truncation(self._con, self.path)):
                self.close()
                raise StoreDamaged(f"cannot open {self.path}: the file is damaged ({truncated}). {_RESTORE}")
            for cls in reversed(type(self).__mro__):
                if "SCHEMA" in vars(cls):
                    self._con.execute(vars(cls)["SCHEMA"])
        except duckdb.Error as e:  # a file that opens but whose catalog or blocks cannot be read
            self.close()
            raise _open_error(self.path, e) from e

    def cursor(self) -> duckdb.DuckDBPyConnection:
        cur = getattr(self._local, "cur", None)
        if cur is None:
            cur = self._local.cur = self._con.cursor()
        return cur

    def _retry(self, fn, attempts: int = 50):
        """Run a short write transaction `fn()`, again when DuckDB reports a write-write conflict on the
        same row (two threads updating one campaign row: a state change racing a criteria change)."""
        for n in range(attempts):
            try:
                return fn()
            except duckdb.TransactionException as e:
                if "Conflict" not in str(e) or n == attempts - 1:
                    raise
                time.sleep(0.002 * (n + 1))

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """`with store.transaction() as cur:` commits when the block ends, rolls back when it raises."""
        cur = self.cursor()
        cur.execute("BEGIN")
        try:
            yield cur
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        cur.execute("COMMIT")

    def close(self) -> None:
        self._con.close()
        with _OPEN_LOCK:
            if not self._closed:
                self._closed = True
                _OPEN[self._key] -= 1

    def _rows(self, sql: str, params: list | tuple = ()) -> list[dict]:
        cur = self.cursor().execute(sql, params)
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r)) for r in cur.fetchall()]

    # ---------------------------------------------------------------- campaigns and events
    def create_campaign(
        self, cid: str, name: str, mode: str, config: dict, run_dir: str, actor: str = "cli"
    ) -> None:
        t = now()
        cur = self.cursor()
        cur.execute(
            "INSERT INTO campaigns VALUES (?, ?, ?, 'CREATED', NULL, ?, ?, ?, ?)",
            [cid, name, mode, json.dumps(config), run_dir, t, t],
        )
        self.add_event(cid, "state", "campaign created", {"config": config}, actor=actor, state="CREATED")

    def campaign(self, cid: str) -> dict | None:
        rows = self._rows("SELECT * FROM campaigns WHERE id = ?", [cid])
        if not rows:
            return None
        row = rows[0]
        row["config"] = json.loads(row["config"])
        return row

    def campaigns(self) -> list[dict]:
        return self._rows(
            "SELECT id, name, mode, state, stop_reason, created_at, updated_at FROM campaigns "
            "ORDER BY created_at"
        )

    def set_state(
        self,
        cid: str,
        state: str,
        message: str,
        actor: str = "controller",
        reason: str | None = None,
        payload: dict | None = None,
    ) -> None:
        """Update the campaign's state and append the transition to the event log in one transaction."""
        self._retry(lambda: self._set_state(cid, state, message, actor, reason, payload))

    def _set_state(self, cid, state, message, actor, reason, payload) -> None:
        with self.transaction() as cur:
            if reason is not None:
                cur.execute(
                    "UPDATE campaigns SET state = ?, stop_reason = ?, updated_at = ? WHERE id = ?",
                    [state, reason, now(), cid],
                )
            else:
                cur.execute(
                    "UPDATE campaigns SET state = ?, updated_at = ? WHERE id = ?", [state, now(), cid]
                )
            self._event(cur, cid, "state", message, payload, actor, state)

    def update_config(
        self, cid: str, config: dict, actor: str, message: str, payload: dict | None = None
    ) -> None:
        """Replace a campaign's validated config and log who changed what, in one transaction."""

        def write() -> None:
            with self.transaction() as cur:
                cur.execute(
                    "UPDATE campaigns SET config = ?, updated_at = ? WHERE id = ?",
                    [json.dumps(config), now(), cid],
                )
                self._event(cur, cid, "criteria", message, payload, actor, None)

        self._retry(write)

    def add_event(
        self,
        cid: str | None,
        kind: str,
        message: str,
        payload: dict | None = None,
        actor: str = "controller",
        state: str | None = None,
    ) -> None:
        self._event(self.cursor(), cid, kind, message, payload, actor, state)

    @staticmethod
    def _event(cur, cid, kind, message, payload, actor, state) -> None:
        cur.execute(
            "INSERT INTO events (campaign_id, ts, actor, kind, state, message, payload) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [cid, now(), actor, kind, state, message, json.dumps(payload) if payload is not None else None],
        )

    def events(self, cid: str, kinds: list[str] | None = None) -> list[dict]:
        if kinds:
            return self._rows(
                "SELECT * FROM events WHERE campaign_id = ? AND list_contains(?, kind) ORDER BY id",
                [cid, kinds],
            )
        return self._rows("SELECT * FROM events WHERE campaign_id = ? ORDER BY id", [cid])

    # ---------------------------------------------------------------- steps
    def start_step(self, cid: str, key: str, kind: str, grow: int | None, improve: int | None) -> None:
        self.cursor().execute(
            "INSERT INTO steps VALUES (?, ?, ?, ?, ?, 'running', ?, NULL, NULL, NULL) "
            "ON CONFLICT (campaign_id, step_key) DO UPDATE SET status = 'running', "
            "started_at = excluded.started_at",
            [cid, key, kind, grow, improve, now()],
        )

    def finish_step(self, cid: str, key: str, result: dict, seconds: float) -> None:
        self.cursor().execute(
            "UPDATE steps SET status = 'done', finished_at = ?, seconds = ?, result = ? "
            "WHERE campaign_id = ? AND step_key = ?",
            [now(), seconds, json.dumps(result), cid, key],
        )

    def steps(self, cid: str) -> list[dict]:
        rows = self._rows("SELECT * FROM steps WHERE campaign_id = ? ORDER BY started_at", [cid])
        for r in rows:
            r["result"] = json.loads(r["result"]) if r["result"] else None
        return rows

    def done_steps(self, cid: str) -> dict[str, dict]:
        return {r["step_key"]: r["result"] for r in self.steps(cid) if r["status"] == "done"}

    # ---------------------------------------------------------------- prompts
    def add_prompts(self, cid: str, split: str, rows: list[tuple[str, str, str]]) -> None:
        """(source_id, source, reference) rows; re-adding the same split is a no-op."""
        cur = self.cursor()
        ((n,),) = cur.execute(
            "SELECT count(*) FROM prompts WHERE campaign_id = ? AND split = ?", [cid, split]
        ).fetchall()
        if n:
            return
        import pyarrow as pa

        tbl = pa.table(
            {
                "campaign_id": [cid] * len(rows),
                "split": [split] * len(rows),
                "source_id": [r[0] for r in rows],
                "source": [r[1] for r in rows],
                "reference": [r[2] for r in rows],
            }
        )
        with self._con.cursor() as tmp:  # a private cursor: registering needs one with no pending result
            tmp.register("_prompts_in", tbl)
            tmp.execute("INSERT INTO prompts SELECT * FROM _prompts_in")

    # ---------------------------------------------------------------- shards
    def ingest_shard(self, cid: str, kind: str, shard_id: str, path: str | Path) -> int:
        """Append a shard exactly once; returns rows added (0 when already ingested).

        Columns the table has and the file lacks stay NULL (a shard written before the column existed).
        A samples shard also adds its per-source figures (`record_source_stats`, where the store has the
        drift mixin) in the same transaction: they exist exactly when the rows do.
        """
        table = SHARD_TABLES[kind]
        with self.transaction() as cur:
            if cur.execute("SELECT 1 FROM shards WHERE shard_id = ?", [shard_id]).fetchone():
                return 0
            in_file = {
                d[0] for d in cur.execute("SELECT * FROM read_parquet(?) LIMIT 0", [str(path)]).description
            }
            cols = [
                r[0]
                for r in cur.execute(f"DESCRIBE {table}").fetchall()
                if r[0] not in ("campaign_id", "shard_id") and r[0] in in_file
            ]
            if kind == "curves":
                n = self._replace_curve(cur, cid, shard_id, path, cols)
            else:
                collist = ", ".join(cols)
                cur.execute(
                    f"INSERT INTO {table} (campaign_id, {collist}, shard_id) "
                    f"SELECT ?, {collist}, ? FROM read_parquet(?)",
                    [cid, shard_id, str(path)],
                )
                (n,) = cur.execute("SELECT count(*) FROM read_parquet(?)", [str(path)]).fetchone()
            if kind == "samples" and hasattr(self, "record_source_stats"):
                self.record_source_stats(cur, cid, shard_id)
            cur.execute("INSERT INTO shards VALUES (?, ?, ?, ?, ?)", [shard_id, cid, kind, n, now()])
        return n

    @staticmethod
    def _replace_curve(cur, cid: str, shard_id: str, path: str | Path, cols: list[str]) -> int:
        """Write a training curve as the curve of its unit: rows an earlier attempt of the same unit left
        (a run killed after its curve landed, then rerun) are deleted first, and a validation check at a
        training step shares that step's row, so there is one row per (step_key, step). Returns rows written.
        """
        cur.execute(
            "DELETE FROM curves WHERE campaign_id = ? "
            "AND step_key IN (SELECT DISTINCT step_key FROM read_parquet(?))",
            [cid, str(path)],
        )
        values = [c for c in ("loss", "lr", "val_reward") if c in cols]
        agg = ", ".join(f"max({c})" for c in values)  # at most one non-NULL value per step and column
        cur.execute(
            f"INSERT INTO curves (campaign_id, step_key, step, {', '.join(values)}, shard_id) "
            f"SELECT ?, step_key, step, {agg}, ? FROM read_parquet(?) GROUP BY step_key, step",
            [cid, shard_id, str(path)],
        )
        (n,) = cur.execute("SELECT count(*) FROM curves WHERE shard_id = ?", [shard_id]).fetchone()
        return int(n)

    def shard_ids(self, cid: str) -> set[str]:
        return {
            r[0]
            for r in self.cursor()
            .execute("SELECT shard_id FROM shards WHERE campaign_id = ?", [cid])
            .fetchall()
        }

    # ---------------------------------------------------------------- samples
    def grow_stats(self, cid: str, grow: int) -> dict:
        row = self._rows(
            "SELECT count(*) AS n, avg(reward) AS mean, stddev_pop(reward) AS std, min(reward) AS min, "
            "max(reward) AS max, "
            "count(*) FILTER (WHERE sample_idx >= 0) AS n_generated "
            "FROM samples WHERE campaign_id = ? AND grow = ?",
            [cid, grow],
        )[0]
        return row

    def grow_policy(self, cid: str, grow: int) -> str:
        """The checkpoint id that sampled Grow step `grow` ("base" when it has no samples)."""
        rows = (
            self.cursor()
            .execute(
                "SELECT any_value(policy) FROM samples "
                "WHERE campaign_id = ? AND grow = ? AND sample_idx >= 0",
                [cid, grow],
            )
            .fetchall()
        )
        return rows[0][0] or "base"

    def samples_generated(self, cid: str) -> int:
        (n,) = (
            self.cursor()
            .execute("SELECT count(*) FROM samples WHERE campaign_id = ? AND sample_idx >= 0", [cid])
            .fetchone()
        )
        return int(n)

    # ---------------------------------------------------------------- evals and checkpoints
    def add_eval(
        self, cid: str, step_key: str, policy: str, split: str, metric: str, value: float, n: int = 0
    ) -> None:
        self.cursor().execute(
            "INSERT INTO evals VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET value = excluded.value",
            [cid, step_key, policy, split, metric, n, value],
        )

    def evals(self, cid: str) -> list[dict]:
        return self._rows(
            "SELECT * FROM evals WHERE campaign_id = ? ORDER BY step_key, policy, metric, n", [cid]
        )

    def add_checkpoint(
        self, cid: str, policy: str, path: str, parent: str | None, grow: int | None, improve: int | None
    ) -> None:
        self.cursor().execute(
            "INSERT INTO checkpoints VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT DO UPDATE SET path = excluded.path",
            [cid, policy, path, parent, grow, improve, now()],
        )

    def checkpoints(self, cid: str) -> list[dict]:
        return self._rows("SELECT * FROM checkpoints WHERE campaign_id = ? ORDER BY created_at", [cid])

    def add_reward_model(self, version: str, name: str, kind: str, path: str | None) -> None:
        self.cursor().execute(
            "INSERT INTO reward_models VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            [version, name, kind, path, now()],
        )

    def curves(self, cid: str, step_key: str | None = None) -> list[dict]:
        """One row per (step_key, step) of each unit's latest curve: a store written before curves were
        replaced on ingest may still hold a killed attempt's rows beside the rerun's; they are left out."""
        return self._rows(
            "WITH latest AS (SELECT c.step_key, arg_max(c.shard_id, coalesce(s.ingested_at, "
            "TIMESTAMP '1970-01-01')) AS shard_id FROM curves c LEFT JOIN shards s USING (shard_id) "
            "WHERE c.campaign_id = $cid AND ($key IS NULL OR c.step_key = $key) GROUP BY c.step_key) "
            "SELECT campaign_id, step_key, step, max(loss) AS loss, max(lr) AS lr, "
            "max(val_reward) AS val_reward, shard_id FROM curves JOIN latest USING (step_key, shard_id) "
            "WHERE campaign_id = $cid GROUP BY ALL ORDER BY step_key, step",
            {"cid": cid, "key": step_key},
        )

    # ---------------------------------------------------------------- export
    def export_samples(self, cid: str, out: str | Path, fmt: str) -> int:
        """Samples joined with their source and reference, written by DuckDB (streams; no pandas)."""
        if fmt not in ("parquet", "jsonl"):
            raise ValueError(f"--format {fmt!r}: use parquet or jsonl")
        opt = "FORMAT parquet" if fmt == "parquet" else "FORMAT json"
        cur = self.cursor()
        cur.execute(
            f"COPY (SELECT s.grow, s.source_id, s.sample_idx, p.source, p.reference, s.text, s.n_tokens, "
            f"s.sum_logprob, s.policy, s.reward, s.reward_version FROM samples s "
            f"LEFT JOIN prompts p ON p.campaign_id = s.campaign_id "
            f"AND p.split = 'train' AND p.source_id = s.source_id WHERE s.campaign_id = ? "
            f"ORDER BY s.grow, s.source_id, s.sample_idx) TO '{_sql_path(Path(out))}' ({opt})",
            [cid],
        )
        (n,) = cur.execute("SELECT count(*) FROM samples WHERE campaign_id = ?", [cid]).fetchone()
        return int(n)

    def query_value(self, sql: str, params: list[Any]) -> Any:
        """For tests and benchmarks: one value from a parameterized query."""
        return self.cursor().execute(sql, params).fetchone()[0]


def _named(sql: str, params: dict) -> dict:
    """Only the named parameters the statement uses (DuckDB rejects extra ones)."""
    return {k: v for k, v in params.items() if f"${k}" in sql}


def _sql_path(p: Path) -> str:
    # COPY ... TO takes a literal file name, not a placeholder; paths are ours, quotes are escaped anyway.
    return str(p).replace("'", "''")
