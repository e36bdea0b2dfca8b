"""Tiny random policy directories for tests: one per supported architecture, built from a config and a
tokenizer trained on a few local texts (nothing is downloaded), saved with save_pretrained so they load
through `engine.models.load_policy` like a real model directory.

    from tiny_models import ARCHITECTURES, save_tiny_policy
    path = save_tiny_policy("llama", tmp_path / "llama")

Each build takes well under a second on one CPU thread: hidden size 32, one or two layers, a byte-level
BPE vocabulary of a few hundred tokens.
"""

from __future__ import annotations

from pathlib import Path

import torch

from engine.models import train_tokenizer

# Causal (decoder-only) and encoder-decoder architectures; "llama_chat" is a Llama whose tokenizer has a
# chat template.
CAUSAL = ("llama", "qwen2", "gpt_neox")
SEQ2SEQ = ("t5", "bart")
ARCHITECTURES = (*CAUSAL, *SEQ2SEQ)

USER, ASSISTANT = "<|user|>", "<|assistant|>"
# A small Jinja chat template: each turn is role marker + content + EOS; the generation prompt opens the
# assistant turn.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|eos|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

DEFAULT_TEXTS = [
    "12 + 7 => 19",
    "3 * 4 => 12",
    "the cat sat on the mat => le chat est sur le tapis",
    "a red house => une maison rouge",
    "translate: good morning => bonjour",
    "what is 40 - 2 => 38",
    f"{USER}{ASSISTANT}",
]


def _tokenizer(texts: list[str] | None, vocab_size: int, max_length: int, chat: bool):
    tok = train_tokenizer(list(texts or DEFAULT_TEXTS) + [f"{USER}{ASSISTANT}"] * 4, vocab_size)
    tok.model_max_length = max_length
    if chat:
        tok.chat_template = CHAT_TEMPLATE
    return tok


def _config(arch: str, tok, max_length: int):
    """A tiny transformers config of `arch` sized to `tok`, with pad/EOS (and decoder start) wired to it."""
    from transformers import BartConfig, GPTNeoXConfig, LlamaConfig, Qwen2Config, T5Config

    pad, eos, vocab = tok.pad_token_id, tok.eos_token_id, len(tok)
    special = dict(pad_token_id=pad, eos_token_id=eos, bos_token_id=eos)
    causal = dict(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=max_length,
        tie_word_embeddings=False,
        **special,
    )
    if arch in ("llama", "llama_chat"):
        return LlamaConfig(num_key_value_heads=2, **causal)
    if arch == "qwen2":
        return Qwen2Config(num_key_value_heads=2, **causal)
    if arch == "gpt_neox":
        return GPTNeoXConfig(**causal)
    if arch == "t5":
        # T5 has no position limit of its own (relative attention): the tokenizer's model_max_length names it.
        return T5Config(
            vocab_size=vocab,
            d_model=32,
            d_kv=8,
            d_ff=64,
            num_layers=2,
            num_decoder_layers=2,
            num_heads=4,
            pad_token_id=pad,
            eos_token_id=eos,
            decoder_start_token_id=pad,
        )
    if arch == "bart":
        return BartConfig(
            vocab_size=vocab,
            d_model=32,
            encoder_layers=1,
            decoder_layers=1,
            encoder_attention_heads=4,
            decoder_attention_heads=4,
            encoder_ffn_dim=64,
            decoder_ffn_dim=64,
            max_position_embeddings=max_length,
            decoder_start_token_id=eos,
            forced_eos_token_id=None,
            forced_bos_token_id=None,
            **special,
        )
    raise ValueError(f"unknown tiny architecture {arch!r}; one of {(*ARCHITECTURES, 'llama_chat')}")


def build_tiny_policy(
    arch: str,
    texts: list[str] | None = None,
    vocab_size: int = 300,
    max_length: int = 128,
    seed: int = 0,
    chat: bool | None = None,
):
    """(model, tokenizer) of `arch` with random weights; `chat` (default: arch == "llama_chat") sets
    CHAT_TEMPLATE on the tokenizer."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    chat = arch == "llama_chat" if chat is None else chat
    tok = _tokenizer(texts, vocab_size, max_length, chat)
    cfg = _config(arch, tok, max_length)
    torch.manual_seed(seed)
    auto = AutoModelForSeq2SeqLM if arch in SEQ2SEQ else AutoModelForCausalLM
    return auto.from_config(cfg), tok


def save_tiny_policy(
    arch: str,
    path: str | Path,
    texts: list[str] | None = None,
    vocab_size: int = 300,
    max_length: int = 128,
    seed: int = 0,
    chat: bool | None = None,
) -> Path:
    """Save a tiny random `arch` policy (model + tokenizer) into `path` and return it."""
    path = Path(path)
    model, tok = build_tiny_policy(arch, texts, vocab_size, max_length, seed, chat)
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    return path
