"""The DuckDB store: the only package that speaks SQL. One read-write process owns the file.

`Store` is the core (campaigns, samples, filters, evals) plus one mixin per governance feature, each in
its own module with its own tables.
"""

from __future__ import annotations

from pathlib import Path

from .core import CoreStore, StoreBusy, StoreDamaged, StoreError, StoreMissing, now
from .drift import DriftMixin
from .filters import FiltersMixin
from .gates import GatesMixin
from .ratings import RatingsMixin, SubmitOutcome
from .reward_tests import RewardTestsMixin
from .users import UsersMixin
from .views import ViewsMixin


class Store(
    ViewsMixin, UsersMixin, RewardTestsMixin, RatingsMixin, DriftMixin, FiltersMixin, GatesMixin, CoreStore
):
    pass


def open_store(path: str | Path, create: bool = True) -> Store:
    """Open the store at `path` read-write; with `create`, make its folder and file if missing.

    Raises (all StoreError, a RuntimeError, with one line naming the file): StoreMissing when the file or its
    folder does not exist and `create` is off, StoreBusy when another process (a dashboard, a `restgov run`)
    holds it, StoreDamaged when it is not a readable DuckDB database.
    """
    return Store(path, create=create)


__all__ = [
    "Store",
    "StoreBusy",
    "StoreDamaged",
    "StoreError",
    "StoreMissing",
    "SubmitOutcome",
    "now",
    "open_store",
]
