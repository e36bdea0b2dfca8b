"""Governance of a running campaign: Improve steps whose filter keeps nothing, stopping criteria changed while
the campaign runs, and resuming a campaign the operator stopped. Tiny real campaigns (scratch policies of 1-2
layers, 120 sources) through the controller; split from tests/test_governance.py so that the two files' slow
campaigns run side by side.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from conftest import edit_toml as _with
from conftest import restgov, status_json, write_tiny_campaign

from engine.campaign import Controller, new_campaign, update_criteria
from engine.config import load_config
from engine.state import State
from engine.store import Store

# ---------------------------------------------------------------- 6. an Improve whose filter keeps nothing


def _empty_filter_campaign(tmp_path: Path, on_empty: str) -> tuple[Store, str]:
    """ReST with one threshold, 0.99, on exact match, no originals mixed in: a barely trained policy gets
    nothing exactly right, so the filter keeps nothing."""
    cfg = write_tiny_campaign(
        tmp_path / "c",
        mode="rest",
        improve=f'rule = "thresholds"\nthresholds = [0.99]\non_empty = "{on_empty}"',
        grows=1,
    )
    _with(
        cfg,
        {
            '[reward]\nkind = "numeric"': '[reward]\nkind = "exact_match"',
            "original_mix = 1.0": "original_mix = 0.0",
        },
    )
    store = Store(tmp_path / "db" / "r.duckdb")
    return store, new_campaign(store, load_config(cfg), tmp_path / "db" / "runs")


@pytest.mark.slow
def test_improve_with_empty_filter_is_skipped_or_ends_the_campaign(tmp_path, one_torch_thread):
    store, cid = _empty_filter_campaign(tmp_path / "skip", "skip")
    try:
        assert Controller(store).run(cid) == State.DONE
        row = store.campaign(cid)
        assert row["stop_reason"].startswith("max_grow_steps")
        assert store.grow_stats(cid, 1)["max"] == 0.0  # nothing exactly right
        (flt,) = (
            store.cursor()
            .execute("SELECT param, kept, n_total FROM filters WHERE campaign_id = ?", [cid])
            .fetchall()
        )
        assert flt == (0.99, 0, 240)
        done = store.done_steps(cid)
        assert list(done) == ["bootstrap", "g1-grow", "g1-gates", "g1-i1", "final"]
        assert "kept no samples of grow 1" in done["g1-i1"]["skipped"]
        assert done["g1-i1"]["val_reward"] is None
        assert [c["policy"] for c in store.checkpoints(cid)] == ["base"]
        assert done["final"]["final_policy"] == "base"
    finally:
        store.close()

    store, cid = _empty_filter_campaign(tmp_path / "stop", "stop")
    try:
        assert Controller(store).run(cid) == State.DONE
        reason = store.campaign(cid)["stop_reason"]
        assert reason == "g1-i1: the filter (thresholds, 0.99) kept no samples of grow 1"
        done = store.done_steps(cid)
        assert list(done) == ["bootstrap", "g1-grow", "g1-gates", "g1-i1", "final"]
        assert done["g1-i1"] == {"skipped": reason, "ended": True}  # recorded with why it ended the campaign
        assert done["final"]["stop_reason"] == reason
        assert not [e for e in store.events(cid, ["state"]) if e["state"] == "FAILED"]
    finally:
        store.close()


# ---------------------------------------------------------------- 7. criteria changed while a campaign runs


def _race(*fns) -> list[BaseException]:
    """Run the functions in threads at once; the exceptions they raised."""
    errors: list[BaseException] = []
    start = threading.Barrier(len(fns))

    def wrap(fn):
        def go():
            try:
                start.wait()
                fn()
            except BaseException as e:  # noqa: BLE001 (reported by the test)
                errors.append(e)

        return go

    threads = [threading.Thread(target=wrap(f)) for f in fns]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not any(t.is_alive() for t in threads)
    return errors


@pytest.mark.slow
def test_criteria_changes_racing_a_run_never_fail_it(tmp_path, one_torch_thread):
    cfg = load_config(write_tiny_campaign(tmp_path / "c", grows=1))
    store = Store(tmp_path / "db" / "r.duckdb")
    runs = tmp_path / "db" / "runs"
    n = 25
    try:
        # 19 times: state transitions (as the controller makes them) against criteria changes, on one row.
        for rep in range(19):
            cid = new_campaign(store, cfg, runs)
            seq = [State.grow(1), State.gates(1), State.improve(1, 1)]

            def states(cid=cid, seq=seq):
                for k in range(n):
                    store.set_state(cid, seq[k % 3], f"race {k}")

            def criteria(cid=cid):
                for k in range(n):
                    update_criteria(
                        store,
                        cid,
                        {"stop.max_grow_steps": 1 + k % 3, "gates.audit_tolerance": 0.01 * (k % 4)},
                        "bob",
                    )

            assert _race(states, criteria) == [], f"repetition {rep}"
            row = store.campaign(cid)
            assert row["state"] == seq[(n - 1) % 3]
            assert row["config"]["stop"]["max_grow_steps"] == 1 + (n - 1) % 3
            assert row["config"]["gates"]["audit_tolerance"] == 0.01 * ((n - 1) % 4)
            assert len(store.events(cid, ["criteria"])) == n
            assert len(store.events(cid, ["state"])) == n + 1  # CREATED, then each transition

        # Once with a real campaign: the controller runs it while criteria keep changing.
        cid = new_campaign(store, cfg, runs)
        finished = threading.Event()
        changes = []
        outcome = []

        def run():
            try:
                outcome.append(Controller(store).run(cid))
            finally:
                finished.set()

        def criteria():
            k = 0
            while not finished.is_set():
                change = {
                    "stop.max_grow_steps": 1,
                    "stop.window": 1 + k % 2,
                    "gates.audit_tolerance": 0.02 + 0.01 * (k % 3),
                }
                update_criteria(store, cid, change, "bob")
                changes.append(change)
                k += 1
                finished.wait(0.05)

        assert _race(run, criteria) == []
        assert outcome == [State.DONE]
        assert len(changes) > 10
        assert len(store.events(cid, ["criteria"])) == len(changes)
        states = [e["state"] for e in store.events(cid, ["state"])]
        assert "FAILED" not in states and states[-1] == "DONE"
        assert store.campaign(cid)["config"]["stop"]["window"] == changes[-1]["stop.window"]
    finally:
        store.close()


# ---------------------------------------------------------------- 9. a stop is final until reopened


@pytest.mark.slow
def test_resume_of_a_stopped_campaign_needs_reopen(tmp_path, one_torch_thread):
    cfg = load_config(write_tiny_campaign(tmp_path / "c", grows=0))  # BC alone: the paper's baseline
    db = tmp_path / "db" / "r.duckdb"
    store = Store(db)
    try:
        cid = new_campaign(store, cfg, tmp_path / "db" / "runs")
        ctl = Controller(store, on_event=lambda key, ev: ctl.request_stop(cid, actor="carol"))
        assert ctl.run(cid) == State.STOPPED  # stopped by the operator during bootstrap
        row = store.campaign(cid)
        assert (row["state"], row["stop_reason"]) == ("STOPPED", "stopped by operator")
        assert "final" not in store.done_steps(cid)
    finally:
        store.close()
    refused = restgov("resume", cid, "--db", db)
    assert refused.returncode != 0
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "--reopen" in lines[0] and cid in lines[0], refused.stderr
    assert status_json(db, cid)["state"] == "STOPPED"
    reopened = restgov("resume", cid, "--db", db, "--reopen", timeout=300)
    assert reopened.returncode == 0, reopened.stdout[-3000:] + reopened.stderr[-3000:]
    st = status_json(db, cid)
    assert st["state"] == "DONE" and st["stop_reason"].startswith("max_grow_steps")
    assert [s["policy"] for s in st["steps"]] == ["base"]
