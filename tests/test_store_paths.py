"""`--db` paths through the real `restgov` command: only run, demo and dashboard create a missing folder;
every other command refuses in one line naming the path and creates nothing; a damaged DuckDB file is
reported as damaged, not as held by another process."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from conftest import RESTGOV, restgov, restgov_env, write_tiny_campaign

from engine.store import StoreBusy, StoreDamaged, StoreMissing, open_store

READ_ONLY = [
    ("status",),
    ("status", "some-id", "--json"),
    ("export", "some-id"),
    ("criteria", "some-id"),
    ("drift", "some-id"),
    ("ratings", "stats", "some-id"),
    ("ratings", "create", "some-id", "--a", "bc", "--b", "final"),
    ("reward-refresh", "some-id"),
    ("users", "list"),
    ("users", "remove", "nobody"),
    ("resume", "some-id"),
]


def one_error_line(proc) -> str:
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.mark.parametrize("args", READ_ONLY, ids=lambda a: " ".join(a[:2]))
def test_read_only_commands_refuse_a_missing_folder(tmp_path: Path, args: tuple[str, ...]):
    db = tmp_path / "x" / "nope" / "r.duckdb"
    line = one_error_line(restgov(*args, "--db", db, timeout=120))
    assert str(db) in line and "does not exist" in line
    assert not (tmp_path / "x").exists()
    assert list(tmp_path.iterdir()) == []


def test_read_only_command_refuses_a_missing_file(tmp_path: Path):
    db = tmp_path / "r.duckdb"
    line = one_error_line(restgov("status", "--db", db, timeout=120))
    assert str(db) in line and "no such file" in line
    assert list(tmp_path.iterdir()) == []


def test_users_add_creates_the_file_but_not_a_folder(tmp_path: Path):
    db = tmp_path / "nope" / "r.duckdb"
    proc = restgov("users", "add", "olga", "--role", "operator", "--password-stdin", "--db", db, timeout=120)
    assert str(db) in one_error_line(proc)
    assert not db.parent.exists()
    db = tmp_path / "r.duckdb"
    proc = subprocess_with_input(
        ["users", "add", "olga", "--role", "operator", "--password-stdin", "--db", str(db)], "pw-123456\n"
    )
    assert proc.returncode == 0, proc.stderr
    assert "created" not in proc.stdout
    assert [u["name"] for u in open_store(db, create=False).users()] == ["olga"]


def subprocess_with_input(args: list[str], text: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*RESTGOV, *args], input=text, capture_output=True, text=True, timeout=120, env=restgov_env()
    )


def test_run_creates_the_folder_once(tmp_path: Path):
    """`restgov run` into a missing folder creates it and says so once; here the reward does not import, so
    the run stops at validation after the folder and the store exist (an empty store, no run folder)."""
    cfg = write_tiny_campaign(tmp_path / "cfg")
    bad = '[reward]\nkind = "callable"\nfunction = "nomod:f"'
    cfg.write_text(cfg.read_text().replace('[reward]\nkind = "numeric"', bad))
    db = tmp_path / "new" / "deeper" / "r.duckdb"
    proc = restgov("run", cfg, "--db", db, timeout=120)
    assert proc.stdout.splitlines().count(f"created {db.parent}") == 1
    assert "reward.function" in one_error_line(proc)
    assert db.is_file() and not (db.parent / "runs").exists()
    assert open_store(db, create=False).campaigns() == []


def _real_store(path: Path) -> Path:
    store = open_store(path)
    store.add_event(None, "note", "a store with something in it", actor="test")
    store.close()
    return path


@pytest.mark.parametrize("damage", ["truncated", "random", "empty"])
def test_damaged_file_is_named_damaged(tmp_path: Path, damage: str):
    real = _real_store(tmp_path / "real.duckdb").read_bytes()
    assert len(real) > 4096
    db = tmp_path / "bad.duckdb"
    db.write_bytes({"truncated": real[:4096], "random": os.urandom(64 * 1024), "empty": b""}[damage])
    before = db.read_bytes()
    line = one_error_line(restgov("status", "--db", db, timeout=120))
    assert str(db) in line and "damaged" in line
    assert "another restgov process" not in line
    assert db.read_bytes() == before
    with pytest.raises(StoreDamaged, match="damaged"):
        open_store(db)
    # run and dashboard create missing folders, never over a damaged file
    assert "damaged" in one_error_line(restgov("dashboard", "--db", db, "--port", "1", timeout=120))
    assert db.read_bytes() == before


def test_engine_exceptions_are_distinct(tmp_path: Path):
    with pytest.raises(StoreMissing, match="does not exist"):
        open_store(tmp_path / "none" / "r.duckdb", create=False)
    assert not (tmp_path / "none").exists()
    db = _real_store(tmp_path / "held.duckdb")
    held = open_store(db, create=False)
    try:
        proc = restgov("status", "--db", db, timeout=120)
        line = one_error_line(proc)
        assert "another restgov process" in line and "damaged" not in line
    finally:
        held.close()
    assert issubclass(StoreBusy, RuntimeError) and not issubclass(StoreBusy, StoreDamaged)


def test_second_store_in_a_process_is_not_called_damaged_and_keeps_the_lock(tmp_path: Path):
    # While one Store writes, the blocks it allocated are not all in the file yet; a second Store of the same
    # process must neither call the file truncated nor drop the lock that keeps other processes out.
    db = _real_store(tmp_path / "grow.duckdb")
    first = open_store(db, create=False)
    try:
        first.cursor().execute(
            "CREATE TABLE filler AS SELECT range AS i, repeat('x', 200) AS s FROM range(200000)"
        )
        second = open_store(db, create=False)
        assert second.query_value("SELECT count(*) FROM filler", []) == 200_000
        second.close()
        line = one_error_line(restgov("status", "--db", db, timeout=120))
        assert "another restgov process" in line
    finally:
        first.close()
    assert open_store(db, create=False).query_value("SELECT count(*) FROM filler", []) == 200_000
