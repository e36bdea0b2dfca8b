"""Both demo recipes, end to end on their small budget: ReST improves on the BC baseline.

Runs the real CLI (`restgov demo --small`) in a temp folder, then reads `status --json`.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def _demo(tmp_path, recipe: str) -> dict:
    db = tmp_path / "r.duckdb"
    cmd = [
        sys.executable,
        "-m",
        "engine.cli",
        "demo",
        "--recipe",
        recipe,
        "--small",
        "--db",
        str(db),
        "--data-dir",
        str(tmp_path),
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = subprocess.run(
        [sys.executable, "-m", "engine.cli", "status", "--db", str(db), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    (status,) = json.loads(out.stdout)
    return status


def _check_improvement(status: dict) -> tuple[float, float]:
    assert status["state"] == "DONE"
    assert status["stop_reason"].startswith("max_grow_steps")
    steps = status["steps"]
    assert steps[0]["rule"] == "bc" and steps[0]["val_reward"] is not None
    # Within a Grow, each Improve step keeps its best checkpoint, so validation reward never falls.
    prev = steps[0]["val_reward"]
    for s in steps[1:]:
        assert s["kept"] > 0
        assert s["val_reward"] >= prev - 1e-12, steps
        prev = s["val_reward"]
    final = status["final"]["mean_reward"]
    last = steps[-1]["policy"]
    return final["base"], final[last]


def test_arith_rest_em_beats_bc(tmp_path):
    status = _demo(tmp_path, "arith")
    assert status["mode"] == "rest-em"
    assert all(s["rule"] == "binary" for s in status["steps"][1:])
    base, final = _check_improvement(status)
    assert final > base, status["final"]


def test_toy_mt_rest_beats_bc(tmp_path):
    status = _demo(tmp_path, "toy-mt")
    assert status["mode"] == "rest"
    for g, grow in status["grows"].items():
        taus = [s["tau"] for s in status["steps"] if s["grow"] == int(g)]
        assert taus and taus == sorted(set(taus))  # rising thresholds within a Grow
        assert taus[0] > grow["mean_reward"]  # tau_1 > V, the mean reward of D_g
    base, final = _check_improvement(status)
    assert final > base, status["final"]
