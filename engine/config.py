"""Campaign configuration: one TOML file loaded into typed dataclasses.

Every field is checked on construction; a bad value raises ConfigError naming the field, the value
and what is allowed, so `restgov run` fails before any compute starts. `config_errors` runs the same checks
but collects every error instead of stopping at the first (a form shows them all at once).

Every field carries its documentation in `metadata["help"]`: what it is and why its default is what it is.
The README's config reference (engine.config_doc) and the dashboard's config forms are generated from it.
"""

from __future__ import annotations

import contextvars
import dataclasses
import tomllib
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PAPER_THRESHOLDS = [0.0, 0.7, 0.8, 0.9, 0.95, 0.99]


class ConfigError(ValueError):
    """A campaign config value is invalid. `field` is the dotted TOML path."""

    def __init__(self, field: str, value: Any, allowed: str):
        self.field, self.value, self.allowed = field, value, allowed
        super().__init__(f"{field} = {value!r}: {allowed}")


def doc(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    factory: Callable[[], Any] | None = None,
    choices: Sequence[str] | None = None,
) -> Any:
    """A dataclass field with its help (what it is, why the default) and allowed values in its metadata."""
    meta: dict[str, Any] = {"help": help}
    if choices is not None:
        meta["choices"] = list(choices)
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


# While config_errors runs, the list its errors go to; otherwise None and the first error is raised.
_COLLECT: contextvars.ContextVar[list[ConfigError] | None] = contextvars.ContextVar("_COLLECT", default=None)


def _fail(err: ConfigError) -> None:
    bucket = _COLLECT.get()
    if bucket is None:
        raise err
    bucket.append(err)


def _check(ok: bool, name: str, value: Any, allowed: str) -> None:
    if not ok:
        _fail(ConfigError(name, value, allowed))


def _increasing(name: str, xs: list[float]) -> None:
    _check(all(b > a for a, b in zip(xs, xs[1:])), name, xs, "must increase strictly")


@dataclass
class ScratchModel:
    """A tiny GPT-2-style policy trained from scratch by the bootstrap step."""

    n_layer: int = doc(
        2,
        "Transformer blocks. Tiny on purpose, with n_head and n_embd: the demo must train on 2 CPU cores "
        "in minutes.",
    )
    n_head: int = doc(
        4,
        "Attention heads per block; n_embd must be a multiple of it. 4 heads of 32 dimensions at n_embd 128: "
        "small, yet more than one attention pattern per block.",
    )
    n_embd: int = doc(
        128, "Width of the hidden states. 128 keeps the policy tiny, so BC and Improve run on CPU in minutes."
    )
    vocab_size: int = doc(
        384,
        "Byte-level BPE vocabulary, trained on the campaign's training text; at least 260 (256 bytes + "
        "specials). 384 adds 126 merges to the bytes, pad and EOS: enough for the demos' short texts.",
    )
    max_length: int = doc(
        96,
        "Prompt + answer tokens the model can see; Grow cuts prompts to max_length - grow.max_new_tokens. "
        "The paper capped sequences at 128; 96 fits the demos' sources and answers.",
    )

    def __post_init__(self) -> None:
        for f in ("n_layer", "n_head", "n_embd", "vocab_size", "max_length"):
            _check(getattr(self, f) > 0, f"policy.scratch.{f}", getattr(self, f), "must be > 0")
        _check(
            self.n_embd % self.n_head == 0,
            "policy.scratch.n_embd",
            self.n_embd,
            "must be a multiple of n_head",
        )
        _check(
            self.vocab_size >= 260,
            "policy.scratch.vocab_size",
            self.vocab_size,
            "must be >= 260 (256 bytes + specials)",
        )


@dataclass
class Bootstrap:
    """Behavioural cloning (NLL) on D; skipped when the policy is already trained."""

    epochs: float = doc(
        3.0,
        "Passes over D for behavioural cloning (part epochs allowed). 3 teaches the tiny scratch policy the "
        "answer format on the demo sets without a long CPU run.",
    )
    lr: float = doc(
        1e-3,
        "AdamW learning rate of BC. 1e-3 suits a tiny model trained from scratch; a pretrained policy "
        "(policy.path with force) wants less.",
    )
    batch_size: int = doc(
        32, "Pairs per BC optimizer step. 32 as improve.batch_size, so BC and Improve steps cost the same."
    )
    force: bool = doc(
        False,
        "Run BC even on a pretrained policy directory (policy.path). Off: a given model is taken as already "
        "trained, and BC would only cost time.",
    )
    early_stopping: bool = doc(
        False,
        "Validate every improve.eval_every steps and keep the best BC weights. Off: with a noisy validation "
        "set it can stop a run whose learning rate is still high.",
    )

    def __post_init__(self) -> None:
        _check(self.epochs > 0, "policy.bootstrap.epochs", self.epochs, "must be > 0")
        _check(self.lr > 0, "policy.bootstrap.lr", self.lr, "must be > 0")
        _check(self.batch_size > 0, "policy.bootstrap.batch_size", self.batch_size, "must be > 0")


