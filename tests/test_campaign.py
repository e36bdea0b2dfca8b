"""End-to-end campaigns through the real `restgov` CLI on tiny models: the status report, the samples in the
DuckDB file, and resuming after the whole process group (controller and worker) is SIGKILLed mid-Grow
and mid-Improve. Slow: each campaign spawns one worker process per step.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from contextlib import closing
from pathlib import Path

import duckdb
import pytest
from conftest import (
    N_TRAIN,
    RESTGOV,
    SHARD_SOURCES,
    K,
    campaign_ids,
    restgov,
    restgov_env,
    status_json,
    write_tiny_campaign,
)

pytestmark = pytest.mark.slow

N_SHARDS = -(-N_TRAIN // SHARD_SOURCES)


def read_db(db: Path, sql: str, params: list | None = None) -> list[tuple]:
    """Query the campaign's DuckDB file read-only (only once no restgov process holds it), then let it go."""
    with closing(duckdb.connect(str(db), read_only=True)) as con:
        return con.execute(sql, params or []).fetchall()


def assert_samples_complete(db: Path, cid: str, grows: int) -> None:
    """Every Grow has K samples per training source plus the mixed originals, each key exactly once."""
    dups = read_db(
        db,
        "SELECT grow, source_id, sample_idx, count(*) FROM samples WHERE campaign_id = ? GROUP BY ALL "
        "HAVING count(*) > 1 LIMIT 5",
        [cid],
    )
    assert dups == []
    per_grow = read_db(
        db,
        "SELECT grow, count(*) FILTER (WHERE sample_idx >= 0), count(*) FILTER (WHERE sample_idx = -1), "
        "count(DISTINCT source_id), min(sample_idx), max(sample_idx) FROM samples WHERE campaign_id = ? "
        "GROUP BY grow ORDER BY grow",
        [cid],
    )
    # original_mix = 1.0 in the tiny configs: every original pair is mixed into every Grow.
    assert per_grow == [(g, N_TRAIN * K, N_TRAIN, N_TRAIN, -1, K - 1) for g in range(1, grows + 1)]
    ((total,),) = read_db(db, "SELECT count(*) FROM samples WHERE campaign_id = ?", [cid])
    assert total == grows * (N_TRAIN * K + N_TRAIN)
    shards = read_db(
        db, "SELECT shard_id FROM shards WHERE campaign_id = ? AND kind = 'samples' ORDER BY shard_id", [cid]
    )
    assert [s for (s,) in shards] == [
        f"{cid}/g{g}-grow/samples-{j:05d}.parquet" for g in range(1, grows + 1) for j in range(N_SHARDS)
    ]


# ---------------------------------------------------------------- a finished campaign


def test_run_to_done_status_json(finished_arith):
    db, cid, _ = finished_arith
    st = status_json(db, cid)
    assert st["id"] == cid and st["mode"] == "rest-em" and st["name"] == "tiny-rest-em"
    assert st["state"] == "DONE"
    assert st["stop_reason"].startswith("max_grow_steps")
    steps = st["steps"]
    assert [(s["grow"], s["improve"], s["policy"], s["rule"]) for s in steps] == [
        (0, 0, "base", "bc"),
        (1, 1, "g1-i1", "binary"),
        (2, 1, "g2-i1", "binary"),
    ]
    for s in steps:
        assert {"grow", "improve", "rule", "tau", "kept", "kept_mean_reward", "val_reward"} <= s.keys()
        assert 0.0 <= s["val_reward"] <= 1.0
        assert s["tau"] is None  # binary: no threshold
    for s in steps[1:]:
        # ReST-EM keeps reward 1: the originals (all correct) plus any correct sample.
        ((n_correct,),) = read_db(
            db,
            "SELECT count(*) FROM samples WHERE campaign_id = ? AND grow = ? AND reward = 1",
            [cid, s["grow"]],
        )
        assert s["kept"] == n_correct >= N_TRAIN
        assert s["kept_mean_reward"] == 1.0
        assert s["n_total"] == N_TRAIN * K + N_TRAIN
    assert set(st["grows"]) == {"1", "2"}
    assert all(
        g["n_samples"] == N_TRAIN * K + N_TRAIN and g["n_generated"] == N_TRAIN * K
        for g in st["grows"].values()
    )
    fin = st["final"]
    assert fin["split"] == "test"
    assert set(fin["mean_reward"]) == {"base", "g2-i1"}
    assert all(0.0 <= v <= 1.0 for v in fin["mean_reward"].values())
    assert {p: sorted(v) for p, v in fin["best_of_n"].items()} == {"base": ["1", "2"], "g2-i1": ["1", "2"]}
    for curve in fin["best_of_n"].values():
        assert 0.0 <= curve["1"] <= curve["2"] <= 1.0  # best of the first 2 draws >= the first draw


