"""Rewards for ReST campaigns: verifiers, Python callables, HF sequence classifiers and MiniLM heads,
all behind one batched interface (RewardModel.score) and checked by checked_scores.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import RewardError, RewardModel, checked_scores, hash_dir, hash_source
from .verifiers import ChrF, ExactMatch, NumericAnswer, chrf, exact_match, extract_answer, numeric_match

if TYPE_CHECKING:
    from engine.config import RewardConfig

__all__ = [
    "ChrF",
    "ExactMatch",
    "NumericAnswer",
    "RewardError",
    "RewardModel",
    "checked_scores",
    "chrf",
    "exact_match",
    "extract_answer",
    "hash_dir",
    "hash_source",
    "load_reward",
    "numeric_match",
    "reward_version",
]


def load_reward(cfg: RewardConfig, device: str | None = None) -> RewardModel:
    """The reward a config names; FileNotFoundError or RewardError (naming the path or spec) if it cannot
    load."""
    kind = cfg.kind
    if kind == "exact_match":
        return ExactMatch(cfg.batch_size)
    if kind == "numeric":
        return NumericAnswer(cfg.batch_size)
    if kind == "chrf":
        return ChrF(cfg.batch_size)
    if kind == "callable":
        # Imported lazily: the model-backed providers pull in torch and transformers, verifiers need neither.
        from .callable import CallableReward

        if not cfg.function:
            raise RewardError("reward kind 'callable' needs reward.function = 'module:function'")
        return CallableReward(cfg.function, cfg.batch_size)
    if kind in ("hf", "minilm"):
        if not cfg.path:
            raise RewardError(f"reward kind {kind!r} needs reward.path (a model directory)")
        if kind == "hf":
            from .hf import HFSequenceClassificationReward

            return HFSequenceClassificationReward(
                cfg.path, cfg.batch_size, device, format=cfg.format, prompt_template=cfg.prompt_template
            )
        from .minilm import MiniLMReward

        return MiniLMReward(cfg.path, cfg.batch_size, device)
    raise RewardError(f"unknown reward kind {kind!r}")


def reward_version(cfg: RewardConfig, import_code: bool = True) -> str | None:
    """The version `load_reward(cfg).version` has, without loading model weights or, where the code can be
    read instead, importing user code: hf and minilm hash their directory, the verifiers their own scoring
    code, and a callable the source of its function as read from its module's file (`source_version`).

    A callable whose function cannot be found that way is imported to learn it when `import_code` is set;
    otherwise its version is None (known once a worker has loaded it).
    """
    if cfg.kind in ("hf", "minilm"):
        if not cfg.path:
            raise RewardError(f"reward kind {cfg.kind!r} needs reward.path (a model directory)")
        if cfg.kind == "hf":
            from .hf import hf_version

            return hf_version(cfg.path, cfg.format, cfg.prompt_template)
        return hash_dir(cfg.path)
    if cfg.kind == "callable":
        from .callable import source_version

        if not cfg.function:
            raise RewardError("reward kind 'callable' needs reward.function = 'module:function'")
        version = source_version(cfg.function)
        if version is not None or not import_code:
            return version
    return load_reward(cfg).version
