"""The default reward-model test suite, the @reward_test decorator, and discovery of user tests from a
module name or a .py file (decorated functions, or a module-level TESTS list).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from . import perturbations as P
from .expectations import RewardTest

# Tolerances are in std units of the reward on the reference set. Direction tests on degenerate outputs
# (empty, the source copied) ask for a full std of loss; a one-word meaning change asks for only a little.
DEFAULT_TESTS: list[RewardTest] = [
    RewardTest("repeat_output", P.repeat_output, "not_rise", 0.1),
    RewardTest("repeat_sentence", P.repeat_sentence, "not_rise", 0.1),
    RewardTest("shuffle_words", P.shuffle_words, "fall", 0.25),
    RewardTest("permute_sentences", P.permute_sentences, "not_rise", 0.1),
    RewardTest("truncate_half", P.truncate_half, "fall", 0.5),
    RewardTest("append_filler", P.append_filler, "not_rise", 0.1),
    RewardTest("empty_output", P.empty_output, "fall", 1.0),
    RewardTest("copy_source", P.copy_source, "fall", 1.0),
    RewardTest("typo", P.typo, "invariant", 0.5),
    RewardTest("punctuation", P.punctuation, "invariant", 0.5),
    RewardTest("swap_number_or_name", P.swap_number_or_name, "fall", 0.1),
]


class TestDiscoveryError(ValueError):
    """User tests could not be imported or are malformed; the message names the module and the test."""

    __test__ = False  # not a pytest test class, despite the name


def default_suite() -> list[RewardTest]:
    return list(DEFAULT_TESTS)


def reward_test(
    fn: Callable | None = None, *, expect: str = "not_rise", tol: float = 0.25, name: str | None = None
) -> Callable:
    """Mark `fn(source, candidate, rng) -> str | None` as a reward test; usable bare or with arguments.

    >>> @reward_test(expect="fall", tol=0.5)
    ... def drop_last_word(source, candidate, rng):
    ...     words = candidate.split()
    ...     return " ".join(words[:-1]) if len(words) > 1 else None
    """

    def mark(f: Callable) -> Callable:
        # The function stays callable as written; the test rides along as an attribute.
        f.reward_test = RewardTest(name or f.__name__, f, expect, tol)  # type: ignore[attr-defined]
        return f

    return mark(fn) if fn is not None else mark


def _import(spec: str):
    path = Path(spec)
    if spec.endswith(".py") or path.is_file():
        if not path.is_file():
            raise TestDiscoveryError(f"user tests {spec!r}: no such file")
        # A name unique to the file, so two test files called tests.py do not replace each other.
        mod_name = (
            f"_reward_tests_user_{path.stem}_{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:8]}"
        )
        loader_spec = importlib.util.spec_from_file_location(mod_name, path)
        if loader_spec is None or loader_spec.loader is None:
            raise TestDiscoveryError(f"user tests {spec!r}: cannot load as a Python file")
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[mod_name] = module  # dataclasses and pickling look the module up by name
        try:
            loader_spec.loader.exec_module(module)
        except Exception as e:
            sys.modules.pop(mod_name, None)
            raise TestDiscoveryError(f"user tests {spec!r}: import failed: {type(e).__name__}: {e}") from e
        return module
    try:
        return importlib.import_module(spec)
    except Exception as e:  # a user module may fail with anything at import time
        raise TestDiscoveryError(f"user tests {spec!r}: cannot import module: {type(e).__name__}: {e}") from e


def load_user_tests(spec: str) -> list[RewardTest]:
    """Tests of a module ("pkg.mod") or a file ("path/to/tests.py"), in definition order, TESTS last."""
    module = _import(spec)
    found: list[RewardTest] = [
        obj.reward_test
        for obj in vars(module).values()
        if isinstance(getattr(obj, "reward_test", None), RewardTest)
    ]
    listed = getattr(module, "TESTS", [])
    for i, t in enumerate(listed if isinstance(listed, list | tuple) else [listed]):
        if isinstance(getattr(t, "reward_test", None), RewardTest):
            t = t.reward_test
        if not isinstance(t, RewardTest):
            raise TestDiscoveryError(
                f"user tests {spec!r}: TESTS[{i}] is {type(t).__name__}, not a RewardTest"
            )
        if t not in found:
            found.append(t)
    names = [t.name for t in found]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise TestDiscoveryError(f"user tests {spec!r}: duplicate test names {dup}")
    if not found:
        raise TestDiscoveryError(f"user tests {spec!r}: no @reward_test functions and no TESTS list")
    return found


def merge(base: Iterable[RewardTest], extra: Iterable[RewardTest]) -> list[RewardTest]:
    """base then extra; an extra test with a base test's name replaces it in place (to retune a default)."""
    out = {t.name: t for t in base}
    for t in extra:
        out[t.name] = t
    return list(out.values())


def select(tests: list[RewardTest], only: Iterable[str] = (), skip: Iterable[str] = ()) -> list[RewardTest]:
    """The tests named in `only` (all if empty) minus those in `skip`; unknown names are an error."""
    only, skip = list(only), list(skip)
    known = {t.name for t in tests}
    unknown = sorted(set(only + skip) - known)
    if unknown:
        raise TestDiscoveryError(f"unknown reward tests {unknown}; known: {sorted(known)}")
    return [t for t in tests if (not only or t.name in only) and t.name not in skip]


def for_reward(
    reward_cfg,
    extra: Iterable[str] = (),
    only: Iterable[str] = (),
    skip: Iterable[str] = (),
    strict: bool = True,
) -> list[RewardTest]:
    """The suite a reward is tested with: the default tests, then the user tests its config names
    (`[reward] tests`, a module or .py path, or a list of them), then `extra` specs; then `only` / `skip`.

    With `strict`, an unknown name in `only` or `skip` is an error (a typo on the command line); otherwise
    names the suite does not have are ignored (a campaign's skip list outliving a test it names).
    """
    specs = getattr(reward_cfg, "tests", None) or []
    tests = default_suite()
    for spec in [*([specs] if isinstance(specs, str) else specs), *extra]:
        tests = merge(tests, load_user_tests(spec))
    if not strict:
        names = {t.name for t in tests}
        only, skip = [n for n in only if n in names], [n for n in skip if n in names]
    return select(tests, only, skip)