@dataclass
class PolicyConfig:
    path: str | None = doc(
        None,
        "Local Hugging Face directory (save_pretrained) of a causal LM or an encoder-decoder LM (T5, BART). "
        "Give exactly one of it and [policy.scratch]; not set by default: the scratch model needs no model "
        "files.",
    )
    scratch: ScratchModel | None = doc(
        None,
        "A tiny GPT-2 trained from scratch by the bootstrap step, instead of policy.path. A config with no "
        "[policy] table gets this model with its defaults.",
    )
    bootstrap: Bootstrap = doc(
        help="Behavioural cloning (NLL) on D before the first Grow: BC (G=0, I=0) is the baseline every "
        "result is compared against. Runs for scratch models, or for policy.path with force = true.",
        factory=Bootstrap,
    )
    prompt_template: str = doc(
        "{source} => ",
        "What the policy sees before it writes the answer and EOS; must contain {source}. A short plain "
        "separator, since a scratch policy has no chat format to follow.",
    )
    chat_template: bool = doc(
        False,
        "Wrap the filled prompt_template in the tokenizer's chat template as one user turn, with the "
        "assistant turn opened (add_generation_prompt), for instruct models. Off: a scratch or base model "
        "has no chat format; the tokenizer must have one when on.",
    )

    def __post_init__(self) -> None:
        _check(
            (self.path is None) != (self.scratch is None),
            "policy",
            {"path": self.path, "scratch": self.scratch is not None},
            "give exactly one of policy.path (a local model directory) or [policy.scratch]",
        )
        _check(
            "{source}" in self.prompt_template,
            "policy.prompt_template",
            self.prompt_template,
            "must contain {source}",
        )
        _check(
            not (self.chat_template and self.scratch is not None),
            "policy.chat_template",
            self.chat_template,
            "a [policy.scratch] model's tokenizer has no chat template; use it with policy.path",
        )


@dataclass
class DataConfig:
    train: str = doc(
        "",
        "D: the Grow sources and their references, a .jsonl, .csv or .parquet file (bad rows are reported "
        "with file and line). Required: a campaign samples from its own data.",
    )
    validation: str = doc(
        "",
        "D_eval: held-out pairs. Required: Improve keeps the checkpoint with the best held-out reward, and "
        "the stopping criteria read it.",
    )
    test: str | None = doc(
        None, "Pairs for the final report only. Not set: the final report falls back to validation."
    )
    bootstrap: str | None = doc(
        None,
        "Pairs for bootstrap BC when they differ from train (ReST-EM: a few worked solutions, many problems "
        "whose reference is just the answer). Not set: BC uses train.",
    )
    source_field: str = doc("source", "Column of the source x; 'source' is what the demo recipes write.")
    reference_field: str = doc(
        "reference", "Column of the reference y; 'reference' is what the demo recipes write."
    )
    id_field: str | None = doc(
        None,
        "Column of a unique row id (duplicates are reported). Not set: the 0-based row number, which every "
        "file has.",
    )

    def __post_init__(self) -> None:
        _check(
            bool(self.train),
            "data.train",
            self.train,
            "a path to a .jsonl, .csv or .parquet file is required",
        )
        _check(
            bool(self.validation), "data.validation", self.validation, "a path is required (held-out reward)"
        )
        for name in ("train", "validation", "test", "bootstrap"):
            p = getattr(self, name)
            if p:
                _check(
                    Path(p).suffix.lower() in (".jsonl", ".csv", ".parquet"),
                    f"data.{name}",
                    p,
                    "must end in .jsonl, .csv or .parquet",
                )


REWARD_KINDS = ("hf", "callable", "exact_match", "numeric", "chrf", "minilm")
REWARD_FORMATS = ("auto", "chat", "text", "pair")
GROW_BACKENDS = ("hf", "vllm", "auto")


def _check_provider(p: Any, table: str) -> None:
    """The checks every reward provider table shares ([reward], each [[audit]]), naming `table.field`."""
    _check(p.kind in REWARD_KINDS, f"{table}.kind", p.kind, f"one of {list(REWARD_KINDS)}")
    if p.kind in ("hf", "minilm"):
        _check(bool(p.path), f"{table}.path", p.path, f"a model directory is required for kind {p.kind!r}")
    if p.kind == "callable":
        _check(
            bool(p.function) and ":" in str(p.function),
            f"{table}.function",
            p.function,
            "'module:function' is required for kind 'callable'",
        )
    _check(p.batch_size > 0, f"{table}.batch_size", p.batch_size, "must be > 0")
    _check(p.format in REWARD_FORMATS, f"{table}.format", p.format, f"one of {list(REWARD_FORMATS)}")
    if p.prompt_template is not None:
        _check(
            "{source}" in p.prompt_template,
            f"{table}.prompt_template",
            p.prompt_template,
            "must contain {source}",
        )


@dataclass
class RewardConfig:
    kind: str = doc(
        "exact_match",
        "hf (sequence classifier with one logit, e.g. TRL RewardTrainer output), callable, exact_match, "
        "numeric, chrf or minilm. exact_match needs no model and no code, so a fresh config runs as is.",
        choices=REWARD_KINDS,
    )
    path: str | None = doc(
        None,
        "hf: the sequence-classification directory; minilm: the trained head directory. Only those kinds "
        "need it, so it is not set by default.",
    )
    function: str | None = doc(
        None,
        "callable: 'module:function', called as fn(sources, candidates[, references]) and returning floats "
        "in [0, 1]. Only the callable kind needs it.",
    )
    batch_size: int = doc(
        64,
        "Candidates per reward call. 64 keeps an hf or MiniLM forward pass small in CPU memory; raise it on "
        "a GPU.",
    )
    format: str = doc(
        "auto",
        "hf: the input the classifier scores, as it was trained. chat: the tokenizer's chat template over a "
        "user turn (the prompt) and an assistant turn (the candidate); text: prompt + candidate + EOS as one "
        "string; pair: the text pair (prompt, candidate) of a cross-encoder. auto: chat when the tokenizer "
        "has a chat template, else text when TRL's RewardTrainer saved the directory or the tokenizer has "
        "no pair separator (decoders), else pair; TRL's RewardTrainer tokenizes exactly so.",
        choices=REWARD_FORMATS,
    )
    prompt_template: str | None = doc(
        None,
        "hf: the prompt the candidate follows, with {source} in it: the prompt string of the reward "
        "model's training pairs. Not set: the policy's prompt_template in a campaign (a reward model "
        "trained on the policy's own prompts), '{source}' elsewhere (`restgov score`).",
    )
    tests: list[str] = doc(
        help="Extra reward unit tests (module names or .py paths), merged into the default suite the "
        "reward_tests gate runs. Empty: the default suite (repetitions, permutations, ...) applies alone.",
        factory=list,
    )

    def __post_init__(self) -> None:
        _check_provider(self, "reward")


