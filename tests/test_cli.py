"""Tests for the `restgov` command line, run as a real subprocess: help texts, error messages that name
the bad field or the bad file line, status of unknown campaigns, and exporting a finished campaign."""

from __future__ import annotations

import json
from contextlib import closing
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
from conftest import N_TRAIN, K, campaign_ids, restgov

from engine.store import Store

HELP = {
    "demo": ["--recipe", "--small", "--data-dir", "--db", "arith", "toy-mt"],
    "run": ["config", "--db"],
    "resume": ["id", "--db"],
    "status": ["id", "--json", "--db"],
    "export": ["id", "--format", "--out", "--db", "parquet", "jsonl"],
}


def test_top_level_help_lists_every_command():
    res = restgov("--help", timeout=60)
    assert res.returncode == 0, res.stderr
    assert "usage: restgov" in res.stdout
    for cmd in HELP:
        assert cmd in res.stdout
    assert restgov(timeout=60).returncode != 0  # a command is required


@pytest.mark.parametrize("cmd", sorted(HELP))
def test_subcommand_help_mentions_its_arguments(cmd: str):
    res = restgov(cmd, "--help", timeout=60)
    assert res.returncode == 0, res.stderr
    assert f"usage: restgov {cmd}" in res.stdout
    for word in HELP[cmd]:
        assert word in res.stdout, f"{cmd} --help does not mention {word}"


def test_run_with_a_bad_field_names_it(tiny_arith: Path, tmp_path: Path):
    cfg = tiny_arith
    cfg.write_text(cfg.read_text().replace("temperature = 0.8", "temperature = -1.0"))
    db = tmp_path / "db" / "restgov.duckdb"
    res = restgov("run", cfg, "--db", db, timeout=60)
    assert res.returncode != 0
    assert "grow.temperature" in res.stderr and "-1.0" in res.stderr
    assert str(cfg) in res.stderr
    assert not db.exists()  # nothing was started


def test_run_with_an_unknown_field_names_it(tiny_arith: Path, tmp_path: Path):
    cfg = tiny_arith
    cfg.write_text(cfg.read_text().replace("[stop]\n", "[stop]\nmax_grow_step = 3\n"))
    res = restgov("run", cfg, "--db", tmp_path / "r.duckdb", timeout=60)
    assert res.returncode != 0
    assert "stop.max_grow_step" in res.stderr and "unknown field" in res.stderr


def test_run_with_a_toml_syntax_error_names_the_file(tmp_path: Path):
    cfg = tmp_path / "broken.toml"
    cfg.write_text("[grow\ntemperature = 0.8\n")
    res = restgov("run", cfg, "--db", tmp_path / "r.duckdb", timeout=60)
    assert res.returncode != 0
    assert str(cfg) in res.stderr and "TOML" in res.stderr
    assert "Traceback" not in res.stderr


def test_run_with_a_bad_data_row_names_file_and_line(tiny_rest: Path, tmp_path: Path):
    cfg = tiny_rest
    train = cfg.parent / "train.jsonl"
    lines = train.read_text().splitlines()
    lines[2] = json.dumps({"id": "2", "source": "Ann has 3 apples."})  # line 3: no reference
    lines[6] = "{not json"  # line 7
    train.write_text("\n".join(lines) + "\n")
    db = tmp_path / "db" / "restgov.duckdb"
    res = restgov("run", cfg, "--db", db, timeout=60)
    assert res.returncode != 0
    assert f"{train} line 3: field 'reference' is missing" in res.stderr
    assert f"{train} line 7: not valid JSON" in res.stderr
    assert "Traceback" not in res.stderr
    assert campaign_ids(db) == []  # no run directory was made
    listing = restgov("status", "--db", db, timeout=60)
    assert listing.returncode == 0 and "no campaigns" in listing.stdout


def test_unknown_campaign_is_a_clear_error(tmp_path: Path):
    db = tmp_path / "empty.duckdb"
    Store(db).close()  # an empty store: read-only commands refuse a missing file
    for args in (
        ["status", "nope-123"],
        ["status", "nope-123", "--json"],
        ["resume", "nope-123"],
        ["export", "nope-123"],
    ):
        res = restgov(*args, "--db", db, timeout=60)
        assert res.returncode != 0, args
        assert "no campaign 'nope-123'" in res.stderr, (args, res.stderr)
        assert "Traceback" not in res.stderr


def test_a_database_held_by_another_process_is_a_clear_error(tmp_path: Path):
    db = tmp_path / "held.duckdb"
    with closing(duckdb.connect(str(db))):  # this process holds the file read-write, like a dashboard would
        res = restgov("status", "--db", db, timeout=60)
    assert res.returncode != 0
    assert "another restgov process" in res.stderr and str(db) in res.stderr
    assert "Traceback" not in res.stderr


# ---------------------------------------------------------------- on a finished campaign (slow: runs one)


def _n_samples() -> int:
    return 2 * (N_TRAIN * K + N_TRAIN)  # 2 Grow steps, K samples + the original per source


@pytest.mark.slow
def test_export_jsonl_one_line_per_sample(finished_arith, tmp_path: Path):
    db, cid, _ = finished_arith
    out = tmp_path / "samples.jsonl"
    res = restgov("export", cid, "--format", "jsonl", "--out", out, "--db", db, timeout=120)
    assert res.returncode == 0, res.stderr
    assert f"wrote {_n_samples()} samples" in res.stdout
    lines = out.read_text().splitlines()
    assert len(lines) == _n_samples()
    rows = [json.loads(line) for line in lines]
    assert {"grow", "source_id", "sample_idx", "source", "reference", "text", "reward", "policy"} <= rows[
        0
    ].keys()
    assert len({(r["grow"], r["source_id"], r["sample_idx"]) for r in rows}) == len(rows)
    assert all(r["source"] and r["reference"] for r in rows)  # every sample joined to its training prompt
    originals = [r for r in rows if r["sample_idx"] == -1]
    assert len(originals) == 2 * N_TRAIN and all(
        r["text"] == r["reference"] and r["reward"] == 1.0 for r in originals
    )


@pytest.mark.slow
def test_export_parquet_default_name(finished_arith, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    db, cid, _ = finished_arith
    monkeypatch.chdir(tmp_path)
    res = restgov("export", cid, "--db", db, timeout=120)
    assert res.returncode == 0, res.stderr
    table = pq.read_table(tmp_path / f"{cid}-samples.parquet")
    assert table.num_rows == _n_samples()
    assert sorted(set(table.column("grow").to_pylist())) == [1, 2]


@pytest.mark.slow
def test_status_table_and_listing(finished_arith):
    db, cid, _ = finished_arith
    table = restgov("status", cid, "--db", db, timeout=120)
    assert table.returncode == 0, table.stderr
    for word in (cid, "state=DONE", "binary", "g1-i1", "g2-i1", "stop reason: max_grow_steps", "best-of-N"):
        assert word in table.stdout, word
    listing = restgov("status", "--db", db, timeout=120)
    assert listing.returncode == 0
    assert cid in listing.stdout and "DONE" in listing.stdout
    many = json.loads(restgov("status", "--db", db, "--json", timeout=120).stdout)
    assert [c["id"] for c in many] == [cid]
