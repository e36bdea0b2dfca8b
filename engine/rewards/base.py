"""The reward contract: RewardModel (a pure, batched function of sources and candidates), RewardError,
content-hash versions, and checked_scores, which refuses to let a non-finite reward through.
"""

from __future__ import annotations

import hashlib
import inspect
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ..device import autocast, pick_device  # noqa: F401  (re-exported for the providers)


class RewardError(ValueError):
    """A reward could not be loaded or returned an unusable value; the message names what and where."""


class RewardModel(ABC):
    """Scores candidates in [0, 1]. Subclasses load in __init__ and keep `score` free of side effects."""

    name: str = "reward"
    version: str = ""  # content hash of the weights or of the function's source
    needs_reference: bool = False
    batch_size: int = 64

    @abstractmethod
    def score(
        self, sources: list[str], candidates: list[str], references: list[str] | None = None
    ) -> list[float]:
        """One float per candidate, in [0, 1]."""

    def describe(self) -> dict[str, Any]:
        """What a run records about the reward it used."""
        return {"name": self.name, "version": self.version, "needs_reference": self.needs_reference}

    def _check_inputs(
        self, sources: Sequence[str], candidates: Sequence[str], references: Sequence[str] | None
    ) -> None:
        # Shape errors are caught here, before a model spends time on a batch that cannot be scored.
        if len(sources) != len(candidates):
            raise RewardError(
                f"reward {self.name!r}: {len(sources)} sources but {len(candidates)} candidates"
            )
        if references is None:
            if self.needs_reference:
                raise RewardError(f"reward {self.name!r} needs references, but none were given")
        elif len(references) != len(candidates):
            raise RewardError(
                f"reward {self.name!r}: {len(references)} references but {len(candidates)} candidates"
            )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} version={self.version}>"


def batches(n: int, size: int) -> Iterator[slice]:
    """Slices covering range(n) in chunks of `size`."""
    for start in range(0, n, max(1, size)):
        yield slice(start, min(n, start + size))


def hash_dir(path: str | Path) -> str:
    """sha256 (16 hex) over the sorted relative paths and bytes of every file under `path`."""
    root = Path(path)
    h = hashlib.sha256()
    files = sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and not any(part in (".git", "__pycache__") for part in p.parts)
    )
    for p in files:
        rel = p.relative_to(root).as_posix()
        h.update(rel.encode() + b"\0")
        with p.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        h.update(b"\0")
    return h.hexdigest()[:16]


def hash_source(*fns: Callable[..., Any] | str) -> str:
    """sha256 (16 hex) of the functions' source (strings as given), so editing the code changes the
    version."""
    h = hashlib.sha256()
    for fn in fns:
        try:
            text = fn if isinstance(fn, str) else inspect.getsource(fn)
        except (OSError, TypeError):
            # Builtins and functions defined in a REPL have no source: their qualified name stands in.
            text = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"
        h.update(text.encode())
    return h.hexdigest()[:16]


def _short(text: Any, n: int = 80) -> str:
    s = str(text)
    return repr(s if len(s) <= n else s[: n - 3] + "...")


def checked_scores(
    reward: RewardModel,
    sources: list[str],
    candidates: list[str],
    references: list[str] | None = None,
    ids: list | None = None,
) -> list[float]:
    """reward.score, verified: one finite number in [0, 1] per candidate, else RewardError naming the
    sample."""
    raw = reward.score(sources, candidates, references)
    try:
        raw = list(raw)
    except TypeError as e:
        raise RewardError(
            f"reward {reward.name!r} returned {type(raw).__name__}, not a list of floats"
        ) from e
    if len(raw) != len(candidates):
        raise RewardError(
            f"reward {reward.name!r} returned {len(raw)} scores for {len(candidates)} candidates"
        )
    out: list[float] = []
    for i, v in enumerate(raw):
        problem = None
        try:
            x = None if isinstance(v, str | bytes) or v is None else float(v)
        except (TypeError, ValueError):
            x = None
        if x is None:
            problem = f"{type(v).__name__} {v!r} (not a number)"
        elif not math.isfinite(x):
            problem = str(x)
        elif not -1e-6 <= x <= 1 + 1e-6:
            # Filters compare rewards to thresholds in [0, 1]: an unnormalised reward would keep all or none.
            problem = f"{x!r} (outside [0, 1])"
        if problem is not None:
            where = f"sample {i}" + (f" (source id {ids[i]!r})" if ids is not None and i < len(ids) else "")
            raise RewardError(
                f"reward {reward.name!r} returned {problem} for {where}: "
                f"source={_short(sources[i])} candidate={_short(candidates[i])}"
            )
        out.append(min(1.0, max(0.0, x)))
    return out