@dataclass
class GrowConfig:
    samples_per_source: int = doc(
        8,
        "K, candidates sampled per source at each Grow. The paper used 100 (IWSLT) down to 25 (WMT); 8 "
        "keeps a CPU Grow to minutes and still spreads each source's rewards for the filter.",
    )
    temperature: float = doc(
        0.8, "Sampling temperature. 0.8 is the paper's: it covered a broad range of rewards."
    )
    top_p: float = doc(
        1.0,
        "Nucleus sampling mass, in (0, 1]. 1.0 turns it off, so temperature alone shapes the samples, as "
        "in the paper's temperature sampling.",
    )
    max_new_tokens: int = doc(
        48,
        "Tokens a candidate may have, at Grow and at evaluation. 48 fits the demos' answers and leaves "
        "half of the scratch model's 96 positions to the prompt.",
    )
    batch_size: int = doc(
        64,
        "Sequences per sampling batch (sources x K). Batched calls ran 7 to 11 times faster than one per "
        "source in bench/RESULTS.md; 64 (8 sources at K = 8) keeps the padded batch small on CPU.",
    )
    shard_sources: int = doc(
        256,
        "Sources per Parquet shard: the unit a resumed Grow restarts from. 256 sources at K = 8 took 6 to "
        "39 s on 2 CPU cores in bench/RESULTS.md, so a crash loses little and the file count stays low.",
    )
    batch_tokens: int | None = doc(
        None,
        "Cap on sequences x (prompt + max_new_tokens) tokens per sampling batch, on top of batch_size: long "
        "prompts then get smaller batches, so a Grow batch's memory stays bounded. Not set: batch_size "
        "alone.",
    )
    backend: str = doc(
        "hf",
        "Sampler of Grow, evaluation and Best-of-N. hf: the transformers model, anywhere. vllm: vLLM's "
        "offline LLM.generate, needs CUDA and `pip install restgov[vllm]` (refused at load otherwise). "
        "auto: vllm when both are present, else hf. hf by default: the same sampler on every machine.",
        choices=GROW_BACKENDS,
    )

    def __post_init__(self) -> None:
        _check(
            self.samples_per_source >= 1, "grow.samples_per_source", self.samples_per_source, "must be >= 1"
        )
        _check(self.temperature > 0, "grow.temperature", self.temperature, "must be > 0")
        _check(0 < self.top_p <= 1, "grow.top_p", self.top_p, "must be in (0, 1]")
        _check(self.max_new_tokens >= 1, "grow.max_new_tokens", self.max_new_tokens, "must be >= 1")
        _check(self.batch_size >= 1, "grow.batch_size", self.batch_size, "must be >= 1")
        _check(self.shard_sources >= 1, "grow.shard_sources", self.shard_sources, "must be >= 1")
        _check(
            self.batch_tokens is None or self.batch_tokens >= 1,
            "grow.batch_tokens",
            self.batch_tokens,
            "must be >= 1",
        )
        _check(self.backend in GROW_BACKENDS, "grow.backend", self.backend, f"one of {list(GROW_BACKENDS)}")


FILTER_RULES = ("thresholds", "percentile", "interpolation", "quantile", "binary")


@dataclass
class LoraSpec:
    """[improve.lora]: train low-rank adapters (peft) instead of every weight of the policy."""

    r: int = doc(
        8,
        "Rank of each adapter. 8: a common small default; the adapters stay a tiny share of a large policy.",
    )
    alpha: float = doc(16.0, "Scale of the adapter's output is alpha / r. 16 = 2 r, the usual choice.")
    dropout: float = doc(0.05, "Dropout on the adapter's input while training, in [0, 1). 0.05: light.")
    target_modules: list[str] | None = doc(
        None,
        "Names of the linear layers that get adapters (e.g. ['q_proj', 'v_proj']). Not set: peft's choice "
        "for the architecture (it knows Llama, Qwen2, GPT-2, GPT-NeoX, T5, BART and more).",
    )

    def __post_init__(self) -> None:
        _check(self.r >= 1, "improve.lora.r", self.r, "must be >= 1")
        _check(self.alpha > 0, "improve.lora.alpha", self.alpha, "must be > 0")
        _check(0 <= self.dropout < 1, "improve.lora.dropout", self.dropout, "must be in [0, 1)")
        _check(
            self.target_modules is None or len(self.target_modules) > 0,
            "improve.lora.target_modules",
            self.target_modules,
            "must not be empty (leave it out for peft's choice)",
        )


