"""The Improve filter of ReST: which threshold each Improve step of a Grow uses, its learning rate and the
weights it starts from. The keep rules themselves are SQL in engine/store/filters.py.

Rules (`improve.rule`):
- thresholds: F(x, y; tau) = 1[R(x, y) > tau], one Improve step per tau of an increasing list, skipping the
  thresholds at or below the Grow step's mean reward (the paper's tau_1 < tau_2 < ...);
- percentile: per source, keep rewards at or above the source's p-th percentile, one step per p;
- interpolation: per source, tau(x) = gamma * max + (1 - gamma) * mean, one step per gamma;
- quantile: one global quantile of the Grow step's rewards (RAFT-style), one step;
- binary: keep rewards of 1 (ReST-EM with a verifier), one step.
"""

from __future__ import annotations

from .config import CampaignConfig


def plan(cfg: CampaignConfig, grow_mean: float | None) -> list[float | None]:
    """The filter parameter of each Improve step of a Grow step whose mean reward is `grow_mean`."""
    imp = cfg.improve
    if imp.rule == "thresholds":
        v = grow_mean or 0.0
        params: list[float | None] = [t for t in imp.thresholds if t > v]
    elif imp.rule == "percentile":
        params = list(imp.percentiles)
    elif imp.rule == "interpolation":
        params = list(imp.gammas)
    elif imp.rule == "quantile":
        params = [imp.quantile]
    else:
        params = [None]
    return params[: imp.max_improve_steps] if imp.max_improve_steps else params


def init_policy(cfg: CampaignConfig, previous: str) -> str:
    """The checkpoint an Improve step starts from: the base (BC) policy for ReST-EM, else the previous one."""
    return "base" if cfg.improve.init == "restart_from_base" else previous


def learning_rate(cfg: CampaignConfig, improves_before: int) -> float:
    """lr decayed once per Improve step already taken in the campaign (the paper lowers it as tau rises)."""
    return cfg.improve.lr * cfg.improve.lr_decay**improves_before
