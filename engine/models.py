"""Policies: tiny GPT-2-style models built from scratch, or any local Hugging Face causal-LM directory.

Also holds the device choice (CUDA with bf16 autocast when present, CPU otherwise) and the
prompt/target tokenisation shared by training and sampling, so both see identical token ids.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedTokenizerFast,
)

from .config import ScratchModel  # noqa: E402
from .device import autocast, pick_device  # noqa: E402,F401

PAD, EOS = "<|pad|>", "<|eos|>"


def train_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE over the campaign's own text; digits stay single tokens so arithmetic is learnable."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, eos_token=EOS, bos_token=EOS)


def build_scratch_policy(
    spec: ScratchModel, texts: list[str], seed: int
) -> tuple[GPT2LMHeadModel, PreTrainedTokenizerFast]:
    tok = train_tokenizer(texts, spec.vocab_size)
    torch.manual_seed(seed)
    cfg = GPT2Config(
        vocab_size=len(tok),
        n_positions=spec.max_length,
        n_embd=spec.n_embd,
        n_layer=spec.n_layer,
        n_head=spec.n_head,
        bos_token_id=tok.eos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    return GPT2LMHeadModel(cfg), tok


@dataclass
class Policy:
    model: torch.nn.Module
    tokenizer: PreTrainedTokenizerFast
    device: str
    prompt_template: str

    @property
    def max_length(self) -> int:
        return int(
            getattr(self.model.config, "n_positions", None)
            or getattr(self.model.config, "max_position_embeddings", 1024)
        )

    @property
    def is_seq2seq(self) -> bool:
        """An encoder-decoder policy (T5, BART): the prompt goes to the encoder, the answer is decoded."""
        return bool(getattr(self.model.config, "is_encoder_decoder", False))

    def fit_prompt(self, ids: list[int], answer_room: int) -> list[int]:
        """The prompt as the model sees it, leaving `answer_room` positions for the answer: the tail is
        kept (the end of a prompt holds the separator the answer follows)."""
        limit = self.max_length - answer_room
        return ids[-limit:] if limit > 0 else ids[-1:]

    def prompt_ids(self, source: str) -> list[int]:
        return self.tokenizer(self.prompt_template.format(source=source), add_special_tokens=False)[
            "input_ids"
        ]

    def target_ids(self, target: str) -> list[int]:
        return self.tokenizer(target, add_special_tokens=False)["input_ids"] + [self.tokenizer.eos_token_id]


def load_policy(path: str | Path, prompt_template: str, device: str | None = None) -> Policy:
    """Load a local causal-LM directory; nothing is fetched from a hub and remote code stays off."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"policy directory {path} has no config.json (expected a save_pretrained directory)"
        )
    device = device or pick_device()
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, trust_remote_code=False)
    model.to(device)
    return Policy(model, tok, device, prompt_template)


def save_policy(policy: Policy, out_dir: str | Path, meta: dict | None = None) -> Path:
    """save_pretrained (safetensors) into a temp dir, then rename into place: a crash leaves no half
    checkpoint."""
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    policy.model.save_pretrained(tmp, safe_serialization=True)
    policy.tokenizer.save_pretrained(tmp)
    (tmp / "restgov.json").write_text(json.dumps(meta or {}, indent=2))
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)
    return out_dir


def param_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
