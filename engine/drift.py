"""Drift between two Grow steps of a campaign: reward and length shift, diversity, KL from the base policy,
and the trend of reward-human correlation; alarms on configurable thresholds, recorded as events.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from scipy import stats as sps

# Improve's own tokenisation (prompt ids + target ids + EOS), so a text scores as it was trained on.
from .improve import TrainExample, _collate, _encode
from .models import Policy, autocast


@dataclass
class DriftThresholds:
    """When a difference between step a (the reference) and step b raises an alarm. None turns a check off."""

    reward_wasserstein: float | None = 0.1  # W1 / std of a's rewards; Evidently's default for large samples
    length_wasserstein: float | None = 0.1  # the same on token counts
    ks_pvalue: float | None = None  # off: at 16M rows any shift is "significant"; the distance says how much
    distinct_drop: float | None = 0.2  # relative fall of distinct-2 from a to b (mode collapse)
    unique_share_drop: float | None = 0.2  # relative fall of the share of unique candidates per source
    kl: float | None = None  # nats per sequence; scale depends on output length, so no default
    human_rho_min: float | None = (
        0.2  # Spearman of reward vs humans at grow b below this: reward stops tracking people
    )
    human_min_pairs: int = 10  # fewer rated texts than this at a grow: no human alarm
    sample_rows: int = 200_000  # reservoir sample per step for the KS tests
    diversity_texts: int = 20_000  # texts per step for distinct-n (same count on both sides)
    bins: int = 10_000  # histogram bins for the exact Wasserstein distance
    seed: int = 0

    def __post_init__(self) -> None:
        for f in ("reward_wasserstein", "length_wasserstein", "distinct_drop", "unique_share_drop", "kl"):
            v = getattr(self, f)
            if v is not None and v < 0:
                raise ValueError(f"drift.{f} must be >= 0, got {v}")
        if self.ks_pvalue is not None and not 0 < self.ks_pvalue < 1:
            raise ValueError(f"drift.ks_pvalue must be in (0, 1), got {self.ks_pvalue}")
        if min(self.sample_rows, self.diversity_texts, self.bins) < 1:
            raise ValueError("drift.sample_rows, diversity_texts and bins must be >= 1")


def resolve_steps(store, cid: str, a: int | None = None, b: int | None = None) -> tuple[int, int]:
    """a: None or 0 is the BC baseline, i.e. the first Grow step (sampled by "base"); b: None is the latest step."""
    grows = [r["grow"] for r in store.drift_grows(cid)]
    if not grows:
        raise ValueError(f"campaign {cid} has no generated samples yet")
    a = grows[0] if not a else a
    b = grows[-1] if b is None else b
    for g in (a, b):
        if g not in grows:
            raise ValueError(f"grow {g} of campaign {cid} has no samples; sampled steps: {grows}")
    if a == b:
        raise ValueError(f"a and b are both grow {a}: compare two different steps (sampled: {grows})")
    return a, b


def default_comparisons(store, cid: str) -> list[tuple[int, int]]:
    """The latest step against the BC baseline and against the previous step (once when they coincide)."""
    grows = [r["grow"] for r in store.drift_grows(cid)]
    if len(grows) < 2:
        return []
    return list(dict.fromkeys([(grows[0], grows[-1]), (grows[-2], grows[-1])]))


@torch.no_grad()
def score_logprobs(
    policy: Policy, sources: Sequence[str], texts: Sequence[str], batch_size: int = 32
) -> np.ndarray:
    """sum log p(text + EOS | prompt) under `policy` per pair (temperature 1), as Grow stores sum_logprob."""
    model = policy.model
    was_training = model.training
    model.eval()
    enc = [(*_encode(policy, TrainExample(s, t)), 1.0) for s, t in zip(sources, texts, strict=True)]
    order = sorted(range(len(enc)), key=lambda i: len(enc[i][0]))  # similar lengths per batch: little padding
    out = np.zeros(len(enc))
    try:
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            ids, attn, labels, _ = _collate(
                [enc[i] for i in idx], policy.tokenizer.pad_token_id, policy.device
            )
            with autocast(policy.device):
                logits = model(input_ids=ids, attention_mask=attn).logits
            logits, labels = logits[:, :-1].float(), labels[:, 1:]  # token t+1 from the prefix up to t
            lp = torch.log_softmax(logits, -1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
            out[idx] = (lp * (labels != -100)).sum(1).cpu().numpy()
    finally:
        model.train(was_training)
    return out


def kl_estimate(
    store,
    cid: str,
    grow: int,
    base: Policy,
    n: int = 512,
    seed: int = 0,
    current: Policy | None = None,
    max_new_tokens: int | None = None,
) -> dict:
    """KL(pi_g || pi_base) ~ mean over y of log pi_g(y) - log pi_base(y), y = n stored candidates of `grow`.

    With `current` (the policy that sampled `grow`) both terms are rescored here: one tokenisation, exact
    for the same policy. Without it, log pi_g is the stored sum_logprob, which is comparable only where
    decoding then re-encoding gives the generated tokens back and the candidate ended with EOS; rows that
    fail the token-count check or hit `max_new_tokens` are dropped and counted. Grow samples at
    temperature 0.8, not 1, so either way this estimates the KL rather than computing it exactly.
    """
    rows = store.text_sample(cid, grow, n, seed)
    drawn = len(rows)
    if current is None:
        rows = [
            r
            for r in rows
            if r["sum_logprob"] is not None
            and r["n_tokens"] is not None
            and len(base.target_ids(r["text"])) == r["n_tokens"] + 1
            and (max_new_tokens is None or r["n_tokens"] < max_new_tokens)
        ]
    if not rows:
        raise ValueError(f"no usable candidates with log-probabilities in grow {grow} of campaign {cid}")
    src, txt = [r["source"] for r in rows], [r["text"] for r in rows]
    lp_g = (
        score_logprobs(current, src, txt)
        if current
        else np.array([r["sum_logprob"] for r in rows], dtype=float)
    )
    d = lp_g - score_logprobs(base, src, txt)
    se = float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else float("nan")
    return {
        "grow": grow,
        "kl": float(d.mean()),
        "stderr": se,
        "n": len(d),
        "dropped": drawn - len(d),
        "logp_current": "rescored" if current else "stored",
    }


def _shift(
    store,
    cid: str,
    a: int,
    b: int,
    column: str,
    samples: tuple[dict, dict],
    std_a: float,
    th: DriftThresholds,
) -> dict:
    d = store.cdf_distance(cid, a, b, column, th.bins)
    sa, sb = (s[column][~np.isnan(s[column])] for s in samples)
    ks = sps.ks_2samp(sa, sb)
    # A constant reference (say every binary reward 0) has no spread to scale by: any move is infinite drift.
    norm = d["wasserstein"] / std_a if std_a else (math.inf if d["wasserstein"] > 0 else 0.0)
    return {
        "wasserstein": d["wasserstein"],
        "wasserstein_norm": norm,
        "ks_binned": d["ks_binned"],
        "ks_stat": float(ks.statistic),
        "ks_pvalue": float(ks.pvalue),
        "ks_n": [len(sa), len(sb)],
        "n": [d["n_a"], d["n_b"]],
    }


def _alarm(alarms: list, metric: str, value: float, threshold: float, message: str) -> None:
    alarms.append({"metric": metric, "value": value, "threshold": threshold, "message": message})


def drift_report(
    store,
    cid: str,
    a: int | None = None,
    b: int | None = None,
    thresholds: DriftThresholds | None = None,
    base: Policy | None = None,
    current: Policy | None = None,
    kl_samples: int = 512,
) -> dict:
    """Statistics of Grow b against Grow a (default: latest against the BC baseline) and the alarms they raise.

    With `base` (the BC policy), the KL of step b's policy from it is estimated on `kl_samples` candidates,
    rescoring under `current` (the policy that sampled b) when given; see kl_estimate.
    """
    th = thresholds or DriftThresholds()
    a, b = resolve_steps(store, cid, a, b)
    sa, sb = store.step_summary(cid, a), store.step_summary(cid, b)
    samples = (
        store.value_sample(cid, a, th.sample_rows, th.seed),
        store.value_sample(cid, b, th.sample_rows, th.seed),
    )
    reward = _shift(store, cid, a, b, "reward", samples, sa["std_reward"], th) | {
        "mean_a": sa["mean_reward"],
        "mean_b": sb["mean_reward"],
        "std_a": sa["std_reward"],
    }
    length = _shift(store, cid, a, b, "n_tokens", samples, sa["std_tokens"], th) | {
        "mean_a": sa["mean_tokens"],
        "mean_b": sb["mean_tokens"],
        "std_a": sa["std_tokens"],
    }
    k = min(th.diversity_texts, sa["n"], sb["n"])  # same number of texts: distinct-n falls with pooled size
    div = {
        s: store.distinct_n(cid, g, k, th.seed) | {"unique_share": store.unique_share(cid, g)}
        for s, g in (("a", a), ("b", b))
    }
    kl = kl_estimate(store, cid, b, base, kl_samples, th.seed, current) if base is not None else None
    human: list[dict] = []
    if hasattr(store, "rated_rewards"):
        from .ratings import correlation_by_grow

        human = correlation_by_grow(store.rated_rewards(cid))

    alarms: list[dict] = []
    for name, sh in (("reward", reward), ("length", length)):
        lim = getattr(th, f"{name}_wasserstein")
        if lim is not None and sh["wasserstein_norm"] >= lim:
            _alarm(
                alarms,
                f"{name}_wasserstein",
                sh["wasserstein_norm"],
                lim,
                f"{name} distribution moved by {sh['wasserstein_norm']:.3f} reference std (W1 {sh['wasserstein']:.4g}) "
                f"from grow {a} to grow {b}; mean {sh['mean_a']:.4g} -> {sh['mean_b']:.4g}",
            )
        if th.ks_pvalue is not None and sh["ks_pvalue"] < th.ks_pvalue:
            _alarm(
                alarms,
                f"{name}_ks",
                sh["ks_pvalue"],
                th.ks_pvalue,
                f"{name}: KS {sh['ks_stat']:.3f}, p = {sh['ks_pvalue']:.3g} between grow {a} and grow {b}",
            )
    for metric, lim in (("distinct_2", th.distinct_drop), ("unique_share", th.unique_share_drop)):
        va, vb = div["a"][metric], div["b"][metric]
        drop = (va - vb) / va if va and not math.isnan(va) and not math.isnan(vb) else 0.0
        if lim is not None and drop >= lim:
            _alarm(
                alarms,
                f"{metric}_drop",
                drop,
                lim,
                f"{metric} fell by {drop:.0%} ({va:.3f} -> {vb:.3f}) from grow {a} to grow {b}",
            )
    if kl is not None and th.kl is not None and kl["kl"] >= th.kl:
        _alarm(
            alarms,
            "kl",
            kl["kl"],
            th.kl,
            f"KL of grow {b}'s policy from base ~ {kl['kl']:.3f} nats (+/- {kl['stderr']:.3f})",
        )
    hb = next((h for h in human if h["grow"] == b), None)
    if (
        th.human_rho_min is not None
        and hb
        and hb["n"] >= th.human_min_pairs
        and not math.isnan(hb["spearman_rho"])
        and hb["spearman_rho"] < th.human_rho_min
    ):
        _alarm(
            alarms,
            "human_spearman",
            hb["spearman_rho"],
            th.human_rho_min,
            f"reward tracks people poorly at grow {b}: Spearman {hb['spearman_rho']:.3f} over {hb['n']} rated texts",
        )
    return {
        "campaign": cid,
        "a": a,
        "b": b,
        "steps": {"a": sa, "b": sb},
        "reward": reward,
        "length": length,
        "diversity": div | {"n_texts": k},
        "kl": kl,
        "human": human,
        "thresholds": asdict(th),
        "alarms": alarms,
    }


def _finite(x):
    """JSON has no inf or NaN: they become null (the message keeps the readable figure)."""
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite(v) for v in x]
    if isinstance(x, float | np.floating):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def record_alarms(store, cid: str, report: dict, actor: str = "drift") -> int:
    """Append one "drift_alarm" event per alarm, with the numbers that raised it; returns how many."""
    for al in report["alarms"]:
        payload = al | {
            "a": report["a"],
            "b": report["b"],
            "reward": report["reward"],
            "length": report["length"],
        }
        store.add_event(cid, "drift_alarm", al["message"], _finite(payload), actor=actor)
    return len(report["alarms"])
