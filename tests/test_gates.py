"""Gates and criteria on real tiny campaigns: a failing gate pauses a campaign with its figures recorded,
a criteria change is logged with who made it, and resume goes on once the gate is lifted or overridden.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from conftest import campaign_ids, restgov, status_json, write_tiny_campaign

from engine.campaign import update_criteria
from engine.config import ConfigError
from engine.store import Store

pytestmark = pytest.mark.slow

LENGTH_REWARD = """
def score(sources, candidates, references):
    # Rewards length: repeating the output or appending filler raises it (a reward hacker's dream).
    return [min(1.0, len(c) / 60.0) for c in candidates]
"""


def _events(db: Path, cid: str, kind: str) -> list[tuple]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(
            "SELECT actor, message, payload FROM events WHERE campaign_id = ? AND kind = ? ORDER BY id",
            [cid, kind],
        ).fetchall()


def _with_length_reward(tmp_path: Path) -> Path:
    cfg = write_tiny_campaign(
        tmp_path / "c", mode="rest", improve='rule = "percentile"\npercentiles = [50.0]', grows=1
    )
    (cfg.parent / "length_reward.py").write_text(LENGTH_REWARD)
    text = cfg.read_text().replace(
        '[reward]\nkind = "numeric"', '[reward]\nkind = "callable"\nfunction = "length_reward:score"'
    )
    cfg.write_text(text + '\n[gates]\nreward_tests = true\nreward_tests_skip = ["typo", "punctuation"]\n')
    return cfg


def test_failing_reward_tests_gate_pauses_then_override_resumes(tmp_path, monkeypatch):
    cfg = _with_length_reward(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(cfg.parent))  # the worker imports the callable reward
    db = tmp_path / "db" / "r.duckdb"
    run = restgov("run", cfg, "--db", db, timeout=300)
    assert run.returncode == 1, run.stdout + run.stderr
    (cid,) = campaign_ids(db)
    st = status_json(db, cid)
    assert st["state"] == "PAUSED"
    assert "gate reward_tests" in st["stop_reason"] and "repeat_output" in st["stop_reason"]
    (gate,) = _events(db, cid, "gate")
    assert "failed before grow 1" in gate[1] and "append_filler" in gate[2]
    with duckdb.connect(str(db), read_only=True) as con:
        (verdict,) = con.execute("SELECT verdict FROM reward_test_runs").fetchone()
        assert verdict == "fail"
    # Resuming without a change pauses again at the same gate (the stored run is reused, not rerun).
    assert restgov("resume", cid, "--db", db, timeout=300).returncode == 1
    assert len(_events(db, cid, "gate")) == 2
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM reward_test_runs").fetchone()[0] == 1
    # An operator overrides the gate once, by name: the campaign runs to the end.
    done = restgov(
        "resume", cid, "--db", db, "--override-gate", "reward_tests", "--actor", "alice", timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert status_json(db, cid)["state"] == "DONE"
    assert any(actor == "alice" and "overridden" in msg for actor, msg, _ in _events(db, cid, "gate"))


def test_criteria_change_is_validated_and_logged(tmp_path):
    cfg = write_tiny_campaign(tmp_path / "c", grows=1)
    db = tmp_path / "db" / "r.duckdb"
    assert restgov("run", cfg, "--db", db, timeout=300).returncode == 0
    (cid,) = campaign_ids(db)
    bad = restgov("criteria", cid, "--db", db, "--set", "stop.max_grow_steps=-2")
    assert bad.returncode != 0 and "stop.max_grow_steps" in bad.stderr
    bad = restgov("criteria", cid, "--db", db, "--set", "grow.temperature=2")
    assert bad.returncode != 0 and "only stop.* and gates.*" in bad.stderr
    ok = restgov(
        "criteria",
        cid,
        "--db",
        db,
        "--set",
        "stop.max_grow_steps=2",
        "--set",
        "gates.drift=true",
        "--actor",
        "bob",
    )
    assert ok.returncode == 0, ok.stderr
    (ev,) = _events(db, cid, "criteria")
    assert ev[0] == "bob" and "stop.max_grow_steps: 1 -> 2" in ev[1]
    store = Store(db)
    try:
        assert store.campaign(cid)["config"]["stop"]["max_grow_steps"] == 2
        with pytest.raises(ConfigError):
            update_criteria(store, cid, {"gates.action": "explode"}, "bob")
    finally:
        store.close()
