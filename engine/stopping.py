"""Stopping criteria, checked by the controller before each Grow step.

Each criterion is decided before the campaign starts (config `[stop]`) and returns the reason with the
figures that triggered it, which the controller records as the campaign's stop reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import StopConfig


@dataclass
class Progress:
    next_grow: int  # the Grow step about to start (1-based)
    val_by_grow: list[float]  # validation reward after Grow 0 (BC), 1, 2, ...
    samples_generated: int
    seconds: float  # compute seconds spent in steps so far


def stop_reason(stop: StopConfig, p: Progress) -> str | None:
    """The first criterion that says stop, as a sentence with its numbers; None to go on."""
    if p.next_grow > stop.max_grow_steps:
        return f"max_grow_steps: {stop.max_grow_steps} Grow steps done"
    current = p.val_by_grow[-1] if p.val_by_grow else None
    if stop.target_reward is not None and current is not None and current >= stop.target_reward:
        return f"target_reward: validation reward {current:.4f} >= {stop.target_reward:.4f}"
    k = stop.window
    if stop.min_improvement is not None and len(p.val_by_grow) > k:
        gain = p.val_by_grow[-1] - p.val_by_grow[-1 - k]
        if gain < stop.min_improvement:
            return (
                f"min_improvement: validation reward gained {gain:+.4f} over the last {k} Grow step(s), "
                f"below {stop.min_improvement:.4f}"
            )
    if stop.max_samples is not None and p.samples_generated >= stop.max_samples:
        return f"budget: {p.samples_generated} samples generated >= max_samples {stop.max_samples}"
    if stop.max_wall_seconds is not None and p.seconds >= stop.max_wall_seconds:
        return f"budget: {p.seconds:.0f} s of compute >= max_wall_seconds {stop.max_wall_seconds:.0f}"
    return None
