"""A learned reward from a local Hugging Face sequence classifier with one logit (what TRL's RewardTrainer
saves): score = sigmoid(logit) of the (source, candidate) text pair.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

from .base import RewardError, RewardModel, autocast, batches, hash_dir, pick_device


def check_classifier_dir(path: str | Path) -> dict[str, Any]:
    """The directory's config.json, if it describes a one-logit sequence classifier; a clear error
    otherwise."""
    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"reward model directory not found: {p}")
    cfg_file = p / "config.json"
    if not cfg_file.is_file():
        hint = " (it holds head.json: use reward.kind = 'minilm')" if (p / "head.json").is_file() else ""
        raise RewardError(f"{p} is not a Hugging Face model directory: no config.json{hint}")
    try:
        cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RewardError(f"{cfg_file}: not valid JSON: {e}") from e
    archs = cfg.get("architectures") or []
    if archs and not any(str(a).endswith("ForSequenceClassification") for a in archs):
        raise RewardError(
            f"{p}: architectures {archs} is not a sequence classifier; a reward model must be saved "
            "from AutoModelForSequenceClassification with num_labels=1"
        )
    from transformers import AutoConfig

    try:
        # AutoConfig, not the raw JSON: save_pretrained omits id2label when it equals the default of 2 labels.
        num_labels = AutoConfig.from_pretrained(p, local_files_only=True, trust_remote_code=False).num_labels
    except (OSError, ValueError, KeyError) as e:
        raise RewardError(f"{p}: cannot read the model config: {e}") from e
    if num_labels != 1:
        raise RewardError(
            f"{p}: the classifier has num_labels={num_labels}; a reward model must output one logit "
            "(num_labels=1, as TRL's RewardTrainer saves it)"
        )
    return cfg


class HFSequenceClassificationReward(RewardModel):
    """sigmoid(logit) of AutoModelForSequenceClassification on tokenizer(source, candidate)."""

    needs_reference = False

    def __init__(self, path: str | Path, batch_size: int = 64, device: str | None = None):
        self.path = Path(path)
        check_classifier_dir(self.path)
        self.name = f"hf:{self.path.resolve().name}"
        self.version = hash_dir(self.path)  # hashed before loading: the bytes we are about to trust
        self.batch_size = batch_size
        self.device = pick_device(device)
        self.model, self.tokenizer = _load(self.path, self.device)
        # Some tokenizers report a huge model_max_length; the position table is the real limit.
        limits = [
            self.tokenizer.model_max_length,
            getattr(self.model.config, "max_position_embeddings", None),
        ]
        self.max_length = min([x for x in limits if isinstance(x, int) and 0 < x < 1_000_000] or [512])
        # Pair tokenizers emit token_type_ids; some classifiers' forward() does not take them.
        self.accepts = set(inspect.signature(self.model.forward).parameters)

    def score(
        self, sources: list[str], candidates: list[str], references: list[str] | None = None
    ) -> list[float]:
        import torch

        self._check_inputs(sources, candidates, references)
        out: list[float] = []
        with torch.no_grad():
            for sl in batches(len(candidates), self.batch_size):
                enc = self.tokenizer(
                    list(sources[sl]),
                    list(candidates[sl]),
                    truncation=True,
                    padding=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                ).to(self.device)
                enc = {k: v for k, v in enc.items() if k in self.accepts}
                with autocast(self.device):
                    logits = self.model(**enc).logits
                out.extend(torch.sigmoid(logits.float()[:, 0]).cpu().tolist())
        return out


def _load(path: Path, device: str) -> tuple[Any, Any]:
    """Model and tokenizer from local files only, in eval mode, with a pad token for batching."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)
        model, info = AutoModelForSequenceClassification.from_pretrained(
            path, local_files_only=True, trust_remote_code=False, output_loading_info=True
        )
    except (OSError, ValueError, KeyError) as e:
        raise RewardError(f"cannot load reward model from {path}: {e}") from e
    if info.get("missing_keys"):
        # A missing score head would be randomly initialised: a reward of noise that looks like a reward.
        raise RewardError(
            f"{path}: weights missing for {sorted(info['missing_keys'])}; is this a trained reward model?"
        )
    if tokenizer.pad_token is None:
        # GPT-2-style tokenizers have no pad token; EOS is the usual stand-in (TRL does the same).
        if tokenizer.eos_token is None:
            raise RewardError(
                f"{path}: the tokenizer has neither a pad nor an eos token, so batches cannot be padded"
            )
        tokenizer.pad_token = tokenizer.eos_token
    if model.config.pad_token_id is None:
        # Decoder classifiers find the last real token through pad_token_id; without it batching fails.
        model.config.pad_token_id = tokenizer.pad_token_id
    model.to(device)
    model.eval()
    return model, tokenizer
