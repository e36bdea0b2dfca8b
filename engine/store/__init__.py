"""The DuckDB store: the only package that speaks SQL. One read-write process owns the file.

`Store` is the core (campaigns, samples, filters, evals) plus one mixin per governance feature, each in
its own module with its own tables.
"""

from __future__ import annotations

from .core import CoreStore, now
from .drift import DriftMixin
from .ratings import RatingsMixin
from .reward_tests import RewardTestsMixin
from .users import UsersMixin
from .views import ViewsMixin


class Store(ViewsMixin, UsersMixin, RewardTestsMixin, RatingsMixin, DriftMixin, CoreStore):
    pass


__all__ = ["Store", "now"]
