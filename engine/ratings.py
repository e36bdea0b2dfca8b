"""Statistics of human side-by-side ratings: the paper's "human eval diff" with a bootstrap interval,
Krippendorff's alpha (interval metric) between annotators, and reward-versus-human rank correlation per Grow step.
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from collections.abc import Iterable

import numpy as np
from scipy import stats as sps

from .store.ratings import shown_order  # noqa: F401  (re-exported: pages show sides in this order)

RELIABLE, TENTATIVE = 0.8, 0.667  # Krippendorff's own cut-offs for drawing conclusions


def _by_task(ratings: list[dict]) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = defaultdict(list)
    for r in ratings:
        out[r["task_id"]].append(r)
    return out


def human_eval_diff(
    ratings: list[dict], baseline: str = "a", confidence: float = 0.95, n_resamples: int = 9999, seed: int = 0
) -> dict:
    """Mean score per policy and diff = other policy minus baseline, with a bootstrap CI over tasks.

    `ratings` are rows of `Store.ratings(cid)` for one policy pair; `baseline` is "a", "b" or a policy name.
    Each task counts once (its annotators' mean), so a task with more ratings does not weigh more; tasks,
    not ratings, are resampled because ratings of one task are not independent.
    """
    pairs = {(r["policy_a"], r["policy_b"]) for r in ratings}
    if len(pairs) != 1:
        raise ValueError(
            f"human_eval_diff needs ratings of exactly one policy pair, got {sorted(pairs)}; "
            "use human_eval_table for several"
        )
    ((pa, pb),) = pairs
    if baseline in ("a", pa):
        base, other, flip = pa, pb, False
    elif baseline in ("b", pb):
        base, other, flip = pb, pa, True
    else:
        raise ValueError(f"baseline {baseline!r} is neither 'a', 'b', {pa!r} nor {pb!r}")
    tasks = _by_task(ratings)
    ma = np.array([np.mean([r["score_a"] for r in rs]) for rs in tasks.values()])
    mb = np.array([np.mean([r["score_b"] for r in rs]) for rs in tasks.values()])
    d = (ma - mb) if flip else (mb - ma)  # other minus baseline, per task
    per_rating = np.array([(r["score_a"] - r["score_b"]) * (1 if flip else -1) for r in ratings])
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
        "mean": {
            pa: float(ma.mean()) if len(ma) else float("nan"),
            pb: float(mb.mean()) if len(mb) else float("nan"),
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
    """human_eval_diff for every policy pair present, baseline = side a."""
    pairs: dict[tuple, list[dict]] = defaultdict(list)
    for r in ratings:
        pairs[(r["policy_a"], r["policy_b"])].append(r)
    return [human_eval_diff(rs, "a", seed=seed) for _, rs in sorted(pairs.items())]


def krippendorff_alpha_interval(matrix) -> float:
    """Krippendorff's alpha, interval metric (delta^2 = (v - v')^2), for a (coders, units) array with NaN = missing.

    alpha = 1 - D_o / D_e over pairable values (units with >= 2 values), n = their count:
    D_o = (1/n) sum_u sum_{i != j in u} delta^2 / (m_u - 1),  D_e = sum_{i != j over all} delta^2 / (n (n - 1)).
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
    """Everything the CLI and the dashboard show about a campaign's ratings."""
    rows = store.ratings(cid)
    return {
        "progress": store.progress(cid),
        "pairs": human_eval_table(rows, seed=seed),
        "agreement": agreement(rows),
        "correlation": correlation_by_grow(store.rated_rewards(cid)),
    }
