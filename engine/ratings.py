"""Statistics of human side-by-side ratings: the paper's "human eval diff" with a bootstrap interval,
Krippendorff's alpha (interval metric) between annotators, and reward-versus-human rank correlation per Grow
step; plus a simulated annotator for tests and demos.

Every statistic reads a rating by policy, never by position: which policy is stored as side a is drawn per
task and the display order per annotator (engine/store/ratings.py), so a rating's `score_a`/`score_b` are
mapped onto (baseline, other) through the task's `policy_a`/`policy_b`, whatever the side and order shown.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable

import numpy as np
from scipy import stats as sps

RELIABLE, TENTATIVE = 0.8, 0.667  # Krippendorff's own cut-offs for drawing conclusions
SIMULATED_ANNOTATOR = "simulated-oracle"


def _by_task(ratings: list[dict]) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = defaultdict(list)
    for r in ratings:
        out[r["task_id"]].append(r)
    return out


def _recorded_baseline(ratings: list[dict], pair: frozenset) -> str:
    """The baseline the tasks were created against (Store.ratings' `baseline`; side a where none is given).

    Should the tasks of one pair name different baselines, the one most ratings name wins (ties: by name).
    """
    votes = Counter(r.get("baseline") or r["policy_a"] for r in ratings)
    named = sorted((p for p in votes if p in pair), key=lambda p: (-votes[p], p))
    return named[0] if named else sorted(pair)[0]


def _oriented(r: dict, base: str) -> tuple[int, int]:
    """(baseline's score, other's score) of one rating, from the stored sides."""
    return (r["score_a"], r["score_b"]) if r["policy_a"] == base else (r["score_b"], r["score_a"])


def _n_simulated(ratings: list[dict]) -> int:
    return sum(1 for r in ratings if r.get("simulated"))


def human_eval_diff(
    ratings: list[dict],
    baseline: str | None = None,
    confidence: float = 0.95,
    n_resamples: int = 9999,
    seed: int = 0,
) -> dict:
    """Mean score per policy and diff = other policy minus baseline, with a bootstrap CI over tasks.

    `ratings` are rows of `Store.ratings(cid)` for one policy pair, in any mix of stored sides and display
    orders. `baseline` is a policy name of the pair; None takes the baseline the tasks recorded; "a" / "b"
    (the old side names, from when side a was always the baseline) mean the recorded baseline / the other one.
    Each task counts once (its annotators' mean), so a task with more ratings does not weigh more; tasks,
    not ratings, are resampled because ratings of one task are not independent.
    """
    pairs = {frozenset((r["policy_a"], r["policy_b"])) for r in ratings}
    if len(pairs) != 1:
        raise ValueError(
            f"human_eval_diff needs ratings of exactly one policy pair, got {sorted(map(sorted, pairs))}; "
            "use human_eval_table for several"
        )
    (pair,) = pairs
    if baseline in pair:
        base = baseline
    elif baseline in (None, "a", "b"):
        base = _recorded_baseline(ratings, pair)
        if baseline == "b":
            (base,) = pair - {base}
    else:
        raise ValueError(f"baseline {baseline!r} is neither of the pair {sorted(pair)} (nor None, 'a', 'b')")
    (other,) = pair - {base}
    tasks = _by_task(ratings)
    per_task = [np.array([_oriented(r, base) for r in rs], dtype=float).mean(0) for rs in tasks.values()]
    mbase = np.array([m[0] for m in per_task])
    mother = np.array([m[1] for m in per_task])
    d = mother - mbase  # other minus baseline, per task
    per_rating = np.array([o - b for b, o in (_oriented(r, base) for r in ratings)])
    lo = hi = float("nan")
    if len(d) >= 2 and np.ptp(d) == 0:
        lo = hi = float(d[0])  # every resample has the same mean; scipy would warn about a degenerate sample
    elif len(d) >= 2:
        # Percentile interval: BCa's jackknife misbehaves on the heavily tied integer scores of small batches.
        res = sps.bootstrap(
            (d,),
            np.mean,
            n_resamples=n_resamples,
            confidence_level=confidence,
            method="percentile",
            rng=np.random.default_rng(seed),
        )
        lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    diff = float(d.mean()) if len(d) else float("nan")
    verdict = other if lo > 0 else base if hi < 0 else "no clear preference"
    return {
        "baseline": base,
        "other": other,
        "n_tasks": len(d),
        "n_ratings": len(ratings),
        "n_simulated": _n_simulated(ratings),
        "mean": {
            base: float(mbase.mean()) if len(mbase) else float("nan"),
            other: float(mother.mean()) if len(mother) else float("nan"),
        },
        "diff": diff,
        "ci_low": lo,
        "ci_high": hi,
        "confidence": confidence,
        "preferred": verdict,
        # The preference each rating implies (the paper's protocol: a preference follows from the scores).
        "win": float(np.mean(per_rating > 0)) if len(ratings) else float("nan"),
        "tie": float(np.mean(per_rating == 0)) if len(ratings) else float("nan"),
        "loss": float(np.mean(per_rating < 0)) if len(ratings) else float("nan"),
    }


def human_eval_table(ratings: list[dict], seed: int = 0) -> list[dict]:
    """human_eval_diff for every policy pair present (either orientation), against its recorded baseline."""
    pairs: dict[frozenset, list[dict]] = defaultdict(list)
    for r in ratings:
        pairs[frozenset((r["policy_a"], r["policy_b"]))].append(r)
    out = [human_eval_diff(rs, None, seed=seed) for rs in pairs.values()]
    return sorted(out, key=lambda d: (d["baseline"], d["other"]))


def krippendorff_alpha_interval(matrix) -> float:
    """Krippendorff's alpha, interval metric (delta^2 = (v - v')^2), of a (coders, units) array, NaN missing.

    alpha = 1 - D_o / D_e over pairable values (units with >= 2 values), n = their count:
    D_o = (1/n) sum_u sum_{i != j in u} delta^2 / (m_u - 1),
    D_e = sum_{i != j over all} delta^2 / (n (n - 1)).
    NaN when fewer than two pairable values, or when every value is the same (no variation to agree on).
    """
    x = np.asarray(matrix, dtype=float)
    if x.ndim != 2:
        raise ValueError(f"expected a (coders, units) matrix, got shape {x.shape}")
    ok = ~np.isnan(x)
    m = ok.sum(0)
    keep = m >= 2  # a value alone in its unit has nothing to be compared with
    x, ok, m = np.where(ok, x, 0.0)[:, keep], ok[:, keep], m[keep]
    n = int(m.sum())
    if n < 2:
        return float("nan")
    s1, s2 = x.sum(0), (x * x).sum(0)
    # sum over ordered pairs i != j of (v_i - v_j)^2 = 2 (m sum v^2 - (sum v)^2)
    d_o = float((2 * (m * s2 - s1 * s1) / (m - 1)).sum()) / n
    t1, t2 = s1.sum(), s2.sum()
    d_e = 2 * (n * t2 - t1 * t1) / (n * (n - 1))
    if d_e <= 0:
        return float("nan")
    return float(1.0 - d_o / d_e)


def reliability_label(alpha: float) -> str:
    if alpha is None or math.isnan(alpha):
        return "undefined"
    return "reliable" if alpha >= RELIABLE else "tentative" if alpha >= TENTATIVE else "unreliable"


def agreement(ratings: list[dict]) -> dict:
    """Alpha over every rated candidate: a unit is one side of one task, a coder is an annotator."""
    coders = sorted({r["annotator"] for r in ratings})
    units = sorted({(r["task_id"], s) for r in ratings for s in "ab"})
    ci, ui = {c: i for i, c in enumerate(coders)}, {u: i for i, u in enumerate(units)}
    mat = np.full((len(coders), len(units)), np.nan)
    for r in ratings:
        for s in "ab":
            mat[ci[r["annotator"]], ui[(r["task_id"], s)]] = r[f"score_{s}"]
    alpha = krippendorff_alpha_interval(mat) if len(units) else float("nan")
    pairable = int((np.sum(~np.isnan(mat), 0) >= 2).sum()) if len(units) else 0
    return {
        "alpha": alpha,
        "label": reliability_label(alpha),
        "annotators": len(coders),
        "units": len(units),
        "pairable_units": pairable,
        # A simulated annotator agrees with its oracle, not with people: say how much of the figure it is.
        "simulated_ratings": _n_simulated(ratings),
        "simulated_annotators": len({r["annotator"] for r in ratings if r.get("simulated")}),
    }


def reward_human_correlation(pairs: Iterable[tuple[float, float]]) -> dict:
    """Spearman rho and Kendall tau (tau-b) of (reward, human score) pairs, with two-sided p-values."""
    arr = np.asarray(list(pairs), dtype=float).reshape(-1, 2)
    out = {
        "n": len(arr),
        "spearman_rho": float("nan"),
        "spearman_p": float("nan"),
        "kendall_tau": float("nan"),
        "kendall_p": float("nan"),
    }
    # Fewer than 3 points, or a constant column, has no defined rank correlation: report NaN, not a warning.
    if len(arr) < 3 or np.ptp(arr[:, 0]) == 0 or np.ptp(arr[:, 1]) == 0:
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rho, p = sps.spearmanr(arr[:, 0], arr[:, 1])
        tau, q = sps.kendalltau(arr[:, 0], arr[:, 1])
    return out | {
        "spearman_rho": float(rho),
        "spearman_p": float(p),
        "kendall_tau": float(tau),
        "kendall_p": float(q),
    }


def correlation_by_grow(rows: list[dict]) -> list[dict]:
    """reward_human_correlation per Grow step over rows of `Store.rated_rewards(cid)`."""
    groups: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for r in rows:
        if r["reward"] is not None and r["human"] is not None:
            groups[r["grow"]].append((r["reward"], r["human"]))
    return [{"grow": g} | reward_human_correlation(v) for g, v in sorted(groups.items())]


def rating_stats(store, cid: str, seed: int = 0) -> dict:
    """Everything the CLI and the dashboard show about a campaign's ratings.

    `simulated` counts the ratings (and names the annotators) that engine.ratings.simulate_ratings wrote; they
    are part of every figure here, so a reader must know how many there are.
    """
    rows = store.ratings(cid)
    return {
        "progress": store.progress(cid),
        "pairs": human_eval_table(rows, seed=seed),
        "agreement": agreement(rows),
        "correlation": correlation_by_grow(store.rated_rewards(cid)),
        "simulated": {
            "ratings": _n_simulated(rows),
            "annotators": sorted({r["annotator"] for r in rows if r.get("simulated")}),
        },
    }


def to_scale(x: float) -> int:
    """A value in [0, 1] (clipped) onto the 0..6 rating scale, to the nearest point."""
    return int(np.clip(np.rint(6.0 * float(np.clip(x, 0.0, 1.0))), 0, 6))


def simulate_ratings(
    store,
    cid: str,
    oracle: Callable[[str, str, str], float],
    noise: float = 0.1,
    seed: int = 0,
    annotator: str = SIMULATED_ANNOTATOR,
) -> dict:
    """A simulated annotator, for tests and demos only: rate every open task of campaign `cid` this annotator
    has not rated, each side scored to_scale(oracle(source, text, reference) + N(0, noise)).

    `oracle` is a metric in [0, 1], e.g. engine.rewards.chrf as `lambda s, t, r: chrf(t, r)`. Every rating it
    writes is stored with `simulated` true, so statistics report it and Store.ratings(cid, simulated=False)
    leaves it out. Nothing calls this by default. Refuses an annotator name that already has ratings made by
    a person. Returns {annotator, n_ratings, task_ids}.
    """
    if noise < 0 or not math.isfinite(noise):
        raise ValueError(f"noise must be a finite standard deviation >= 0, got {noise!r}")
    if any(r["annotator"] == annotator for r in store.ratings(cid, simulated=False)):
        raise ValueError(f"{annotator!r} has ratings made by a person in {cid}: pick another annotator name")
    rng = np.random.default_rng(seed)
    done = []
    for t in store.open_tasks(cid, annotator):
        scores = []
        for text in (t["text_a"], t["text_b"]):
            x = float(oracle(t["source"], text, t["reference"] or ""))
            if not (0.0 <= x <= 1.0):
                raise ValueError(
                    f"the oracle must return a value in [0, 1], got {x!r} on task {t['task_id']}"
                )
            scores.append(to_scale(x + (rng.normal(0.0, noise) if noise else 0.0)))
        # The simulated annotator reads the sides as stored: order "ab", recorded as its view.
        store.submit_rating(t["task_id"], annotator, scores[0], scores[1], "ab", simulated=True)
        done.append(t["task_id"])
    return {"annotator": annotator, "n_ratings": len(done), "task_ids": done}
