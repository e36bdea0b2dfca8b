"""Evaluation: held-out mean reward of greedy decodes, and the Best-of-N curve.

Best-of-N samples max(N) candidates per source once; the value at N is the mean over sources of the
best reward among the first N samples, so every point of the curve comes from the same draws.

Both take either sampler's policy: engine.models' Policy (transformers generate) or, on
`[grow] backend = "vllm"`, engine.vllm_backend's VllmPolicy (`load_sampling_policy` picks by the backend).
A policy being trained is always a transformers Policy: its validation checks stay on hf.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .data import Example
from .models import Policy
from .rewards import RewardModel, checked_scores
from .vllm_backend import VllmPolicy, sample_any


@dataclass
class EvalResult:
    mean_reward: float
    n: int
    outputs: list[str]
    rewards: list[float]
    n_tokens: list[int]


def mean_reward(
    policy: Policy | VllmPolicy,
    reward: RewardModel,
    examples: list[Example],
    max_new_tokens: int,
    batch_size: int,
) -> EvalResult:
    """Greedy-decode every source once and score it: the campaign's held-out reward."""
    cands = sample_any(
        policy,
        [e.source for e in examples],
        k=1,
        greedy=True,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
    )
    outs = [c.text for c in cands]
    rewards = checked_scores(
        reward,
        [e.source for e in examples],
        outs,
        [e.reference for e in examples],
        ids=[e.id for e in examples],
    )
    mean = float(np.mean(rewards)) if rewards else float("nan")
    return EvalResult(mean, len(rewards), outs, rewards, [c.n_tokens for c in cands])


def best_of_n(
    policy: Policy | VllmPolicy,
    reward: RewardModel,
    examples: list[Example],
    ns: list[int],
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    batch_size: int,
    seed: int,
) -> dict[int, float]:
    """Mean over sources of max reward among the first N temperature samples, for each N in `ns`."""
    k = max(ns)
    cands = sample_any(
        policy,
        [e.source for e in examples],
        k=k,
        temperature=temperature,
        top_p=top_p,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        seed=seed,
    )
    srcs = [examples[c.source_index].source for c in cands]
    refs = [examples[c.source_index].reference for c in cands]
    ids = [f"{examples[c.source_index].id}#{c.sample_index}" for c in cands]
    r = np.asarray(checked_scores(reward, srcs, [c.text for c in cands], refs, ids=ids)).reshape(
        len(examples), k
    )
    return {n: float(r[:, :n].max(axis=1).mean()) for n in ns}
