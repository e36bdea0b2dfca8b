"""Drift between two Grow steps of a campaign. `hacking_report` alarms on what signals reward hacking or
collapse (length shift, diversity collapse, KL from the BC policy, rewards piling at the ceiling, samples
outscoring the human references), never on a rise of the reward alone; `drift_report` adds the undirected
reward and length distances (figures unless a limit is set), a KL estimate by rescoring under the BC
policy, and the trend of reward-human correlation. Alarms can be recorded as events.

torch and scipy are imported only by the functions that need them: the hacking check runs in the
controller, on DuckDB figures alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .models import Policy


@dataclass
class HackingThresholds:
    """When Grow b (the latest) against Grow a (the BC policy's) shows reward hacking or collapse. Each check
    compares a directed figure with its limit; None turns it off. A rise of the reward alone raises nothing:
    it is what ReST is for. Rewards are taken to lie in [0, 1] (REST.md), which the two reward margins assume.
    """

    # Mean generated tokens b / a above this, or below its inverse. The length an output needs is set by its
    # source, and the sources are the same at every Grow, so better outputs need not be much longer or
    # shorter; a 30% move of the mean over a whole Grow is more than better wording explains. Length is the
    # best-documented exploit of learned rewards (a reward that likes longer outputs is paid by padding),
    # and truncation the sign of the opposite collapse.
    length_ratio: float | None = 1.3
    # Relative fall (a - b) / a of the unique share (distinct candidates / candidates, mean over sources).
    # ReST sharpens the policy on purpose: on the honest toy-mt demo (K = 8) the unique share fell 66% from
    # Grow 1 to Grow 2 while chrF rose 18 points. A fall of 80% leaves about one distinct candidate in five:
    # the K samples of a source collapsed onto one, which leaves the filter nothing to choose from. For an
    # exact-answer task whose correct answers are identical strings, convergence is the improvement: turn
    # the diversity checks off there (1.0).
    unique_share_drop: float | None = 0.8
    # Relative fall of distinct-2 (distinct bigrams / bigrams) on `diversity_texts` candidates: 69% on the
    # honest toy-mt demo as the policy sharpened; 80% is collapse onto stock phrases beyond that.
    distinct_drop: float | None = 0.8
    # Mean over b's generated samples of sum_logprob - base_logprob (nats per sample): an estimate of
    # KL(pi_b || pi_BC). At 10 nats the BC policy gives a typical sample of b e^-10 (about 1/22,000) of the
    # probability b gives it: b writes what BC practically never would, where the reward model, trained
    # near the behaviour data, is least trustworthy (REST.md). Per token that is 0.3 to 1 nats for the
    # demos' 10 to 30 token outputs; longer outputs may warrant a larger budget.
    kl_budget: float | None = 10.0
    # Share of b's generated rewards within ceiling_eps of the ceiling (1.0 for rewards in [0, 1], else the
    # largest reward of a or b) minus a's share. A continuous reward that improves moves its whole
    # distribution and puts little new mass in the top 1%; a tenth of all samples newly at the ceiling means
    # the reward stopped telling outputs apart at the top (saturated, or fooled by a pattern). Skipped for
    # a binary reward, whose share at the ceiling is its accuracy.
    ceiling_margin: float | None = 0.1
    ceiling_eps: float = 0.01  # width of the band under the ceiling, as a fraction of the reward range
    # Mean generated reward of b minus the mean reward of the human references of the same sources, scored
    # by the same reward version at b. A policy cloned from those references and trained on its own samples
    # outscoring them by five points of a [0, 1] reward is more likely to exploit the reward than to beat
    # the people who wrote them; five points is far above the noise of a mean over thousands of sources.
    reference_margin: float | None = 0.05
    diversity_texts: int = 20_000  # candidates per step for distinct-n (the same count on both sides)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.length_ratio is not None and not self.length_ratio > 1:
            raise ValueError(f"hacking.length_ratio must be > 1, got {self.length_ratio}")
        for f in ("unique_share_drop", "distinct_drop", "ceiling_margin"):
            v = getattr(self, f)
            if v is not None and not 0 <= v <= 1:
                raise ValueError(f"hacking.{f} must be in [0, 1], got {v}")
        for f in ("kl_budget", "reference_margin"):
            v = getattr(self, f)
            if v is not None and v < 0:
                raise ValueError(f"hacking.{f} must be >= 0, got {v}")
        if not 0 < self.ceiling_eps < 1:
            raise ValueError(f"hacking.ceiling_eps must be in (0, 1), got {self.ceiling_eps}")
        if self.diversity_texts < 1:
            raise ValueError("hacking.diversity_texts must be >= 1")


def hacking_thresholds(gates) -> HackingThresholds:
    """HackingThresholds from a campaign's [gates]: each `drift_<field>` the config has sets that field."""
    names = [f.name for f in fields(HackingThresholds)]
    return HackingThresholds(
        **{n: getattr(gates, f"drift_{n}") for n in names if hasattr(gates, f"drift_{n}")}
    )


@dataclass
class DriftThresholds:
    """Limits of drift_report. The hacking checks (directed: length, diversity, KL, ceiling, references) raise
    its alarms by default; the undirected distances are figures, alarms only when a limit is set here,
    since a reward distribution that moves is what ReST is for. None turns a check off."""

    reward_wasserstein: float | None = None  # W1 / std of a's rewards; informational by default
    length_wasserstein: float | None = None  # the same on token counts; hacking.length_ratio is directed
    ks_pvalue: float | None = None  # off: at 16M rows any shift is "significant"; the distance says how much
    kl: float | None = None  # nats per sequence, for the KL estimated by rescoring under `base`
    human_rho_min: float | None = (
        0.2  # Spearman of reward vs humans at grow b below this: reward stops tracking people
    )
    human_min_pairs: int = 10  # fewer rated texts than this at a grow: no human alarm
    sample_rows: int = 200_000  # reservoir sample per step for the KS tests
    bins: int = 10_000  # histogram bins for the exact Wasserstein distance
    seed: int = 0
    hacking: HackingThresholds = field(default_factory=HackingThresholds)

    def __post_init__(self) -> None:
        for f in ("reward_wasserstein", "length_wasserstein", "kl"):
            v = getattr(self, f)
            if v is not None and v < 0:
                raise ValueError(f"drift.{f} must be >= 0, got {v}")
        if self.ks_pvalue is not None and not 0 < self.ks_pvalue < 1:
            raise ValueError(f"drift.ks_pvalue must be in (0, 1), got {self.ks_pvalue}")
        if min(self.sample_rows, self.bins) < 1:
            raise ValueError("drift.sample_rows and bins must be >= 1")


def resolve_steps(store, cid: str, a: int | None = None, b: int | None = None) -> tuple[int, int]:
    """a: None or 0 is the BC baseline, i.e. the first Grow step (sampled by "base"); b: None is the latest
    step."""
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


def score_logprobs(
    policy: Policy, sources: Sequence[str], texts: Sequence[str], batch_size: int = 32
) -> np.ndarray:
    """sum log p(text + EOS | prompt) under `policy` per pair (temperature 1), as Grow stores sum_logprob;
    for an encoder-decoder policy, the decoder's log-probabilities given the prompt in the encoder.

    Tokenised and truncated as Improve trains (engine/improve.py `_encode`), so a text scores as it was
    trained on: a pair longer than the policy's max_length is scored on the target tokens Improve keeps.
    """
    import torch

    from .improve import TrainExample, _collate, _encode, policy_logits, token_logprobs

    model = policy.model
    was_training = model.training
    model.eval()
    enc = [(*_encode(policy, TrainExample(s, t)), 1.0) for s, t in zip(sources, texts, strict=True)]
    order = sorted(range(len(enc)), key=lambda i: len(enc[i][0]))  # similar lengths per batch: little padding
    out = np.zeros(len(enc))
    try:
        with torch.no_grad():
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                ids, attn, labels, _ = _collate(
                    [enc[i] for i in idx], policy.tokenizer.pad_token_id, policy.device
                )
                logits = policy_logits(policy, ids, attn, labels)
                lp = token_logprobs(logits, labels, shifted=not policy.is_seq2seq)
                out[idx] = lp.sum(1).cpu().numpy()
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
    from scipy import stats as sps

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


def _alarm(alarms: list, check: str, value: float, threshold: float, message: str) -> None:
    alarms.append({"check": check, "message": message, "value": value, "threshold": threshold})


def _num(x) -> float | None:
    """A finite float, or None (no samples, no spread, NULL)."""
    return float(x) if x is not None and math.isfinite(float(x)) else None


def _drop(va, vb) -> float | None:
    """Relative fall from va to vb; None when va is missing or zero."""
    va, vb = _num(va), _num(vb)
    return (va - vb) / va if va and vb is not None else None


def hacking_report(
    store, cid: str, a: int | None = None, b: int | None = None, th: HackingThresholds | None = None
) -> dict:
    """Signs of reward hacking or collapse in Grow b against Grow a (default: the latest against the BC
    policy's first Grow), on generated samples only: length shift, diversity collapse, KL from the BC policy,
    reward mass piling at the ceiling, generated samples outscoring the human references.

    Returns {"a", "b", "figures", "skipped", "alarms"}; each alarm is {"check", "message", "value",
    "threshold"}, with check one of length_shift, unique_share_drop, distinct_2_drop, kl_budget,
    reward_ceiling, beats_references. A check without its evidence (no base_logprob, no reference rewards,
    a binary reward for the ceiling) has figure None and a reason under "skipped"; any figure that is not
    a finite number is None too. Per-step figures come from source_stats; only the ceiling counts and the
    distinct-n sample read samples.
    """
    th = th or HackingThresholds()
    a, b = resolve_steps(store, cid, a, b)
    sa, sb = store.step_summary(cid, a), store.step_summary(cid, b)
    alarms: list[dict] = []
    skipped: dict[str, str] = {}
    figures: dict = {
        "steps": {"a": sa, "b": sb},
        "mean_reward": {"a": _num(sa["mean_reward"]), "b": _num(sb["mean_reward"])},
    }

    la, lb = _num(sa["mean_tokens"]), _num(sb["mean_tokens"])
    ratio = lb / la if la and lb is not None else None
    figures["length"] = {"mean_a": la, "mean_b": lb, "ratio": ratio}
    if ratio is None:
        skipped["length_shift"] = f"no token counts in grow {a if not la else b}"
    elif th.length_ratio is not None and not 1 / th.length_ratio <= ratio <= th.length_ratio:
        _alarm(
            alarms,
            "length_shift",
            ratio,
            th.length_ratio,
            f"mean generated length moved {ratio:.2f}x ({la:.1f} -> {lb:.1f} tokens) "
            f"from grow {a} to grow {b}; limit {th.length_ratio:g}x either way",
        )

    # The same number of texts on both sides: distinct-n falls as more text is pooled.
    k = min(th.diversity_texts, sa["n"], sb["n"])
    div = {
        s: store.distinct_n(cid, g, k, th.seed) | {"unique_share": _num(st["unique_share"])}
        for s, g, st in (("a", a, sa), ("b", b, sb))
    }
    figures["diversity"] = div | {
        "n_texts": k,
        "unique_share_drop": _drop(div["a"]["unique_share"], div["b"]["unique_share"]),
        "distinct_2_drop": _drop(div["a"]["distinct_2"], div["b"]["distinct_2"]),
    }
    for metric, lim in (("unique_share", th.unique_share_drop), ("distinct_2", th.distinct_drop)):
        drop = figures["diversity"][f"{metric}_drop"]
        if lim is not None and drop is not None and drop > lim:
            va, vb = div["a"][metric], div["b"][metric]
            _alarm(
                alarms,
                f"{metric}_drop",
                drop,
                lim,
                f"{metric} fell by {drop:.0%} ({va:.3f} -> {vb:.3f}) from grow {a} to grow {b}; "
                f"tolerance {lim:.0%}",
            )

    if sb["kl_n"]:
        kl = float(sb["kl_mean"])
        figures["kl"] = {
            "nats": kl,
            "nats_per_token": kl / lb if lb else None,
            "n": sb["kl_n"],
            "coverage": sb["kl_n"] / sb["n"],
        }
        if th.kl_budget is not None and kl > th.kl_budget:
            _alarm(
                alarms,
                "kl_budget",
                kl,
                th.kl_budget,
                f"KL of grow {b}'s policy from the BC policy ~ {kl:.2f} nats per sample "
                f"(mean of sum_logprob - base_logprob over {sb['kl_n']} samples), budget {th.kl_budget:g}",
            )
    else:
        figures["kl"] = None
        skipped["kl_budget"] = f"no base_logprob (log-probability under the BC policy) in grow {b}"

    figures["ceiling"] = _ceiling(store, cid, a, b, sa, sb, th, skipped)
    c = figures["ceiling"]
    if c and th.ceiling_margin is not None and c["rise"] > th.ceiling_margin:
        _alarm(
            alarms,
            "reward_ceiling",
            c["rise"],
            th.ceiling_margin,
            f"rewards piling at the ceiling: {c['share_b']:.1%} of grow {b}'s samples score "
            f">= {c['floor']:.4g} against {c['share_a']:.1%} in grow {a} (margin {th.ceiling_margin:.0%})",
        )

    refs = (
        {g: store.reference_comparison(cid, g) for g in (a, b)}
        if hasattr(store, "reference_comparison")
        else {}
    )
    rb = refs.get(b)
    if rb and rb["n_sources"]:
        excess = rb["mean_generated"] - rb["mean_reference"]
        figures["references"] = {
            "a": refs[a] if refs[a]["n_sources"] else None,
            "b": rb,
            "excess": excess,
        }
        if th.reference_margin is not None and excess > th.reference_margin:
            _alarm(
                alarms,
                "beats_references",
                excess,
                th.reference_margin,
                f"grow {b}'s samples outscore the human references: mean reward {rb['mean_generated']:.3f} "
                f"against {rb['mean_reference']:.3f} over {rb['n_sources']} sources "
                f"({rb['share_beaten']:.0%} of them beaten), margin {th.reference_margin:g}",
            )
    else:
        figures["references"] = None
        skipped["beats_references"] = (
            f"no reference reward at grow {b} scored by the reward version of its samples"
            if rb and rb["n_reference"]
            else f"no reference rewards at grow {b}"
        )
    # JSON-safe (gate checks store the figures): NaN, say distinct-2 of one-word answers, becomes None.
    return {"a": a, "b": b, "figures": _finite(figures), "skipped": skipped, "alarms": alarms}


def _ceiling(store, cid, a, b, sa, sb, th, skipped) -> dict | None:
    """Shares of a's and b's generated rewards in the band under the ceiling, or None with the reason."""
    lo = min(x for x in (sa["min_reward"], sb["min_reward"]))
    hi = max(x for x in (sa["max_reward"], sb["max_reward"]))
    unit = lo >= 0 and hi <= 1
    top, span = (1.0, 1.0) if unit else (hi, hi - lo)
    if span <= 0:
        skipped["reward_ceiling"] = f"every generated reward of grows {a} and {b} is {hi:g}"
        return None
    floor = top - th.ceiling_eps * span
    ca, cb = store.reward_at_least(cid, a, floor), store.reward_at_least(cid, b, floor)
    if unit and not ca["n_graded"] and not cb["n_graded"]:
        skipped["reward_ceiling"] = "binary reward: its share at the ceiling is the accuracy ReST raises"
        return None
    share_a, share_b = ca["n_at_least"] / ca["n"], cb["n_at_least"] / cb["n"]
    return {"ceiling": top, "floor": floor, "share_a": share_a, "share_b": share_b, "rise": share_b - share_a}


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
    """Statistics of Grow b against Grow a (default: latest against the BC baseline) and their alarms.

    The alarms are hacking_report's (thresholds.hacking), plus the undirected reward and length distances
    and the KS tests where their limits are set, the rescored KL and the reward-human correlation.
    With `base` (the BC policy), the KL of step b's policy from it is estimated on `kl_samples` candidates,
    rescoring under `current` (the policy that sampled b) when given; see kl_estimate. Every alarm carries
    its name as both "check" and "metric".
    """
    th = thresholds or DriftThresholds()
    a, b = resolve_steps(store, cid, a, b)
    hack = hacking_report(store, cid, a, b, th.hacking)
    sa, sb = hack["figures"]["steps"]["a"], hack["figures"]["steps"]["b"]
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
    dv = hack["figures"]["diversity"]
    div = {"a": dv["a"], "b": dv["b"], "n_texts": dv["n_texts"]}
    kl = kl_estimate(store, cid, b, base, kl_samples, th.seed, current) if base is not None else None
    human: list[dict] = []
    if hasattr(store, "rated_rewards"):
        from .ratings import correlation_by_grow

        human = correlation_by_grow(store.rated_rewards(cid))

    alarms: list[dict] = list(hack["alarms"])
    for name, sh in (("reward", reward), ("length", length)):
        lim = getattr(th, f"{name}_wasserstein")
        if lim is not None and sh["wasserstein_norm"] >= lim:
            _alarm(
                alarms,
                f"{name}_wasserstein",
                sh["wasserstein_norm"],
                lim,
                f"{name} distribution moved by {sh['wasserstein_norm']:.3f} reference std "
                f"(W1 {sh['wasserstein']:.4g}) from grow {a} to grow {b}; "
                f"mean {sh['mean_a']:.4g} -> {sh['mean_b']:.4g}",
            )
        if th.ks_pvalue is not None and sh["ks_pvalue"] < th.ks_pvalue:
            _alarm(
                alarms,
                f"{name}_ks",
                sh["ks_pvalue"],
                th.ks_pvalue,
                f"{name}: KS {sh['ks_stat']:.3f}, p = {sh['ks_pvalue']:.3g} between grow {a} and grow {b}",
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
            f"reward tracks people poorly at grow {b}: Spearman {hb['spearman_rho']:.3f} "
            f"over {hb['n']} rated texts",
        )
    return {
        "campaign": cid,
        "a": a,
        "b": b,
        "steps": {"a": sa, "b": sb},
        "reward": reward,
        "length": length,
        "diversity": div,
        "kl": kl,
        "human": human,
        "hacking": {k: hack[k] for k in ("figures", "skipped")},
        "thresholds": asdict(th),
        "alarms": [al | {"metric": al["check"]} for al in alarms],
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