@dataclass
class ImproveConfig:
    rule: str = doc(
        "thresholds",
        "The filter: thresholds (global, increasing: the paper's main rule), percentile or interpolation "
        "(per source, paper appendix A.7), quantile (RAFT) or binary (ReST-EM: keep reward 1).",
        choices=FILTER_RULES,
    )
    thresholds: list[float] = doc(
        help="thresholds rule: keep R > tau, one tau per Improve step, strictly increasing in [0, 1]; those "
        "at or below the mean reward of D_g are skipped. Default: the paper's sequence.",
        factory=lambda: list(PAPER_THRESHOLDS),
    )
    max_improve_steps: int | None = doc(
        None,
        "Cap on Improve steps per Grow. Not set: one per threshold above the mean reward, as in the paper.",
    )
    percentiles: list[float] = doc(
        help="percentile rule: keep R >= the source's p-th percentile, one p per Improve step. Per source, "
        "so hard sources keep data; gains saturate after p = 90 (paper A.7), hence the last value.",
        factory=lambda: [50.0, 70.0, 90.0],
    )
    gammas: list[float] = doc(
        help="interpolation rule: keep R >= g * max + (1 - g) * mean of the source's rewards, g rising "
        "per Improve step (paper A.7). g = 0 first keeps each source's above-mean candidates; then g rises "
        "toward its best.",
        factory=lambda: [0.0, 0.5, 0.8],
    )
    quantile: float = doc(
        0.8,
        "quantile rule (RAFT): keep R >= the step's global reward quantile, one Improve per Grow. 0.8 keeps "
        "the best fifth of D_g.",
    )
    loss: str = doc(
        "bc",
        "bc: NLL on the kept pairs, which beat GOLD, BVMPO and offline actor-critic in the paper; "
        "reward_weighted: J = E[r log p], ReST-EM's M-step.",
        choices=("bc", "reward_weighted"),
    )
    init: str = doc(
        "warm_start",
        "warm_start: each Improve starts from the previous policy (ReST). restart_from_base: each fine-tunes "
        "the base policy anew, to limit overfitting and drift (ReST-EM; mode = 'rest-em' sets it).",
        choices=("warm_start", "restart_from_base"),
    )
    lr: float = doc(
        5e-4,
        "Learning rate of the first Improve step. Half of BC's: Improve fine-tunes a trained policy on "
        "small, high-quality subsets, which overfit fast.",
    )
    lr_decay: float = doc(
        0.7,
        "Improve step n of the campaign uses lr * lr_decay**(n-1): the paper lowers the rate at each step. "
        "0.7 about halves it every two steps; mode = 'rest-em' sets 1.0 (every step restarts).",
    )
    epochs: float = doc(
        2.0,
        "Passes over the kept pairs per Improve step. 2, fewer than BC's 3: the filtered sets are small "
        "and overfit fast, and early stopping keeps the best checkpoint anyway.",
    )
    max_steps: int | None = doc(
        None, "Cap on optimizer steps per Improve step. Not set: epochs decide, whatever D_g's size."
    )
    batch_size: int = doc(
        32, "Pairs per Improve optimizer step. 32 as BC's: the batch bench/RESULTS.md measured on CPU."
    )
    original_mix: float = doc(
        1.0,
        "Share of the original pairs D added to each D_g (and filtered with it). 1.0: the paper keeps D in "
        "the mix so the policy does not collapse; mode = 'rest-em' sets 0.",
    )
    eval_every: int = doc(
        50,
        "Optimizer steps between validation checks (early stopping). 50 gives a few checks per Improve "
        "step on the demo sets without validation taking most of the CPU time.",
    )
    patience: int = doc(
        2,
        "Validation checks without improvement before an Improve step stops. 2 rides out one noisy check; "
        "the best checkpoint is kept either way.",
    )
    early_stopping: bool = doc(
        True,
        "Keep the checkpoint with the best validation reward. On: the paper fine-tunes 'while the reward "
        "on D_eval improves'.",
    )

    on_empty: str = doc(
        "skip",
        "What an Improve step whose filter keeps nothing does: skip (record it and go on with the next "
        "step; the policy stays as it was) or stop (end the campaign with that reason). skip: a threshold "
        "above every reward of one Grow is no reason to lose the campaign.",
        choices=("skip", "stop"),
    )
    lora: LoraSpec | None = doc(
        None,
        "[improve.lora]: fine-tune adapters (peft) instead of all weights; checkpoints are saved as "
        "adapters over the base policy. Not set: full fine-tuning, which suits the tiny demo policies.",
    )
    grad_accum: int = doc(
        1,
        "Micro-batches accumulated per optimizer step (batch_size pairs each): a large effective batch "
        "on a small GPU. 1: one micro-batch per step.",
    )
    gradient_checkpointing: bool = doc(
        False,
        "Recompute activations in the backward pass to save memory on a large policy, at about a third more "
        "compute. Off: the demo policies are small.",
    )

    def __post_init__(self) -> None:
        _check(self.grad_accum >= 1, "improve.grad_accum", self.grad_accum, "must be >= 1")
        _check(self.on_empty in ("skip", "stop"), "improve.on_empty", self.on_empty, "'skip' or 'stop'")
        _check(self.rule in FILTER_RULES, "improve.rule", self.rule, f"one of {list(FILTER_RULES)}")
        _check(len(self.thresholds) > 0, "improve.thresholds", self.thresholds, "must not be empty")
        _increasing("improve.thresholds", self.thresholds)
        _check(
            all(0 <= t <= 1 for t in self.thresholds),
            "improve.thresholds",
            self.thresholds,
            "values in [0, 1]",
        )
        _check(len(self.percentiles) > 0, "improve.percentiles", self.percentiles, "must not be empty")
        _increasing("improve.percentiles", self.percentiles)
        _check(
            all(0 <= p < 100 for p in self.percentiles),
            "improve.percentiles",
            self.percentiles,
            "values in [0, 100)",
        )
        _check(len(self.gammas) > 0, "improve.gammas", self.gammas, "must not be empty")
        _increasing("improve.gammas", self.gammas)
        _check(all(0 <= g <= 1 for g in self.gammas), "improve.gammas", self.gammas, "values in [0, 1]")
        _check(0 <= self.quantile < 1, "improve.quantile", self.quantile, "must be in [0, 1)")
        _check(self.loss in ("bc", "reward_weighted"), "improve.loss", self.loss, "'bc' or 'reward_weighted'")
        _check(
            self.init in ("warm_start", "restart_from_base"),
            "improve.init",
            self.init,
            "'warm_start' or 'restart_from_base'",
        )
        _check(self.lr > 0, "improve.lr", self.lr, "must be > 0")
        _check(0 < self.lr_decay <= 1, "improve.lr_decay", self.lr_decay, "must be in (0, 1]")
        _check(self.epochs > 0, "improve.epochs", self.epochs, "must be > 0")
        _check(
            self.max_steps is None or self.max_steps > 0, "improve.max_steps", self.max_steps, "must be > 0"
        )
        _check(self.batch_size > 0, "improve.batch_size", self.batch_size, "must be > 0")
        _check(0 <= self.original_mix <= 1, "improve.original_mix", self.original_mix, "must be in [0, 1]")
        _check(self.eval_every > 0, "improve.eval_every", self.eval_every, "must be > 0")
        _check(self.patience > 0, "improve.patience", self.patience, "must be > 0")
        _check(
            self.max_improve_steps is None or self.max_improve_steps > 0,
            "improve.max_improve_steps",
            self.max_improve_steps,
            "must be > 0",
        )