def test_run_to_done_store_contents(finished_arith):
    db, cid, _ = finished_arith
    assert_samples_complete(db, cid, grows=2)
    # ReST-EM: every Improve restarts from the base policy; Grow g samples from the policy after Grow g-1.
    ckpts = read_db(
        db,
        "SELECT policy, parent, grow, improve FROM checkpoints WHERE campaign_id = ? ORDER BY grow, policy",
        [cid],
    )
    assert ckpts == [("base", None, 0, None), ("g1-i1", "base", 1, 1), ("g2-i1", "base", 2, 1)]
    pols = read_db(
        db,
        "SELECT grow, list(DISTINCT policy ORDER BY policy) FROM samples WHERE campaign_id = ? GROUP BY grow "
        "ORDER BY grow",
        [cid],
    )
    assert pols == [(1, ["base", "reference"]), (2, ["g1-i1", "reference"])]
    steps = read_db(db, "SELECT step_key, status FROM steps WHERE campaign_id = ? ORDER BY started_at", [cid])
    keys = ("bootstrap", "g1-grow", "g1-gates", "g1-i1", "g2-grow", "g2-gates", "g2-i1", "final")
    assert steps == [(k, "done") for k in keys]
    # Training curves landed once per step that trained.
    curves = read_db(
        db,
        "SELECT step_key, count(*) FILTER (WHERE loss IS NOT NULL), "
        "count(DISTINCT step) FILTER (WHERE loss IS NOT NULL) "
        "FROM curves WHERE campaign_id = ? GROUP BY ALL ORDER BY step_key",
        [cid],
    )
    assert [c[0] for c in curves] == ["bootstrap", "g1-i1", "g2-i1"]
    assert all(n == distinct > 0 for _, n, distinct in curves)
    assert [c[2] for c in curves[1:]] == [5, 5]  # improve.max_steps
    states = [
        s
        for (s,) in read_db(
            db, "SELECT state FROM events WHERE campaign_id = ? AND kind = 'state' ORDER BY id", [cid]
        )
    ]
    assert states[0] == "CREATED" and states[-1] == "DONE"
    assert "BOOTSTRAP" in states and "GROW(2)" in states and "IMPROVE(2,1)" in states


# ---------------------------------------------------------------- kill -9 and resume


