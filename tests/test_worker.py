"""The worker's file contract, driven directly on a tiny reward-tests unit: task.json in; events.jsonl (start,
progress, done) and result.json out; a finished step is not run again; a failing unit is a WorkerFailed that
names the error. No store and no campaign: only the files a controller would write.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import restgov_env

from engine.config import CampaignConfig, RewardConfig, config_to_dict
from engine.rewards import ChrF
from engine.steps.reward_tests import write_pairs
from engine.worker import WorkerFailed, spawn

ROOT = Path(__file__).resolve().parent.parent
PAIRS = [
    (str(i), src, ref, ref)
    for i, (src, ref) in enumerate(
        [
            ("der Hund schläft", "the dog sleeps in the garden."),
            ("die Katze trinkt Milch", "the cat drinks cold milk."),
            ("ich lese ein Buch", "I read a long book today."),
            ("wir gehen nach Hause", "we walk home after work."),
            ("er kauft drei Äpfel", "he buys three red apples."),
            ("sie singt ein Lied", "she sings a quiet song."),
        ]
    )
]
ONLY = ["repeat_output", "empty_output"]  # in the default suite's order
RAISING_REWARD = """
def score(sources, candidates, references):
    raise RuntimeError("the scoring service is unreachable")
"""


def _task(step_dir: Path, reward: RewardConfig) -> dict:
    """What the controller writes for a reward-tests unit (engine/steps/reward_tests.py)."""
    return {
        "kind": "reward_tests",
        "step_key": step_dir.name,
        "config": config_to_dict(CampaignConfig(reward=reward)),
        "grow": None,
        "improve": None,
        "inputs": {},
        "pairs_path": write_pairs(step_dir / "pairs.parquet", PAIRS),
        "settings": {"skip": [], "only": ONLY, "tol_scale": 1.0, "min_pass_rate": 0.9, "seed": 0},
        "report_extra": {"campaign": "c-worker"},
        "actor": "tester",
    }


def _events(step_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (step_dir / "events.jsonl").read_text().splitlines()]


def test_python_m_engine_worker_runs_a_task_and_spawn_returns_its_result_without_rerunning(tmp_path):
    step_dir = tmp_path / "steps" / "reward-tests-w1"
    task = _task(step_dir, RewardConfig(kind="chrf"))
    (step_dir / "task.json").write_text(json.dumps(task))
    proc = subprocess.run(
        [sys.executable, "-m", "engine.worker", str(step_dir)],
        cwd=ROOT,
        env=restgov_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr

    result = json.loads((step_dir / "result.json").read_text())
    report = result["report"]
    assert report["reward_name"] == "chrf" and report["reward_version"] == ChrF().version
    assert report["n_pairs"] == len(PAIRS) and [t["name"] for t in report["tests"]] == ONLY
    assert report["config"]["campaign"] == "c-worker" and report["config"]["only"] == sorted(ONLY)
    assert result["seconds"] > 0

    events = _events(step_dir)
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done" and set(kinds[1:-1]) == {"progress"}, kinds
    assert events[0]["step"] == "reward-tests-w1" and isinstance(events[0]["pid"], int)
    assert [(e["done"], e["total"]) for e in events if e["kind"] == "progress"] == [(0, 1), (1, 1)]
    assert not list(step_dir.rglob("*.tmp"))  # every file renamed into place when complete

    # The controller's side finds the finished step and returns its result; nothing runs again.
    before = (step_dir / "events.jsonl").read_text(), (step_dir / "result.json").stat().st_mtime_ns
    seen: list[dict] = []
    again = spawn(step_dir, task | {"kind": "no such unit"}, on_event=seen.append)
    assert again == result and seen == []
    assert ((step_dir / "events.jsonl").read_text(), (step_dir / "result.json").stat().st_mtime_ns) == before


def test_spawn_runs_the_worker_and_passes_on_its_events(tmp_path):
    step_dir = tmp_path / "steps" / "reward-tests-w2"
    seen: list[dict] = []
    result = spawn(
        step_dir,
        _task(step_dir, RewardConfig(kind="exact_match")),
        on_event=seen.append,
        keep=("pairs.parquet",),
    )
    assert result["report"]["reward_name"] == "exact_match" and result["report"]["n_pairs"] == len(PAIRS)
    assert [e["kind"] for e in seen] == [e["kind"] for e in _events(step_dir)]
    assert seen[0]["kind"] == "start" and seen[-1]["kind"] == "done"


def test_a_failing_unit_is_worker_failed_naming_the_error(tmp_path, monkeypatch):
    code = tmp_path / "code"
    code.mkdir()
    (code / "raising_reward.py").write_text(RAISING_REWARD)
    monkeypatch.setenv("PYTHONPATH", str(code))  # the worker imports the callable reward
    step_dir = tmp_path / "steps" / "reward-tests-w3"
    task = _task(step_dir, RewardConfig(kind="callable", function="raising_reward:score"))
    with pytest.raises(WorkerFailed, match="the scoring service is unreachable") as e:
        spawn(step_dir, task, keep=("pairs.parquet",))
    assert "reward-tests-w3 failed" in str(e.value) and "RuntimeError" in str(e.value)
    assert not (step_dir / "result.json").exists()
    events = _events(step_dir)
    assert events[0]["kind"] == "start" and events[-1]["kind"] == "error"
    assert "raising_reward.py" in events[-1]["traceback"]