@dataclass
class EvalConfig:
    best_of_n: list[int] = doc(
        help="N of the Best-of-N evaluation (the best of N samples by reward), strictly increasing. Powers "
        "of two up to K = 8; the paper's best ReST policy at N < 10 matched BC at N = 200.",
        factory=lambda: [1, 2, 4, 8],
    )
    max_sources: int | None = doc(
        None,
        "Cap on validation/test sources evaluated. Not set: all, so a reported reward covers the whole "
        "held-out set.",
    )
    batch_size: int = doc(64, "Sequences per evaluation generate call; 64 as grow.batch_size.")

    def __post_init__(self) -> None:
        _check(
            len(self.best_of_n) > 0, "eval.best_of_n", self.best_of_n, "must not be empty (e.g. [1, 2, 4, 8])"
        )
        _check(all(n >= 1 for n in self.best_of_n), "eval.best_of_n", self.best_of_n, "values >= 1")
        _increasing("eval.best_of_n", self.best_of_n)
        _check(
            self.max_sources is None or self.max_sources > 0,
            "eval.max_sources",
            self.max_sources,
            "must be > 0",
        )
        _check(self.batch_size > 0, "eval.batch_size", self.batch_size, "must be > 0")


@dataclass
class StopConfig:
    max_grow_steps: int = doc(
        2,
        "Stop after this many Grow steps. 2: the paper's best reward came with G = 2, and ReST-EM gained "
        "most in the first one or two iterations.",
    )
    target_reward: float | None = doc(
        None,
        "Stop once the validation reward reaches this. Not set: no target, since a good reward depends "
        "on the task.",
    )
    min_improvement: float | None = doc(
        None,
        "Stop when the last `window` Grow steps gained less validation reward than this. Not set: off, "
        "since a worthwhile gain depends on the reward's scale.",
    )
    window: int = doc(
        1,
        "Grow steps min_improvement looks back over. 1, the previous Grow: most of the gain comes in the "
        "first one or two.",
    )
    max_samples: int | None = doc(
        None,
        "Budget: candidates generated over the campaign. Not set: no budget; max_grow_steps bounds the "
        "work already.",
    )
    max_wall_seconds: float | None = doc(
        None,
        "Budget: wall-clock seconds of all compute steps. Not set: no budget; max_grow_steps bounds the "
        "work already.",
    )

    def __post_init__(self) -> None:
        _check(self.max_grow_steps >= 0, "stop.max_grow_steps", self.max_grow_steps, "must be >= 0")
        _check(self.window >= 1, "stop.window", self.window, "must be >= 1")
        _check(
            self.max_samples is None or self.max_samples > 0,
            "stop.max_samples",
            self.max_samples,
            "must be > 0",
        )
        _check(
            self.max_wall_seconds is None or self.max_wall_seconds > 0,
            "stop.max_wall_seconds",
            self.max_wall_seconds,
            "must be > 0",
        )


@dataclass
class AuditMetric:
    """An independent metric scored beside the reward and never optimised: the campaign's check on it."""

    name: str = doc("", "Shown in status, charts and gate messages. Empty: the kind (e.g. chrf).")
    kind: str = doc(
        "chrf",
        "Any reward provider: chrf, exact_match, numeric, callable, hf or minilm (a second reward model). "
        "chrf against the references is the demos' audit of translation quality.",
        choices=REWARD_KINDS,
    )
    path: str | None = doc(None, "hf / minilm: the model directory, as for [reward].")
    function: str | None = doc(None, "callable: 'module:function', as for [reward].")
    batch_size: int = doc(64, "Candidates per call, as for [reward].")
    format: str = doc("auto", "hf: the input format, as for [reward].", choices=REWARD_FORMATS)
    prompt_template: str | None = doc(
        None, "hf: the prompt before the candidate, as for [reward]; not set: the policy's."
    )

    def __post_init__(self) -> None:
        _check_provider(self, "audit")
        self.name = self.name or self.kind

    def reward_config(self) -> RewardConfig:
        return RewardConfig(
            kind=self.kind,
            path=self.path,
            function=self.function,
            batch_size=self.batch_size,
            format=self.format,
            prompt_template=self.prompt_template,
        )