def _kill_when(args: list[str], db: Path, ready, log: Path, timeout: float = 240) -> Path:
    """Start `restgov ARGS`, wait until ready(run_dir) is true, then SIGKILL its whole process group.

    Returns the campaign's run directory.
    """
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [*RESTGOV, *args, "--db", str(db)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=restgov_env(),
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    try:
        while True:
            ids = campaign_ids(db)
            if ids and ready(db.parent / "runs" / ids[0]):
                break
            if proc.poll() is not None:
                pytest.fail(
                    f"restgov {args[0]} exited ({proc.returncode}) before the kill point:\n"
                    f"{log.read_text()[-3000:]}"
                )
            if time.monotonic() > deadline:
                pytest.fail(f"kill point not reached in {timeout:.0f} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)  # the controller and its worker, with no chance to clean up
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    _wait_group_gone(proc.pid)
    return db.parent / "runs" / ids[0]


def _wait_group_gone(pgid: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    pytest.fail(f"processes of group {pgid} survived SIGKILL")


def _state(db: Path, cid: str) -> tuple[str, str | None]:
    ((state, reason),) = read_db(db, "SELECT state, stop_reason FROM campaigns WHERE id = ?", [cid])
    return state, reason


def _done_keys(db: Path, cid: str) -> list[str]:
    rows = read_db(
        db, "SELECT step_key FROM steps WHERE campaign_id = ? AND status = 'done' ORDER BY started_at", [cid]
    )
    return [k for (k,) in rows]


def test_resume_after_sigkill_mid_grow_then_mid_improve(tmp_path: Path):
    """ReST, one Grow, two percentile Improve steps. `restgov run` is killed -9 mid-Grow; `restgov resume` is
    killed -9 mid-Improve; a second `restgov resume` finishes. Nothing is lost, nothing is duplicated."""
    cfg = write_tiny_campaign(
        tmp_path / "cfg",
        mode="rest",
        improve='rule = "percentile"\npercentiles = [0.0, 50.0]',
        grows=1,
        grow_batch=4 * K,
    )  # 4 sources per generate call: a Grow long enough to catch
    db, log = tmp_path / "restgov.duckdb", tmp_path / "restgov.log"
    grow = lambda run: run / "steps" / "g1-grow"  # noqa: E731
    imp = lambda run: run / "steps" / "g1-i1"  # noqa: E731

    # 1. Killed mid-Grow: at least one shard on disk, the step's result not yet written.
    def mid_grow(run: Path) -> bool:
        return (
            any((grow(run) / "shards").glob("samples-*.parquet")) and not (grow(run) / "result.json").exists()
        )

    run = _kill_when(["run", str(cfg)], db, mid_grow, log)
    cid = run.name
    assert not (grow(run) / "result.json").exists()
    before = {p.name: p.stat().st_mtime_ns for p in (grow(run) / "shards").glob("samples-*.parquet")}
    assert 1 <= len(before) < N_SHARDS, before  # some shards written, not all
    assert _state(db, cid)[0] == "GROW(1)"
    assert _done_keys(db, cid) == ["bootstrap"]

    # 2. Resumed, then killed mid-Improve: the worker has started g1-i1 and not finished it.
    def mid_improve(run: Path) -> bool:
        return (imp(run) / "events.jsonl").exists() and not (imp(run) / "result.json").exists()

    _kill_when(["resume", cid], db, mid_improve, log)
    assert not (imp(run) / "result.json").exists() and not (run / "checkpoints" / "g1-i1").exists()
    assert _state(db, cid)[0] == "IMPROVE(1,1)"
    assert _done_keys(db, cid) == ["bootstrap", "g1-grow", "g1-gates"]
    assert_samples_complete(db, cid, grows=1)  # the resumed Grow filled in exactly the missing shards
    after = {p.name: p.stat().st_mtime_ns for p in (grow(run) / "shards").glob("samples-*.parquet")}
    assert len(after) == N_SHARDS and all(
        after[n] == t for n, t in before.items()
    )  # finished shards not redone

    # 3. Resumed to the end.
    res = restgov("resume", cid, "--db", db, timeout=300)
    assert res.returncode == 0, (
        f"resume failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    )
    state, reason = _state(db, cid)
    assert state == "DONE" and reason.startswith("max_grow_steps")
    assert _done_keys(db, cid) == ["bootstrap", "g1-grow", "g1-gates", "g1-i1", "g1-i2", "final"]
    assert_samples_complete(db, cid, grows=1)
    filters = read_db(
        db,
        "SELECT grow, improve, rule, param, n_total FROM filters WHERE campaign_id = ? ORDER BY improve",
        [cid],
    )
    assert filters == [
        (1, 1, "percentile", 0.0, N_TRAIN * (K + 1)),
        (1, 2, "percentile", 50.0, N_TRAIN * (K + 1)),
    ]
    ((kept0,),) = read_db(db, "SELECT kept FROM filters WHERE campaign_id = ? AND improve = 1", [cid])
    assert kept0 == N_TRAIN * (K + 1)  # the 0th percentile is each source's minimum: everything is kept
    # ReST warm-starts: i1 from base, i2 from i1.
    ckpts = read_db(db, "SELECT policy, parent FROM checkpoints WHERE campaign_id = ? ORDER BY policy", [cid])
    assert ckpts == [("base", None), ("g1-i1", "base"), ("g1-i2", "g1-i1")]
    # The killed attempt's curve never landed; the rerun's landed once: one row per (unit, step), validation
    # checks included, all from one curve shard per unit.
    dup = read_db(
        db, "SELECT step_key, step FROM curves WHERE campaign_id = ? GROUP BY ALL HAVING count(*) > 1", [cid]
    )
    assert dup == []
    per_unit = read_db(
        db,
        "SELECT step_key, count(DISTINCT shard_id) FROM curves WHERE campaign_id = ? GROUP BY ALL ORDER BY 1",
        [cid],
    )
    assert per_unit == [("bootstrap", 1), ("g1-i1", 1), ("g1-i2", 1)]
    st = status_json(db, cid)
    assert st["state"] == "DONE"
    assert [(s["policy"], s["rule"]) for s in st["steps"]] == [
        ("base", "bc"),
        ("g1-i1", "percentile"),
        ("g1-i2", "percentile"),
    ]
    kinds = [
        k for (k,) in read_db(db, "SELECT kind FROM events WHERE campaign_id = ? AND kind = 'resume'", [cid])
    ]
    assert kinds == ["resume", "resume"]
