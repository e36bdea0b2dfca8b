"""A learned reward from a local Hugging Face sequence classifier with one logit (what TRL's RewardTrainer
saves): score = sigmoid(logit) of the input the model was trained on.

The input is built the way the model saw its training data (`format`):

- chat: the tokenizer's chat template over a user turn (the prompt) and an assistant turn (the candidate),
  tokenized as `apply_chat_template(messages, tokenize=True)` does, as TRL's RewardTrainer tokenizes
  conversational preference data;
- text: one string, prompt + candidate + EOS, tokenized with the tokenizer's own special tokens, as TRL's
  RewardTrainer tokenizes standard preference data ({"prompt", "chosen", "rejected"} strings: it appends
  EOS to each completion unless it ends with one, then tokenizes prompt + completion);
- pair: the text pair tokenizer(prompt, candidate), as cross-encoders (BERT-style classifiers trained on
  sentence pairs) are trained.

`auto` picks chat when the tokenizer has a chat template; text when the directory was saved by TRL's
RewardTrainer (its training_args.bin or model card says so) or the tokenizer has no pair separator
(decoder models: GPT-2, Llama, ...); pair otherwise (an encoder tokenizer that separates two texts with a
SEP token, and no sign of TRL).
"""

from __future__ import annotations

import hashlib
import inspect
import json
from pathlib import Path
from typing import Any

from .base import RewardError, RewardModel, autocast, batches, hash_dir, pick_device

FORMATS = ("auto", "chat", "text", "pair")
DEFAULT_TEMPLATE = "{source}"


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


def trained_by_trl(path: str | Path) -> bool:
    """True when the directory says TRL's RewardTrainer saved it: Trainer.save_model writes the training
    arguments (training_args.bin, a pickle whose class path names trl's RewardConfig), and checkpoints carry
    a model card tagged reward-trainer. The pickle is searched as bytes, never unpickled."""
    p = Path(path)
    args = p / "training_args.bin"
    if args.is_file() and args.stat().st_size < (64 << 20):
        data = args.read_bytes()
        if b"trl.trainer.reward_config" in data or (b"trl" in data and b"RewardConfig" in data):
            return True
    card = p / "README.md"
    if card.is_file() and card.stat().st_size < (1 << 20):
        text = card.read_text(encoding="utf-8", errors="replace")
        return "reward-trainer" in text and "trl" in text
    return False


def resolve_format(path: str | Path, tokenizer: Any, fmt: str = "auto") -> tuple[str, str]:
    """(format, why): the input format the model is scored in, and the reason, for `fmt` auto; `fmt` itself
    otherwise (chat needs a chat template)."""
    if fmt not in FORMATS:
        raise RewardError(f"reward.format = {fmt!r}: use one of {list(FORMATS)}")
    has_chat = bool(getattr(tokenizer, "chat_template", None))
    if fmt == "chat" and not has_chat:
        raise RewardError(
            f"{path}: reward.format = 'chat' but the tokenizer has no chat template "
            "(use 'text' for prompt + candidate + EOS, or 'pair' for a cross-encoder)"
        )
    if fmt != "auto":
        return fmt, "set by reward.format"
    if has_chat:
        return "chat", "the tokenizer has a chat template (TRL's conversational format)"
    if trained_by_trl(path):
        return "text", "saved by TRL's RewardTrainer (prompt + candidate + EOS)"
    separates_pairs = getattr(
        tokenizer, "sep_token", None
    ) is not None and tokenizer.num_special_tokens_to_add(pair=True) > tokenizer.num_special_tokens_to_add(
        pair=False
    )
    if separates_pairs:
        return "pair", "an encoder tokenizer that separates two texts with a SEP token (cross-encoder)"
    return "text", "a tokenizer without a pair separator (TRL's standard format: prompt + candidate + EOS)"


