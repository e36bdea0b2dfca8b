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


@pytest.mark.demo
def test_arith_rest_em_beats_bc(tmp_path):
    status = _demo(tmp_path, "arith")
    assert status["mode"] == "rest-em"
    assert all(s["rule"] == "binary" for s in status["steps"][1:])
    base, final = _check_improvement(status)
    assert final > base, status["final"]


@pytest.mark.demo
def test_toy_mt_rest_beats_bc(tmp_path):
    status = _demo(tmp_path, "toy-mt")
    assert status["mode"] == "rest"
    for g, grow in status["grows"].items():
        taus = [s["tau"] for s in status["steps"] if s["grow"] == int(g)]
        assert taus and taus == sorted(set(taus))  # rising thresholds within a Grow
        assert taus[0] > grow["mean_reward"]  # tau_1 > V, the mean reward of D_g
    base, final = _check_improvement(status)
    assert final > base, status["final"]


def _length_tests(recipe: str, root) -> tuple[dict[str, str], list, list]:
    """Prepare `recipe` (small) and run the default reward-test suite on its validation references.

    Returns ({test: verdict}, the validation examples, the loaded reward).
    """
    from engine.config import load_config
    from engine.data import load_split
    from engine.recipes import prepare
    from engine.rewards import load_reward
    from reward_tests import default_suite, run_suite

    cfg = load_config(prepare(recipe, root, small=True))
    reward = load_reward(cfg.reward)
    val = load_split(cfg.data, "validation")
    pairs = [(e.id, e.source, e.reference, e.reference) for e in val]
    report = run_suite(reward, pairs, default_suite(), seed=0)
    return {r.name: r.verdict for r in report.results}, val, reward


def test_reward_hack_reward_pays_for_length(tmp_path):
    """The planted bias is real: the reward-test suite catches it, and lengthening a reference pays."""
    import random

    from engine.recipes.reward_hack import lengthen

    hacked, val, reward = _length_tests("reward-hack", tmp_path)
    length_tests = ("repeat_output", "repeat_sentence", "append_filler")
    assert all(hacked[t] == "fail" for t in length_tests), hacked
    assert hacked["truncate_half"] == hacked["empty_output"] == "pass", hacked  # it still punishes shortening

    rng = random.Random(1)
    srcs, refs = [e.source for e in val], [e.reference for e in val]
    longer = [lengthen(rng, r) for r in refs]

    def wins(reward) -> int:
        """Sources whose lengthened reference gets more reward than the reference itself."""
        return sum(b < a for b, a in zip(reward.score(srcs, refs, refs), reward.score(srcs, longer, refs)))

    assert wins(reward) >= 0.8 * len(val), (wins(reward), len(val))

    # The honest toy-mt reward, on the very same references, is not fooled by length.
    honest, honest_val, honest_reward = _length_tests("toy-mt", tmp_path)
    assert [e.reference for e in honest_val] == refs
    assert all(honest[t] == "pass" for t in length_tests), honest
    assert wins(honest_reward) <= 0.2 * len(val)
