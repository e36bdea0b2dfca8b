"""A reward given as Python code: "package.module:function", called on batches of sources and candidates.
The version is the hash of the function's source, so an edited reward is a different reward.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

from .base import RewardError, RewardModel, batches, hash_source


def resolve_function(spec: str) -> Callable[..., Any]:
    """Import "module:attr[.attr]" and return the callable; RewardError naming the spec otherwise."""
    module_name, sep, attr_path = str(spec).partition(":")
    if not sep or not module_name or not attr_path:
        raise RewardError(f"reward function {spec!r}: expected 'module:function'")
    try:
        obj: Any = importlib.import_module(module_name)
    except (
        Exception
    ) as e:  # a reward module may fail with anything at import time; report it as the spec's fault
        raise RewardError(f"reward function {spec!r}: cannot import module {module_name!r}: {e}") from e
    for part in attr_path.split("."):
        if not hasattr(obj, part):
            raise RewardError(f"reward function {spec!r}: {module_name!r} has no attribute {attr_path!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise RewardError(f"reward function {spec!r}: {type(obj).__name__} object is not callable")
    return obj


def _reference_arity(fn: Callable[..., Any]) -> tuple[bool, bool]:
    """(passes_references, needs_references) from the signature: fn(sources, candidates[, references])."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False, False  # no signature (some builtins): call it the plain two-argument way
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return True, False
    if len(positional) >= 3:
        return True, positional[2].default is inspect.Parameter.empty
    return False, False


class CallableReward(RewardModel):
    """Wraps fn(sources, candidates[, references]) -> list of floats in [0, 1]."""

    def __init__(self, spec: str, batch_size: int = 64):
        self.spec = spec
        self.fn = resolve_function(spec)
        self.name = f"callable:{spec}"
        self.batch_size = batch_size
        self.version = hash_source(self.fn)
        self.passes_references, self.needs_reference = _reference_arity(self.fn)

    def score(
        self, sources: list[str], candidates: list[str], references: list[str] | None = None
    ) -> list[float]:
        self._check_inputs(sources, candidates, references)
        out: list[Any] = []
        for sl in batches(len(candidates), self.batch_size):
            args: tuple = (list(sources[sl]), list(candidates[sl]))
            if self.passes_references:
                args += (None if references is None else list(references[sl]),)
            got = self.fn(*args)
            try:
                got = list(got)
            except TypeError as e:
                raise RewardError(f"reward {self.name!r} returned {type(got).__name__}, not a list") from e
            if len(got) != len(args[1]):
                raise RewardError(
                    f"reward {self.name!r} returned {len(got)} scores for a batch of {len(args[1])}"
                )
            out.extend(got)
        # Values are passed through as given: checked_scores is the one place that judges them.
        return [v if isinstance(v, float) else _as_float(v) for v in out]


def _as_float(v: Any) -> Any:
    if v is None or isinstance(v, str | bytes):
        return v  # a string that looks like a number is still a bug in the reward
    try:
        return float(v)
    except (TypeError, ValueError):
        return v  # left for checked_scores to report with the sample's index and id
