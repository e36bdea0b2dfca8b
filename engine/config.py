"""Campaign configuration: one TOML file loaded into typed dataclasses.

Every field is checked on construction; a bad value raises ConfigError naming the field, the value
and what is allowed, so `restgov run` fails before any compute starts.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PAPER_THRESHOLDS = [0.0, 0.7, 0.8, 0.9, 0.95, 0.99]


class ConfigError(ValueError):
    """A campaign config value is invalid. `field` is the dotted TOML path."""

    def __init__(self, field: str, value: Any, allowed: str):
        self.field, self.value, self.allowed = field, value, allowed
        super().__init__(f"{field} = {value!r}: {allowed}")


def _check(ok: bool, name: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(name, value, allowed)


def _increasing(name: str, xs: list[float]) -> None:
    _check(all(b > a for a, b in zip(xs, xs[1:])), name, xs, "must increase strictly")


@dataclass
class ScratchModel:
    """A tiny GPT-2-style policy trained from scratch by the bootstrap step."""

    n_layer: int = 2  # tiny on purpose: the demo must train on 2 CPU cores in minutes
    n_head: int = 4
    n_embd: int = 128
    vocab_size: int = 384  # byte-level BPE trained on the campaign's training text
    max_length: int = 96  # prompt + answer tokens; the paper capped sequences at 128

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

    epochs: float = 3.0
    lr: float = 1e-3
    batch_size: int = 32
    force: bool = False  # run BC even on a pretrained policy directory
    early_stopping: bool = False  # validate every improve.eval_every steps and keep the best BC weights
    # (off by default: with a noisy validation set it can stop a run whose learning rate is still high)

    def __post_init__(self) -> None:
        _check(self.epochs > 0, "policy.bootstrap.epochs", self.epochs, "must be > 0")
        _check(self.lr > 0, "policy.bootstrap.lr", self.lr, "must be > 0")
        _check(self.batch_size > 0, "policy.bootstrap.batch_size", self.batch_size, "must be > 0")


@dataclass
class PolicyConfig:
    path: str | None = None  # local HF causal-LM directory; None: train `scratch` from scratch
    scratch: ScratchModel | None = None
    bootstrap: Bootstrap = field(default_factory=Bootstrap)
    prompt_template: str = "{source} => "  # the policy sees this, then writes the answer and EOS

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


@dataclass
class DataConfig:
    train: str = ""  # JSONL, CSV or Parquet with a source and a reference column
    validation: str = ""
    test: str | None = None
    bootstrap: str | None = (
        None  # pairs for bootstrap BC when they differ from train (ReST-EM: few worked solutions)
    )
    source_field: str = "source"
    reference_field: str = "reference"
    id_field: str | None = None  # default: the row number

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


@dataclass
class RewardConfig:
    kind: str = "exact_match"  # one of REWARD_KINDS
    path: str | None = None  # hf: sequence-classification dir; minilm: trained head dir
    function: str | None = None  # callable: "module:function"
    batch_size: int = 64
    tests: list[str] = field(default_factory=list)  # extra reward unit tests: module names or .py paths

    def __post_init__(self) -> None:
        _check(self.kind in REWARD_KINDS, "reward.kind", self.kind, f"one of {list(REWARD_KINDS)}")
        if self.kind in ("hf", "minilm"):
            _check(
                bool(self.path),
                "reward.path",
                self.path,
                f"a model directory is required for kind {self.kind!r}",
            )
        if self.kind == "callable":
            _check(
                bool(self.function) and ":" in str(self.function),
                "reward.function",
                self.function,
                "'module:function' is required for kind 'callable'",
            )
        _check(self.batch_size > 0, "reward.batch_size", self.batch_size, "must be > 0")


@dataclass
class GrowConfig:
    samples_per_source: int = 8  # K; the paper used 100 (IWSLT) down to 25 (WMT)
    temperature: float = 0.8  # paper: covers a broad range of rewards
    top_p: float = 1.0
    max_new_tokens: int = 48
    batch_size: int = 64  # sequences per generate call (sources x K)
    shard_sources: int = 256  # sources per Parquet shard: the unit a resumed Grow restarts from

    def __post_init__(self) -> None:
        _check(
            self.samples_per_source >= 1, "grow.samples_per_source", self.samples_per_source, "must be >= 1"
        )
        _check(self.temperature > 0, "grow.temperature", self.temperature, "must be > 0")
        _check(0 < self.top_p <= 1, "grow.top_p", self.top_p, "must be in (0, 1]")
        _check(self.max_new_tokens >= 1, "grow.max_new_tokens", self.max_new_tokens, "must be >= 1")
        _check(self.batch_size >= 1, "grow.batch_size", self.batch_size, "must be >= 1")
        _check(self.shard_sources >= 1, "grow.shard_sources", self.shard_sources, "must be >= 1")


FILTER_RULES = ("thresholds", "percentile", "interpolation", "quantile", "binary")


@dataclass
class ImproveConfig:
    rule: str = "thresholds"  # one of FILTER_RULES
    thresholds: list[float] = field(default_factory=lambda: list(PAPER_THRESHOLDS))
    max_improve_steps: int | None = None  # None: every threshold above the mean reward
    percentiles: list[float] = field(
        default_factory=lambda: [50.0, 70.0, 90.0]
    )  # keep reward >= source's p-th pct
    gammas: list[float] = field(default_factory=lambda: [0.0, 0.5, 0.8])  # tau(x) = g*max + (1-g)*mean
    quantile: float = 0.8  # RAFT: global reward quantile, one Improve per Grow
    loss: str = "bc"  # "bc" (NLL) or "reward_weighted" (J = E[r log p])
    init: str = "warm_start"  # "warm_start" (ReST) or "restart_from_base" (ReST-EM)
    lr: float = 5e-4
    lr_decay: float = 0.7  # lr of Improve step n (counted over the campaign) = lr * lr_decay**(n-1)
    epochs: float = 2.0
    max_steps: int | None = None  # optimizer steps cap per Improve; None: epochs decide
    batch_size: int = 32
    original_mix: float = 1.0  # share of the original pairs D added to D_g (and filtered with it)
    eval_every: int = 50  # optimizer steps between validation checks (early stopping)
    patience: int = 2  # validation checks without improvement before stopping
    early_stopping: bool = True  # keep the checkpoint with the best validation reward

    def __post_init__(self) -> None:
        _check(self.rule in FILTER_RULES, "improve.rule", self.rule, f"one of {list(FILTER_RULES)}")
        _check(len(self.thresholds) > 0, "improve.thresholds", self.thresholds, "must not be empty")
        _increasing("improve.thresholds", self.thresholds)
        _check(
            all(0 <= t <= 1 for t in self.thresholds),
            "improve.thresholds",
            self.thresholds,
            "values in [0, 1]",
        )
        _increasing("improve.percentiles", self.percentiles)
        _check(
            all(0 <= p < 100 for p in self.percentiles),
            "improve.percentiles",
            self.percentiles,
            "values in [0, 100)",
        )
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
    best_of_n: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    max_sources: int | None = None  # cap on validation/test sources evaluated; None: all
    batch_size: int = 64

    def __post_init__(self) -> None:
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
    max_grow_steps: int = 2
    target_reward: float | None = None  # stop once validation reward reaches this
    min_improvement: float | None = None  # stop when the last k Grow steps gained less than this
    window: int = 1  # k above
    max_samples: int | None = None  # budget: candidates generated over the campaign
    max_wall_seconds: float | None = None  # budget: wall-clock of compute steps

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
class GatesConfig:
    """Governance gates, checked before each Grow; a failing gate pauses (or stops) the campaign."""

    action: str = "pause"  # "pause": wait for an operator; "stop": final evaluation, then STOPPED
    reward_tests: bool = (
        False  # the reward version must pass its unit-test suite (run on validation references)
    )
    reward_tests_skip: list[str] = field(default_factory=list)  # suite tests not applied by the gate
    reward_tests_min_pass_rate: float = 0.9
    drift: bool = (
        False  # drift alarms (latest Grow vs the BC baseline and vs the previous Grow) must be clear
    )
    drift_reward_wasserstein: float = 0.1  # W1 / reference std; Evidently's default for large samples
    human_min_ratings: int = 0  # ratings needed on the latest sampled policy (0: no human gate)
    human_min_diff: float | None = None  # human eval diff (latest policy minus base) must not fall below this

    def __post_init__(self) -> None:
        _check(self.action in ("pause", "stop"), "gates.action", self.action, "'pause' or 'stop'")
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
class CampaignConfig:
    name: str = "campaign"
    mode: str = "rest"  # "rest" (Gulcehre et al.) or "rest-em" (Singh et al.): sets defaults, see below
    seed: int = 0
    policy: PolicyConfig = field(default_factory=lambda: PolicyConfig(scratch=ScratchModel()))
    data: DataConfig = field(default_factory=lambda: DataConfig(train="train.jsonl", validation="val.jsonl"))
    reward: RewardConfig = field(default_factory=RewardConfig)
    grow: GrowConfig = field(default_factory=GrowConfig)
    improve: ImproveConfig = field(default_factory=ImproveConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    stop: StopConfig = field(default_factory=StopConfig)
    gates: GatesConfig = field(default_factory=GatesConfig)

    def __post_init__(self) -> None:
        _check(self.mode in ("rest", "rest-em"), "mode", self.mode, "'rest' or 'rest-em'")
        _check(bool(self.name.strip()), "name", self.name, "must not be empty")


# ReST-EM: binary reward kept at 1, one Improve per Grow, every Improve restarts from the base policy,
# no original pairs mixed in. Applied where the TOML does not set the field itself.
REST_EM_DEFAULTS = {"rule": "binary", "init": "restart_from_base", "original_mix": 0.0, "lr_decay": 1.0}


def _build(cls: type, raw: Any, prefix: str) -> Any:
    """Build dataclass `cls` from a TOML table, checking names and types, naming the field on error."""
    if not isinstance(raw, dict):
        raise ConfigError(prefix or "<root>", raw, "must be a table")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        name = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise ConfigError(name, raw[unknown[0]], f"unknown field; allowed: {sorted(known)}")
    kwargs = {}
    for key, value in raw.items():
        name = f"{prefix}.{key}" if prefix else key
        kwargs[key] = _coerce(hints[key], value, name)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except TypeError as e:  # pragma: no cover - defensive
        raise ConfigError(prefix or "<root>", raw, str(e)) from e


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
    return cfg


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


def load_config(path: str | Path) -> CampaignConfig:
    """Read and validate a campaign TOML file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("<file>", str(path), "no such file")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("<file>", str(path), f"not valid TOML: {e}") from e
    except UnicodeDecodeError as e:
        raise ConfigError("<file>", str(path), f"not UTF-8 text: {e}") from e
    return config_from_dict(raw, base_dir=path.parent)


def config_to_dict(cfg: CampaignConfig) -> dict:
    """The config as plain data (None values dropped, so it round-trips through TOML)."""

    def clean(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items() if v is not None}
        if isinstance(x, list):
            return [clean(v) for v in x]
        return x

    return clean(dataclasses.asdict(cfg))
