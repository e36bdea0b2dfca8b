"""Run reward-model unit tests: score the reference set once, perturb every pair per test, score all the
perturbed texts in one checked batch, and judge each reward change against the test's expectation.
"""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass, field
from typing import Any

from engine.rewards import RewardModel, checked_scores

from .expectations import MIN_STD, ZERO_STD_UNIT, RewardTest, badness, holds

Pair = tuple[str, str, str, str | None]  # (source_id, source, candidate, reference)
N_WORST = 3


class RewardTestError(RuntimeError):
    """A test's perturbation raised; the message names the test and the source id."""


@dataclass
class TestResult:
    __test__ = False  # not a pytest test class, despite the name

    name: str
    expectation: str
    tol: float  # in std units, after the global scale
    tol_abs: float  # in reward units: tol * std
    n: int  # pairs the perturbation applied to (and changed)
    n_passed: int
    pass_rate: float | None  # None when n == 0
    mean_delta: float | None
    worst_delta: float | None  # the delta that goes furthest against the expectation
    verdict: str  # "pass", "fail", or "skip" (not applicable to any pair)
    worst_examples: list[dict] = field(default_factory=list)
    description: str = ""

    @property
    def passed(self) -> bool | None:
        return None if self.verdict == "skip" else self.verdict == "pass"


@dataclass
class SuiteReport:
    reward_name: str
    reward_version: str
    n_pairs: int
    mean_reward: float  # of the unperturbed candidates
    std_measured: float  # of the unperturbed candidates' rewards (sample std)
    std: float  # the unit of every tolerance: std_measured (ZERO_STD_UNIT if constant), or as given
    results: list[TestResult]
    config: dict[str, Any]  # seed, tol_scale, min_pass_rate, ... as run

    @property
    def failed(self) -> list[str]:
        return [r.name for r in self.results if r.verdict == "fail"]

    @property
    def verdict(self) -> str:
        return "fail" if self.failed else "pass"


def _perturb(test: RewardTest, pairs: list[Pair], seed: int, limit: int | None) -> list[tuple[int, str]]:
    """(pair index, perturbed text) for the pairs the test applies to, deterministic per (seed, test name)."""
    rng = random.Random(f"{seed}:{test.name}")  # seeded by name: adding a test does not change the others
    out: list[tuple[int, str]] = []
    for i, (sid, src, cand, _ref) in enumerate(pairs):
        if limit is not None and len(out) >= limit:
            break
        try:
            new = test.perturb(src, cand, rng)
        except Exception as e:
            raise RewardTestError(
                f"reward test {test.name!r} raised on source id {sid!r}: {type(e).__name__}: {e}"
            ) from e
        if new is None or new == cand:
            continue  # an unchanged text tests nothing
        if not isinstance(new, str):
            raise RewardTestError(
                f"reward test {test.name!r} returned {type(new).__name__} for source id {sid!r}, not str"
            )
        out.append((i, new))
    return out


def run_suite(
    reward: RewardModel,
    pairs: list[Pair],
    tests: list[RewardTest],
    seed: int = 0,
    tol_scale: float = 1.0,
    min_pass_rate: float = 0.9,
    max_examples_per_test: int | None = None,
    std: float | None = None,
) -> SuiteReport:
    """Run `tests` on `pairs` against `reward`; `std` fixes the tolerance unit (default: measured,
    floored)."""
    if not pairs:
        raise ValueError("run_suite: no (source_id, source, candidate, reference) pairs to test on")
    if not 0 <= min_pass_rate <= 1 or not tol_scale >= 0:
        raise ValueError(
            f"run_suite: min_pass_rate={min_pass_rate} must be in [0, 1], tol_scale={tol_scale} >= 0"
        )
    names = [t.name for t in tests]
    if len(set(names)) != len(names):
        raise ValueError(f"run_suite: duplicate test names in {names}")
    ids = [p[0] for p in pairs]
    sources, cands = [p[1] for p in pairs], [p[2] for p in pairs]
    refs = [p[3] for p in pairs]
    references = list(refs) if all(r is not None for r in refs) else None  # type: ignore[arg-type]
    base = checked_scores(reward, sources, cands, references, ids=ids)
    measured = statistics.stdev(base) if len(base) > 1 else 0.0
    unit = float(std) if std is not None else (measured if measured >= MIN_STD else ZERO_STD_UNIT)

    perturbed = {t.name: _perturb(t, pairs, seed, max_examples_per_test) for t in tests}
    flat = [(t.name, i, text) for t in tests for i, text in perturbed[t.name]]
    scores = checked_scores(
        reward,
        [sources[i] for _, i, _ in flat],
        [text for _, _, text in flat],
        None if references is None else [references[i] for _, i, _ in flat],
        ids=[f"{ids[i]} ({name})" for name, i, _ in flat],  # an error names the test as well as the source
    )
    by_test: dict[str, list[tuple[int, str, float]]] = {t.name: [] for t in tests}
    for (name, i, text), s in zip(flat, scores):
        by_test[name].append((i, text, s))

    results = []
    for t in tests:
        tol = t.tol * tol_scale
        tol_abs = tol * unit
        rows = [(i, text, s, s - base[i]) for i, text, s in by_test[t.name]]
        n = len(rows)
        n_passed = sum(holds(t.expect, d, tol_abs) for *_, d in rows)
        rows.sort(key=lambda r: -badness(t.expect, r[3]))
        worst = [
            {
                "source_id": ids[i],
                "source": sources[i],
                "original": cands[i],
                "perturbed": text,
                "reward_original": base[i],
                "reward_perturbed": s,
                "delta": d,
            }
            for i, text, s, d in rows[:N_WORST]
        ]
        rate = n_passed / n if n else None
        results.append(
            TestResult(
                name=t.name,
                expectation=t.expect,
                tol=tol,
                tol_abs=tol_abs,
                n=n,
                n_passed=n_passed,
                pass_rate=rate,
                mean_delta=statistics.fmean(r[3] for r in rows) if n else None,
                worst_delta=rows[0][3] if n else None,
                verdict="skip" if rate is None else ("pass" if rate >= min_pass_rate else "fail"),
                worst_examples=worst,
                description=t.description,
            )
        )
    config = {
        "seed": seed,
        "tol_scale": tol_scale,
        "min_pass_rate": min_pass_rate,
        "max_examples_per_test": max_examples_per_test,
        "std_given": std,
        "tests": names,
    }
    return SuiteReport(
        reward.name, reward.version, len(pairs), statistics.fmean(base), measured, unit, results, config
    )


def run_for_reward(reward: RewardModel, reward_cfg: Any, pairs: list[Pair], settings: dict) -> dict:
    """The worker's entry point (restgov's `reward_tests` step): build the reward's suite, run it, and
    return the report as plain data with the settings it ran under, so a gate can tell whose run it is.

    `settings`: skip, only (test names), tol_scale, min_pass_rate, seed, max_examples.
    """
    from .report import to_dict
    from .suite import for_reward

    skip, only = list(settings.get("skip", ())), list(settings.get("only", ()))
    tests = for_reward(reward_cfg, only=only, skip=skip, strict=False)
    report = run_suite(
        reward,
        pairs,
        tests,
        seed=int(settings.get("seed", 0)),
        tol_scale=float(settings.get("tol_scale", 1.0)),
        min_pass_rate=float(settings.get("min_pass_rate", 0.9)),
        max_examples_per_test=settings.get("max_examples"),
    )
    report.config |= {"skip": sorted(skip), "only": sorted(only)}
    return to_dict(report)
