"""Stopping criteria: each one fires with its figures in the reason, and only when it should."""

from __future__ import annotations

from engine.config import StopConfig
from engine.stopping import Progress, stop_reason


def _p(next_grow=2, vals=(0.5, 0.6), samples=100, seconds=10.0) -> Progress:
    return Progress(next_grow, list(vals), samples, seconds)


def test_max_grow_steps():
    assert stop_reason(StopConfig(max_grow_steps=2), _p(next_grow=2)) is None
    assert stop_reason(StopConfig(max_grow_steps=2), _p(next_grow=3)).startswith("max_grow_steps: 2")


def test_target_reward_uses_latest_validation_reward():
    assert stop_reason(StopConfig(target_reward=0.6), _p(vals=(0.5, 0.6))).startswith(
        "target_reward: validation reward 0.6000"
    )
    assert stop_reason(StopConfig(target_reward=0.61), _p(vals=(0.5, 0.6))) is None


def test_min_improvement_over_window():
    cfg = StopConfig(max_grow_steps=9, min_improvement=0.05, window=1)
    assert stop_reason(cfg, _p(vals=(0.5, 0.6))) is None  # gained 0.1
    reason = stop_reason(cfg, _p(vals=(0.5, 0.6, 0.62)))
    assert reason.startswith("min_improvement") and "+0.0200" in reason
    # Over two steps the same run gained 0.12: no stop; with too little history there is no verdict yet.
    assert (
        stop_reason(StopConfig(max_grow_steps=9, min_improvement=0.05, window=2), _p(vals=(0.5, 0.6, 0.62)))
        is None
    )
    assert (
        stop_reason(StopConfig(max_grow_steps=9, min_improvement=0.05, window=3), _p(vals=(0.5, 0.6, 0.62)))
        is None
    )


def test_budgets():
    assert stop_reason(StopConfig(max_samples=100), _p(samples=100)).startswith("budget: 100 samples")
    assert stop_reason(StopConfig(max_samples=101), _p(samples=100)) is None
    assert stop_reason(StopConfig(max_wall_seconds=5), _p(seconds=10.0)).startswith("budget: 10 s")
