"""The DuckDB store: the only package that speaks SQL. One read-write process owns the file.

`Store` is the core (campaigns, samples, filters, evals) plus one mixin per governance feature, each in
its own module with its own tables.
"""

from __future__ import annotations

from pathlib import Path

from .core import CoreStore, now
from .drift import DriftMixin
from .filters import FiltersMixin
from .gates import GatesMixin
from .ratings import RatingsMixin
from .reward_tests import RewardTestsMixin
from .users import UsersMixin
from .views import ViewsMixin


class Store(
    ViewsMixin, UsersMixin, RewardTestsMixin, RatingsMixin, DriftMixin, FiltersMixin, GatesMixin, CoreStore
):
    pass


def open_store(path: str | Path) -> Store:
    """Open the store at `path` read-write, creating it if needed.

    Raises RuntimeError naming the file when another process (a dashboard, a `restgov run`) holds it.
    """
    return Store(path)


__all__ = ["Store", "now", "open_store"]