def hf_version(path: str | Path, fmt: str = "auto", prompt_template: str | None = None) -> str:
    """Content hash of the directory, plus the format setting and prompt template when they differ from the
    defaults: they change the scores as much as the weights do."""
    base = hash_dir(path)
    if fmt == "auto" and prompt_template in (None, DEFAULT_TEMPLATE):
        return base
    h = hashlib.sha256(f"{base}\0{fmt}\0{prompt_template or DEFAULT_TEMPLATE}".encode())
    return h.hexdigest()[:16]


class HFSequenceClassificationReward(RewardModel):
    """sigmoid(logit) of AutoModelForSequenceClassification on the input format it was trained on."""

    needs_reference = False

    def __init__(
        self,
        path: str | Path,
        batch_size: int = 64,
        device: str | None = None,
        format: str = "auto",
        prompt_template: str | None = None,
    ):
        self.path = Path(path)
        check_classifier_dir(self.path)
        if format not in FORMATS:
            raise RewardError(f"reward.format = {format!r}: use one of {list(FORMATS)}")
        self.prompt_template = prompt_template or DEFAULT_TEMPLATE
        if "{source}" not in self.prompt_template:
            raise RewardError(f"reward.prompt_template = {self.prompt_template!r}: must contain {{source}}")
        try:
            self.prompt_template.format(source="")
        except (KeyError, IndexError, ValueError) as e:
            raise RewardError(
                f"reward.prompt_template = {self.prompt_template!r}: {{source}} is its only field; write "
                f"other braces twice ({type(e).__name__}: {e})"
            ) from e
        self.name = f"hf:{self.path.resolve().name}"
        # Hashed before loading: the bytes we are about to trust.
        self.version = hf_version(self.path, format, prompt_template)
        self.batch_size = batch_size
        self.device = pick_device(device)
        self.model, self.tokenizer = _load(self.path, self.device)
        self.format, self.format_reason = resolve_format(self.path, self.tokenizer, format)
        if self.format == "text" and self.tokenizer.eos_token is None:
            self.format_reason += "; the tokenizer has no EOS token, so none is appended"
        # Some tokenizers report a huge model_max_length; the position table is the real limit.
        limits = [
            self.tokenizer.model_max_length,
            getattr(self.model.config, "max_position_embeddings", None),
        ]
        self.max_length = min([x for x in limits if isinstance(x, int) and 0 < x < 1_000_000] or [512])
        # Pair tokenizers emit token_type_ids; some classifiers' forward() does not take them.
        self.accepts = set(inspect.signature(self.model.forward).parameters)

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "format": self.format,
            "format_reason": self.format_reason,
            "prompt_template": self.prompt_template,
        }

    def prompt(self, source: str) -> str:
        # str.format, as the policy applies policy.prompt_template: the same template gives the same prompt.
        return self.prompt_template.format(source=source)

    def encode(self, sources: list[str], candidates: list[str]) -> Any:
        """The padded batch the model scores: the same token ids as its training format gives each pair."""
        tok = self.tokenizer
        kw = dict(truncation=True, padding=True, max_length=self.max_length, return_tensors="pt")
        prompts = [self.prompt(s) for s in sources]
        if self.format == "pair":
            return tok(prompts, list(candidates), **kw)
        # One sequence read at its last token: a cut keeps the end (the candidate and EOS), not the start.
        side, tok.truncation_side = tok.truncation_side, "left"
        try:
            if self.format == "chat":
                convs = [
                    [{"role": "user", "content": p}, {"role": "assistant", "content": c}]
                    for p, c in zip(prompts, candidates, strict=True)
                ]
                return tok.apply_chat_template(convs, tokenize=True, return_dict=True, **kw)
            eos = tok.eos_token or ""
            texts = [
                p + c + (eos if eos and not c.endswith(eos) else "") for p, c in zip(prompts, candidates)
            ]
            return tok(texts, **kw)
        finally:
            tok.truncation_side = side

    def score(
        self, sources: list[str], candidates: list[str], references: list[str] | None = None
    ) -> list[float]:
        import torch

        self._check_inputs(sources, candidates, references)
        out: list[float] = []
        with torch.no_grad():
            for sl in batches(len(candidates), self.batch_size):
                enc = self.encode(list(sources[sl]), list(candidates[sl])).to(self.device)
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
