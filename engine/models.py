"""Policies: tiny GPT-2-style models built from scratch, or any local Hugging Face directory of a causal
(decoder-only: GPT-2, Llama, Qwen2, GPT-NeoX, ...) or encoder-decoder (T5, BART, ...) language model.

Also holds the device choice (CUDA with bf16 autocast when present, CPU otherwise) and the
prompt/target tokenisation and truncation shared by Grow, Improve and the drift audit, so all three see
identical token ids:
- prompt: `prompt_template` filled with the source, wrapped in the tokenizer's chat template as one user
  turn when `chat_template` is on; a causal prompt starts with the special tokens the tokenizer puts before
  a text (Llama's BOS), an encoder input carries all of them (T5's trailing EOS, BART's BOS/EOS).
- target: the answer's tokens + EOS (for an encoder-decoder policy, the decoder labels).
- truncation (`Policy.fit_prompt`): a prompt that does not fit keeps its tail, after those leading special
  tokens; a causal policy reserves room for the answer (see engine/improve.py `_encode` for how much).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

from transformers import (  # noqa: E402
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedTokenizerFast,
)

from .config import ConfigError, ScratchModel  # noqa: E402
from .device import autocast, pick_device  # noqa: E402,F401

PAD, EOS = "<|pad|>", "<|eos|>"
# Sequence limit of a model whose config names no position limit (T5's relative attention has none): its
# tokenizer's model_max_length, at most this (T5's pre-training length; longer costs quadratic memory).
DEFAULT_MAX_LENGTH = 512
# Config fields that hold a model's position limit, by architecture family.
_LENGTH_FIELDS = ("n_positions", "max_position_embeddings", "n_ctx", "max_seq_len", "seq_length")


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
        activation_function="gelu_pytorch_tanh",  # the tanh GELU of gelu_new as one fused torch op: faster
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
    chat_template: bool = False  # wrap the filled prompt_template in the tokenizer's chat template

    @property
    def max_length(self) -> int:
        """Longest sequence the model takes: prompt + answer for a causal policy; each of the encoder input
        and the decoder labels for an encoder-decoder one. The config's position limit (n_positions,
        max_position_embeddings, n_ctx, max_seq_len or seq_length); for a model whose config has none
        (T5), the tokenizer's model_max_length capped at DEFAULT_MAX_LENGTH."""
        cfg = self.model.config
        text_cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
        for c in (cfg, text_cfg):
            for name in _LENGTH_FIELDS:
                v = getattr(c, name, None)
                if isinstance(v, int) and v > 0:
                    return v
        return min(int(self.tokenizer.model_max_length or DEFAULT_MAX_LENGTH), DEFAULT_MAX_LENGTH)

    @property
    def is_seq2seq(self) -> bool:
        """An encoder-decoder policy (T5, BART): the prompt goes to the encoder, the answer is decoded."""
        return bool(getattr(self.model.config, "is_encoder_decoder", False))

    def fit_prompt(self, ids: list[int], answer_room: int) -> list[int]:
        """The prompt as the model sees it, leaving `answer_room` positions for the answer: the tail is
        kept (the end of a prompt holds the separator the answer follows, and with a chat template the
        opened assistant turn), after the leading special tokens (BOS) when the prompt starts with them.
        An encoder-decoder policy decodes the answer in its own sequence, so the encoder input keeps up to
        max_length tokens whatever `answer_room` is. At least one prompt token is always kept."""
        limit = self.max_length if self.is_seq2seq else self.max_length - answer_room
        if len(ids) <= max(limit, 1):
            return ids
        head = self._leading_special_ids
        if head and ids[: len(head)] == head and limit > len(head):
            return head + ids[len(ids) - (limit - len(head)) :]
        return ids[-limit:] if limit > 0 else ids[-1:]

    @cached_property
    def _leading_special_ids(self) -> list[int]:
        """The special tokens the tokenizer puts before a text (Llama's BOS); [] for most tokenizers."""
        plain = self.tokenizer("a", add_special_tokens=False)["input_ids"]
        full = self.tokenizer("a")["input_ids"]
        special = set(self.tokenizer.all_special_ids)
        for i in range(len(full) - len(plain) + 1):
            if full[i : i + len(plain)] == plain:
                return full[:i] if all(t in special for t in full[:i]) else []
        return []

    def prompt_text(self, source: str) -> str:
        """The prompt as text: the filled template, as one user turn of the chat template when it is on
        (the assistant turn opened, so the answer follows)."""
        text = self.prompt_template.format(source=source)
        if not self.chat_template:
            return text
        if not getattr(self.tokenizer, "chat_template", None):
            raise ConfigError("policy.chat_template", True, "the policy's tokenizer has no chat template")
        return self.tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
        )

    def prompt_ids(self, source: str) -> list[int]:
        """Token ids of the prompt, untruncated (see the module docstring for the special tokens)."""
        text = self.prompt_text(source)
        if self.chat_template:  # the template writes its own special tokens, as apply_chat_template does
            return self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if self.is_seq2seq:
            return self.tokenizer(text)["input_ids"]
        return self._leading_special_ids + self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def target_ids(self, target: str) -> list[int]:
        """The answer's token ids + EOS: what Improve trains on and the drift audit scores."""
        return self.tokenizer(target, add_special_tokens=False)["input_ids"] + [self.tokenizer.eos_token_id]


def load_policy(
    path: str | Path,
    prompt_template: str,
    device: str | None = None,
    trainable: bool = False,
    chat_template: bool = False,
) -> Policy:
    """Load a local model directory: AutoModelForSeq2SeqLM when its config is encoder-decoder (T5, BART),
    else AutoModelForCausalLM; nothing is fetched from a hub and remote code stays off. With
    `chat_template` (policy.chat_template) the tokenizer must have a chat template (ConfigError otherwise).

    A LoRA checkpoint (adapter_config.json) loads as its base with the adapter merged in, or, with
    `trainable`, unmerged with the adapter trainable (engine/lora.py)."""
    path = Path(path)
    if (path / "adapter_config.json").is_file():
        from .lora import load_adapter_policy

        return load_adapter_policy(
            path,
            load_policy,
            trainable=trainable,
            prompt_template=prompt_template,
            device=device,
            chat_template=chat_template,
        )
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"policy directory {path} has no config.json (expected a save_pretrained directory)"
        )
    device = device or pick_device()
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)
    if chat_template and not getattr(tok, "chat_template", None):
        raise ConfigError(
            "policy.chat_template", True, f"the tokenizer in {path} has no chat template (turn it off)"
        )
    if tok.eos_token_id is None:
        raise ValueError(f"the tokenizer in {path} has no EOS token: restgov ends every answer with EOS")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    config = AutoConfig.from_pretrained(path, local_files_only=True, trust_remote_code=False)
    auto = AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM
    model = auto.from_pretrained(path, config=config, local_files_only=True, trust_remote_code=False)
    model.to(device)
    return Policy(model, tok, device, prompt_template, chat_template)


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
