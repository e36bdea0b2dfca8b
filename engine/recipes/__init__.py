"""Offline demo recipes: each writes its data and a campaign TOML under a folder and returns the TOML path.

Nothing is downloaded: the data are generated from a seed, the policy is trained from scratch by the
bootstrap step, and the toy-mt and reward-hack reward heads are trained on the packaged MiniLM encoder.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from . import arith, reward_hack, toy_mt

RECIPES: dict[str, Callable[..., Path]] = {
    "arith": arith.prepare,
    "toy-mt": toy_mt.prepare,
    "reward-hack": reward_hack.prepare,
}
# Recipes whose demo runs the reward's unit tests before the campaign starts and reports what they flag.
PREFLIGHT_REWARD_TESTS = ("reward-hack",)


def prepare(name: str, root: str | Path, small: bool = False) -> Path:
    """Write recipe `name` under root/name (reusing files already there) and return its campaign.toml."""
    if name not in RECIPES:
        raise KeyError(f"unknown recipe {name!r}; choose one of {sorted(RECIPES)}")
    out = Path(root) / name
    out.mkdir(parents=True, exist_ok=True)
    return RECIPES[name](out, small=small)