@dataclass
class GatesConfig:
    """Governance gates, checked after each Grow is scored (before any Improve trains on it), before each
    Grow, and before the final policy is accepted; a failing gate pauses (or stops) the campaign."""

    action: str = doc(
        "pause",
        "What a failing gate does: pause (wait for an operator) or stop (final evaluation, then STOPPED). "
        "pause: a gate asks for a human decision, and STOPPED is final.",
        choices=("pause", "stop"),
    )
    reward_tests: bool = doc(
        False,
        "The reward version must pass its unit-test suite (run once per version on validation "
        "references). Off, like every gate, so a first campaign runs unattended; turn it on for learned "
        "(hf, minilm) rewards.",
    )
    reward_tests_skip: list[str] = doc(
        help="Suite tests the gate does not apply, e.g. the typo and punctuation invariance tests for an "
        "exact-answer reward, which must notice them. Empty: every test applies.",
        factory=list,
    )
    reward_tests_min_pass_rate: float = doc(
        0.9,
        "Share of samples each applied reward test must pass. 0.9, as `restgov reward-test`: a few odd "
        "samples pass, a systematic flaw does not.",
    )
    drift: bool = doc(
        False,
        "The drift gate, after each Grow is scored: signs of hacking or collapse in that Grow against the "
        "BC policy's (length shift, diversity collapse, KL from BC, reward at the ceiling, samples beating "
        "the references; drift_* below), never a reward rise alone. Off so a first campaign runs "
        "unattended; the demo recipes turn it on.",
    )
    drift_reward_wasserstein: float = doc(
        0.1,
        "`restgov drift` and the Drift page: a reward shift of W1 / std >= this is shown as an alarm. The "
        "gate ignores it (a reward shift is what ReST is for). 0.1 is Evidently's default for large samples.",
    )
    human_min_ratings: int = doc(
        0,
        "Ratings needed on the latest sampled policy vs base (BC) before the next Grow. 0: no human gate, "
        "since a campaign may have no raters.",
    )
    human_min_diff: float | None = doc(
        None,
        "Human eval diff (mean 0..6 score of the latest policy minus base) must not fall below this. Not "
        "set: not checked.",
    )

    audit: bool = doc(
        True,
        "The audit-metric gate, after each Grow is scored and before anything trains on it: it fails when "
        "the reward rises while an audit metric ([[audit]]) falls by more than audit_tolerance, against "
        "the BC baseline or the previous step. On: it costs nothing beyond scoring the audit metrics, and "
        "it does nothing when the config names none.",
    )
    audit_tolerance: float = doc(
        0.02,
        "How far an audit metric may fall (on its own scale, e.g. chrF in [0, 1]) while the reward rises "
        "before the audit gate fails. 0.02 is two chrF points: above the noise of a few hundred "
        "validation sources, below the paper's PPO case where BLEU fell about 8 points.",
    )
    drift_length_ratio: float = doc(
        1.3,
        "Drift gate: mean generated length of the latest Grow over the BC Grow above this (or below its "
        "inverse) is an alarm. 1.3: ReST's filter alone moved lengths by a few percent in the demos; "
        "length is the best-documented exploit of learned rewards.",
    )
    drift_kl_budget: float | None = doc(
        None,
        "Drift gate: KL(latest policy || BC policy) per sample, in nats, estimated on Grow samples, above "
        "this is an alarm. Not set: reported, not gated, since its scale grows with output length.",
    )
    drift_unique_share_drop: float | None = doc(
        0.8,
        "Drift gate: relative fall of the share of distinct candidates per source, latest Grow vs BC's. "
        "ReST sharpens the policy on purpose: on the honest toy-mt demo it fell 66% from Grow 1 to 2 while "
        "chrF rose 18 points; 0.8 leaves about one distinct sample in five, the K samples collapsed onto "
        "one. 1.0 turns it off, as exact-answer tasks whose correct answers are one string want.",
    )
    drift_distinct_drop: float | None = doc(
        0.8,
        "Drift gate: relative fall of distinct-2 (distinct bigrams / bigrams) of the samples. It fell 69% on "
        "the honest toy-mt demo as the policy sharpened; 0.8 is collapse onto stock phrases beyond that. "
        "1.0 turns it off (exact-answer tasks).",
    )
    drift_ceiling_margin: float | None = doc(
        0.1,
        "Drift gate: rise of the share of samples at the reward's ceiling. 0.1: an improving continuous "
        "reward moves its whole distribution, not a tenth of all samples into the top 1%.",
    )
    drift_reference_margin: float | None = doc(
        0.05,
        "Drift gate: mean reward of generated samples minus that of the human references of the same "
        "sources. 0.05: a policy cloned from those references beating them by five points of a [0, 1] "
        "reward more likely exploits the reward than outwrites the people.",
    )
    human_tasks: int = doc(
        50,
        "Rating tasks the human gate builds by itself from the validation outputs of the latest checkpoint "
        "and the BC policy on the same sources (the paper's side-by-side protocol). 50 sources leave room "
        "for the min_ratings asked of a few annotators.",
    )

    def __post_init__(self) -> None:
        _check(self.action in ("pause", "stop"), "gates.action", self.action, "'pause' or 'stop'")
        _check(self.audit_tolerance >= 0, "gates.audit_tolerance", self.audit_tolerance, "must be >= 0")
        _check(
            self.drift_length_ratio > 1, "gates.drift_length_ratio", self.drift_length_ratio, "must be > 1"
        )
        _check(
            self.drift_kl_budget is None or self.drift_kl_budget > 0,
            "gates.drift_kl_budget",
            self.drift_kl_budget,
            "must be > 0",
        )
        _check(self.human_tasks > 0, "gates.human_tasks", self.human_tasks, "must be > 0")
        _check(
            0 <= self.reward_tests_min_pass_rate <= 1,
            "gates.reward_tests_min_pass_rate",
            self.reward_tests_min_pass_rate,
            "must be in [0, 1]",
        )
        _check(
            self.drift_reward_wasserstein > 0,
            "gates.drift_reward_wasserstein",
            self.drift_reward_wasserstein,
            "must be > 0",
        )
        _check(self.human_min_ratings >= 0, "gates.human_min_ratings", self.human_min_ratings, "must be >= 0")


@dataclass
class ClusterConfig:
    """[cluster]: run Grow shards as Ray tasks (`pip install restgov[ray]`)."""

    address: str | None = doc(
        None,
        "Ray cluster: 'local' (start one on this machine), 'auto' (join the cluster this machine belongs "
        "to) or 'ray://host:10001'. Not set: shards run in the worker process and Ray is never imported.",
    )
    shared_dir: str | None = doc(
        None,
        "Folder every Ray node can read and write (a shared filesystem path) where shard files are written "
        "before the controller ingests them. Not set: the campaign's run folder, right for 'local' only.",
    )
    num_cpus: float = doc(
        1.0,
        "CPUs each shard task asks Ray for; a task runs min(threads, num_cpus) torch threads (the worker's "
        "count below 1). 1: one torch thread per shard task, as many tasks at once as a node has CPUs.",
    )
    num_gpus: float = doc(0.0, "GPUs each shard task asks Ray for; 0 runs shards on CPU nodes.")
    max_retries: int = doc(
        3,
        "Times Ray reruns a shard task whose worker or node died. A shard is immutable and keyed by its "
        "number, so a rerun never duplicates samples.",
    )

    def __post_init__(self) -> None:
        _check(
            self.address is None or self.address in ("local", "auto") or self.address.startswith("ray://"),
            "cluster.address",
            self.address,
            "'local', 'auto' or 'ray://host:port'",
        )
        _check(self.num_cpus >= 0, "cluster.num_cpus", self.num_cpus, "must be >= 0")
        _check(self.num_gpus >= 0, "cluster.num_gpus", self.num_gpus, "must be >= 0")
        _check(self.max_retries >= 0, "cluster.max_retries", self.max_retries, "must be >= 0")


