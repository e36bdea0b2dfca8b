"""Unit tests *of reward models*: perturb good outputs (repeat, shuffle, truncate, ...) and check that the
reward moves the way it should. `restgov reward-test` runs them; see reward_tests/README.md.
"""

from __future__ import annotations

from .expectations import EXPECTATIONS, RewardTest
from .runner import SuiteReport, run_suite
from .suite import default_suite, load_user_tests, reward_test

__all__ = [
    "EXPECTATIONS",
    "RewardTest",
    "SuiteReport",
    "default_suite",
    "load_user_tests",
    "reward_test",
    "run_suite",
]