@dataclass
class CampaignConfig:
    name: str = doc(
        "campaign",
        "Shown by status and the dashboard; must not be empty. 'campaign' so a minimal config runs.",
    )
    mode: str = doc(
        "rest",
        "rest (Gulcehre et al.) or rest-em (Singh et al.). rest-em sets the improve fields the TOML leaves "
        "out: rule binary, init restart_from_base, original_mix 0, lr_decay 1.",
        choices=("rest", "rest-em"),
    )
    seed: int = doc(
        0,
        "Seeds model init, sampling, training and reward tests: CPU runs reproduce. Any fixed value does.",
    )
    threads: int = doc(
        0,
        "torch threads of each worker process. 0: 1 on machines with 2 cores or fewer, else half the "
        "cores. Two torch processes on two cores slowed each other 3-20x, and results differ with the "
        "thread count, so it is fixed and recorded with every step's result.",
    )
    policy: PolicyConfig = doc(
        help="The policy to improve: a local model directory or a tiny model trained from scratch. Left "
        "out: the default [policy.scratch] model.",
        factory=lambda: PolicyConfig(scratch=ScratchModel()),
    )
    data: DataConfig = doc(
        help="The pairs, in .jsonl, .csv or .parquet; relative paths resolve against the TOML's folder. "
        "Left out: train.jsonl and val.jsonl.",
        factory=lambda: DataConfig(train="train.jsonl", validation="val.jsonl"),
    )
    reward: RewardConfig = doc(
        help="The reward R(x, y) in [0, 1], computed once per candidate and stored.", factory=RewardConfig
    )
    grow: GrowConfig = doc(
        help="Grow: K samples per source from the current policy, with temperature sampling.",
        factory=GrowConfig,
    )
    improve: ImproveConfig = doc(
        help="Improve: filter D_g by reward, then fine-tune the policy on what is kept.",
        factory=ImproveConfig,
    )
    eval: EvalConfig = doc(
        help="Held-out evaluation: mean reward and Best-of-N on validation and test.", factory=EvalConfig
    )
    stop: StopConfig = doc(
        help="Stopping criteria, decided before the campaign and checked before every Grow; the reason is "
        "recorded. Editable while a campaign runs (`restgov criteria`, dashboard).",
        factory=StopConfig,
    )
    audit: list[AuditMetric] = doc(
        help="[[audit]] tables: metrics scored on every Grow sample and every checkpoint's validation (and "
        "test) outputs beside the reward, never trained on. Empty: no audit metric, the audit gate idles.",
        factory=list,
    )
    gates: GatesConfig = doc(
        help="Governance gates, also checked before every Grow; a failing gate pauses (or stops) the "
        "campaign until it passes or an operator overrides it once.",
        factory=GatesConfig,
    )
    cluster: ClusterConfig = doc(
        help="Where Grow shards run: in the worker process (default) or as tasks on a Ray cluster.",
        factory=ClusterConfig,
    )

    def __post_init__(self) -> None:
        _check(self.mode in ("rest", "rest-em"), "mode", self.mode, "'rest' or 'rest-em'")
        _check(bool(self.name.strip()), "name", self.name, "must not be empty")
        _check(self.threads >= 0, "threads", self.threads, "must be >= 0 (0: automatic)")
        names = [a.name for a in self.audit]
        _check(len(set(names)) == len(names), "audit", names, "audit metric names must be unique")
        # A reward model is most often trained on the prompts the policy sees: that is its default prompt.
        for provider in (self.reward, *self.audit):
            if provider.kind == "hf" and provider.prompt_template is None:
                provider.prompt_template = self.policy.prompt_template


# ReST-EM: binary reward kept at 1, one Improve per Grow, every Improve restarts from the base policy,
# no original pairs mixed in. Applied where the TOML does not set the field itself.
REST_EM_DEFAULTS = {"rule": "binary", "init": "restart_from_base", "original_mix": 0.0, "lr_decay": 1.0}


def _build(cls: type, raw: Any, prefix: str) -> Any:
    """Build dataclass `cls` from a TOML table, checking names and types, naming the field on error."""
    if not isinstance(raw, dict):
        raise ConfigError(prefix or "<root>", raw, "must be a table")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in sorted(set(raw) - known):
        name = f"{prefix}.{key}" if prefix else key
        _fail(ConfigError(name, raw[key], f"unknown field; allowed: {sorted(known)}"))
    kwargs = {}
    for key, value in raw.items():
        if key not in known:
            continue
        name = f"{prefix}.{key}" if prefix else key
        try:
            kwargs[key] = _coerce(hints[key], value, name)
        except ConfigError as e:  # collecting: noted, and the field keeps its default
            _fail(e)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except Exception as e:
        if _COLLECT.get() is None:
            if isinstance(e, TypeError):  # pragma: no cover - defensive
                raise ConfigError(prefix or "<root>", raw, str(e)) from e
            raise
        # Collecting: a check that failed left a value the rest of __post_init__ cannot use (the error is
        # noted already); the defaults stand in so the tables around it are still checked.
        token = _COLLECT.set([])
        try:
            return cls()
        finally:
            _COLLECT.reset(token)


def _coerce(tp: Any, value: Any, name: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _coerce(args[0], value, name)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, name)
    if origin is list:
        (inner,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(name, value, f"must be a list of {inner.__name__}")
        return [_coerce(inner, v, f"{name}[{i}]") for i, v in enumerate(value)]
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(name, value, "must be a number")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(name, value, "must be an integer")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(name, value, "must be true or false")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(name, value, "must be a string")
        return value
    return value  # pragma: no cover


def config_from_dict(raw: dict, base_dir: str | Path | None = None) -> CampaignConfig:
    """Validate a parsed TOML document. Relative data/model paths resolve against `base_dir`."""
    raw = dict(raw)
    if raw.get("mode") == "rest-em":
        imp = dict(raw.get("improve", {}))
        for k, v in REST_EM_DEFAULTS.items():
            imp.setdefault(k, v)
        raw["improve"] = imp
    cfg = _build(CampaignConfig, raw, "")
    if base_dir is not None:
        _resolve_paths(cfg, Path(base_dir))
        _check_model_dirs(cfg, Path(base_dir))
        _check_scale(cfg, Path(base_dir))
    return cfg


def _check_scale(cfg: CampaignConfig, base: Path) -> None:
    """At load, where the campaign will run: grow.backend = "vllm" needs vllm and CUDA here (vllm is not
    imported); [cluster] address needs ray installed; cluster.shared_dir must be an existing folder."""
    import importlib.util

    if cfg.grow.backend == "vllm":
        from .vllm_backend import backend_refusal

        if why := backend_refusal():
            _fail(ConfigError("grow.backend", "vllm", f"{why}; use 'hf' or 'auto'"))
    c = cfg.cluster
    if c.address is not None and importlib.util.find_spec("ray") is None:
        _fail(ConfigError("cluster.address", c.address, "ray is not installed (pip install restgov[ray])"))
    if c.shared_dir:
        q = Path(c.shared_dir).expanduser()
        c.shared_dir = str(q if q.is_absolute() else (base / q).resolve())
        if not Path(c.shared_dir).is_dir():
            _fail(ConfigError("cluster.shared_dir", c.shared_dir, f"no such directory (relative to {base})"))


def _check_model_dirs(cfg: CampaignConfig, base: Path) -> None:
    """The policy and reward model directories a config file names must exist when it is loaded, not only
    when a worker first opens them."""
    dirs = [("policy.path", cfg.policy.path)]
    if cfg.reward.kind in ("hf", "minilm"):
        dirs.append(("reward.path", cfg.reward.path))
    dirs += [(f"audit[{i}].path", a.path) for i, a in enumerate(cfg.audit) if a.kind in ("hf", "minilm")]
    for name, path in dirs:
        if path and not Path(path).is_dir():
            why = "not a directory" if Path(path).exists() else "no such directory"
            raise ConfigError(name, path, f"{why} (relative paths resolve against {base})")


def config_errors(raw: dict, base_dir: str | Path | None = None) -> list[ConfigError]:
    """Every error config_from_dict(raw) would raise one at a time, in field order (one per field); [] when
    the config is valid. A field whose value is refused keeps its default while the others are checked."""
    bucket: list[ConfigError] = []
    token = _COLLECT.set(bucket)
    try:
        config_from_dict(raw, base_dir)
    except ConfigError as e:  # the document itself is not a table
        bucket.append(e)
    finally:
        _COLLECT.reset(token)
    seen: set[str] = set()
    return [e for e in bucket if not (e.field in seen or seen.add(e.field))]


def _resolve_paths(cfg: CampaignConfig, base: Path) -> None:
    def res(p: str | None) -> str | None:
        if not p:
            return p
        q = Path(p).expanduser()
        return str(q if q.is_absolute() else (base / q).resolve())

    d = cfg.data
    d.train, d.validation, d.test, d.bootstrap = (
        res(d.train),
        res(d.validation),
        res(d.test),
        res(d.bootstrap),
    )
    cfg.policy.path = res(cfg.policy.path)
    cfg.reward.path = res(cfg.reward.path)
    for a in cfg.audit:
        a.path = res(a.path)


def _read_toml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError("<file>", str(path), "no such file")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("<file>", str(path), f"not valid TOML: {e}") from e
    except UnicodeDecodeError as e:
        raise ConfigError("<file>", str(path), f"not UTF-8 text: {e}") from e


def load_config(path: str | Path) -> CampaignConfig:
    """Read and validate a campaign TOML file."""
    path = Path(path)
    return config_from_dict(_read_toml(path), base_dir=path.parent)


def load_reward_config(path: str | Path) -> RewardConfig:
    """The reward of a TOML file holding either a [reward] table alone or a whole campaign config (whose
    reward takes the policy's prompt template); relative paths resolve against the file's folder."""
    path = Path(path)
    raw = _read_toml(path)
    if set(raw) - {"reward"}:
        return config_from_dict(raw, base_dir=path.parent).reward
    if "reward" not in raw:
        raise ConfigError("reward", None, f"{path} has no [reward] table")
    rc = _build(RewardConfig, raw["reward"], "reward")
    if rc.path:
        q = Path(rc.path).expanduser()
        rc.path = str(q if q.is_absolute() else (path.parent / q).resolve())
        if rc.kind in ("hf", "minilm") and not Path(rc.path).is_dir():
            why = "not a directory" if Path(rc.path).exists() else "no such directory"
            raise ConfigError("reward.path", rc.path, f"{why} (relative paths resolve against {path.parent})")
    return rc


def config_to_dict(cfg: CampaignConfig) -> dict:
    """The config as plain data (None values dropped, so it round-trips through TOML)."""

    def clean(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items() if v is not None}
        if isinstance(x, list):
            return [clean(v) for v in x]
        return x

    return clean(dataclasses.asdict(cfg))
