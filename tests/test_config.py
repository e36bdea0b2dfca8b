"""Tests for engine.config: defaults, the dotted field named by every ConfigError, TOML files and ReST-EM
defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import (
    PAPER_THRESHOLDS,
    CampaignConfig,
    ConfigError,
    config_from_dict,
    config_to_dict,
    load_config,
)

MINIMAL = {"data": {"train": "train.jsonl", "validation": "val.jsonl"}}


def _with(path: str, value: object, base: dict | None = None) -> dict:
    """A copy of `base` (default MINIMAL) with the dotted `path` set to `value`, creating tables on the
    way."""
    raw = _deepcopy(base if base is not None else MINIMAL)
    *tables, key = path.split(".")
    node = raw
    for t in tables:
        node = node.setdefault(t, {})
    node[key] = value
    return raw


def _deepcopy(x):
    return (
        {k: _deepcopy(v) for k, v in x.items()}
        if isinstance(x, dict)
        else list(x)
        if isinstance(x, list)
        else x
    )


def _field_of(raw: dict) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        config_from_dict(raw)
    return info.value


def test_defaults_load():
    cfg = config_from_dict(MINIMAL)
    assert isinstance(cfg, CampaignConfig)
    assert cfg.mode == "rest" and cfg.name == "campaign"
    assert cfg.policy.path is None and cfg.policy.scratch is not None  # scratch policy by default
    assert cfg.grow.temperature == 0.8  # the paper's sampling temperature
    assert cfg.improve.rule == "thresholds" and cfg.improve.thresholds == PAPER_THRESHOLDS
    assert cfg.improve.init == "warm_start" and cfg.improve.original_mix == 1.0
    assert cfg.data.train == "train.jsonl"  # no base_dir: paths stay as given
    # The default-constructed dataclass is valid too and round-trips through plain data.
    assert config_from_dict(config_to_dict(CampaignConfig())) == CampaignConfig()
    assert config_from_dict(config_to_dict(cfg)) == cfg


@pytest.mark.parametrize(
    "path, value, field",
    [
        # out of range
        ("grow.temperature", -1, "grow.temperature"),
        ("grow.temperature", 0, "grow.temperature"),
        ("grow.top_p", 1.5, "grow.top_p"),
        ("grow.samples_per_source", 0, "grow.samples_per_source"),
        ("grow.shard_sources", 0, "grow.shard_sources"),
        ("policy.scratch.n_embd", 30, "policy.scratch.n_embd"),  # not a multiple of n_head (4)
        ("policy.scratch.vocab_size", 100, "policy.scratch.vocab_size"),
        ("policy.bootstrap.lr", 0, "policy.bootstrap.lr"),
        ("improve.thresholds", [0.8, 0.7], "improve.thresholds"),  # decreasing
        ("improve.thresholds", [0.5, 0.5], "improve.thresholds"),  # not strictly increasing
        ("improve.thresholds", [], "improve.thresholds"),
        ("improve.thresholds", [0.0, 1.5], "improve.thresholds"),
        ("improve.percentiles", [50.0, 100.0], "improve.percentiles"),
        ("improve.gammas", [0.8, 0.5], "improve.gammas"),
        ("improve.quantile", 1.0, "improve.quantile"),
        ("improve.rule", "top-k", "improve.rule"),
        ("improve.loss", "ppo", "improve.loss"),
        ("improve.init", "random", "improve.init"),
        ("improve.lr_decay", 0, "improve.lr_decay"),
        ("improve.original_mix", 1.5, "improve.original_mix"),
        ("improve.max_steps", 0, "improve.max_steps"),
        ("improve.max_improve_steps", 0, "improve.max_improve_steps"),
        ("eval.best_of_n", [4, 2], "eval.best_of_n"),
        ("eval.best_of_n", [0, 1], "eval.best_of_n"),
        ("eval.best_of_n", [], "eval.best_of_n"),
        ("improve.percentiles", [], "improve.percentiles"),
        ("improve.gammas", [], "improve.gammas"),
        ("reward.format", "chatml", "reward.format"),
        ("reward.prompt_template", "no placeholder", "reward.prompt_template"),
        ("stop.max_grow_steps", -1, "stop.max_grow_steps"),
        ("stop.window", 0, "stop.window"),
        ("mode", "ppo", "mode"),
        ("name", "  ", "name"),
        ("reward.kind", "bleu", "reward.kind"),
        ("reward.kind", "hf", "reward.path"),  # hf without a path
        ("reward.kind", "minilm", "reward.path"),
        ("reward.kind", "callable", "reward.function"),
        ("data.train", "train.txt", "data.train"),
        ("data.validation", "", "data.validation"),
        ("data.test", "test.tsv", "data.test"),
        # unknown fields, at the root and nested
        ("colour", "blue", "colour"),
        ("grow.temprature", 0.7, "grow.temprature"),
        ("policy.scratch.n_layers", 2, "policy.scratch.n_layers"),
        # wrong types
        ("grow.temperature", "hot", "grow.temperature"),
        ("grow.samples_per_source", 2.5, "grow.samples_per_source"),
        ("grow.samples_per_source", True, "grow.samples_per_source"),  # a bool is not an integer here
        ("improve.early_stopping", 1, "improve.early_stopping"),
        ("improve.thresholds", 0.5, "improve.thresholds"),  # a number, not a list
        ("improve.thresholds", [0.0, "high"], "improve.thresholds[1]"),
        ("name", 3, "name"),
        ("grow", 3, "grow"),  # a table expected
    ],
)
def test_bad_value_names_field(path: str, value: object, field: str):
    err = _field_of(_with(path, value))
    assert err.field == field
    assert field in str(err)  # the message a user sees names the field too


def test_policy_needs_exactly_one_of_path_and_scratch():
    both = _with("policy", {"path": "models/p", "scratch": {"n_layer": 1}})
    assert _field_of(both).field == "policy"
    # An explicit [policy] table with neither: the default scratch model does not apply to it.
    assert _field_of(_with("policy", {"prompt_template": "{source} => "})).field == "policy"
    bad_template = _with("policy", {"scratch": {}, "prompt_template": "no placeholder"})
    assert _field_of(bad_template).field == "policy.prompt_template"


def test_load_config_resolves_paths_against_the_toml(tmp_path: Path):
    path = tmp_path / "cfg" / "campaign.toml"
    path.parent.mkdir()
    path.write_text(
        '[data]\ntrain = "d/train.jsonl"\nvalidation = "/abs/val.csv"\n[reward]\nkind = "hf"\npath = "rm"\n'
    )
    (path.parent / "rm").mkdir()
    cfg = load_config(path)
    assert cfg.data.train == str(tmp_path / "cfg" / "d" / "train.jsonl")
    assert cfg.data.validation == "/abs/val.csv"
    assert cfg.data.test is None
    assert cfg.reward.path == str(tmp_path / "cfg" / "rm")


def test_toml_syntax_error_names_the_file(tmp_path: Path):
    path = tmp_path / "broken.toml"
    path.write_text("[grow]\ntemperature = = 0.8\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert "TOML" in str(info.value)
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "missing.toml")
    assert "missing.toml" in str(info.value) and "no such file" in str(info.value)


def test_bad_field_in_a_toml_file(tmp_path: Path):
    path = tmp_path / "campaign.toml"
    path.write_text('[data]\ntrain = "t.jsonl"\nvalidation = "v.jsonl"\n[improve]\nthresholds = [0.9, 0.1]\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.field == "improve.thresholds"
    assert info.value.value == [0.9, 0.1]


def test_rest_em_defaults():
    cfg = config_from_dict(_with("mode", "rest-em"))
    assert cfg.improve.rule == "binary"
    assert cfg.improve.init == "restart_from_base"
    assert cfg.improve.original_mix == 0.0
    assert cfg.improve.lr_decay == 1.0
    rest = config_from_dict(_with("mode", "rest"))
    assert rest.improve.rule == "thresholds" and rest.improve.init == "warm_start"


def test_rest_em_defaults_yield_to_explicit_fields():
    raw = _with(
        "improve", {"rule": "quantile", "init": "warm_start", "original_mix": 0.5}, _with("mode", "rest-em")
    )
    cfg = config_from_dict(raw)
    assert (cfg.improve.rule, cfg.improve.init, cfg.improve.original_mix) == ("quantile", "warm_start", 0.5)
    assert cfg.improve.lr_decay == 1.0  # the one not overridden keeps its ReST-EM default
    assert raw["improve"] == {
        "rule": "quantile",
        "init": "warm_start",
        "original_mix": 0.5,
    }  # input not mutated


def test_rest_em_defaults_survive_a_round_trip():
    """The worker rebuilds the config from config_to_dict: the ReST-EM choices must come back unchanged."""
    cfg = config_from_dict(_with("mode", "rest-em"))
    again = config_from_dict(config_to_dict(cfg))
    assert again == cfg


def test_the_tiny_campaign_fixtures_load(tiny_arith: Path, tiny_rest: Path):
    """The TOML files the end-to-end tests run: ReST-EM defaults applied, explicit fields kept, paths
    resolved."""
    em = load_config(tiny_arith)
    assert em.mode == "rest-em" and em.improve.rule == "binary" and em.improve.init == "restart_from_base"
    assert em.improve.original_mix == 1.0  # set in the file: wins over the ReST-EM default of 0
    assert em.stop.max_grow_steps == 2 and em.grow.samples_per_source == 2 and em.grow.shard_sources == 16
    assert em.policy.scratch is not None and em.policy.scratch.n_embd == 32
    for p in (em.data.train, em.data.validation, em.data.test):
        assert Path(p).is_absolute() and Path(p).is_file()
    rest = load_config(tiny_rest)
    assert (
        rest.mode == "rest" and rest.improve.rule == "percentile" and rest.improve.percentiles == [0.0, 50.0]
    )
    assert rest.improve.init == "warm_start"


def test_empty_lists_name_their_field_in_a_toml_file(tmp_path: Path):
    """Empty percentile, gamma and Best-of-N lists are refused when the file loads, not inside a worker."""
    for table, key in (("improve", "percentiles"), ("improve", "gammas"), ("eval", "best_of_n")):
        path = tmp_path / f"{key}.toml"
        path.write_text(f'[data]\ntrain = "t.jsonl"\nvalidation = "v.jsonl"\n[{table}]\n{key} = []\n')
        with pytest.raises(ConfigError) as info:
            load_config(path)
        assert info.value.field == f"{table}.{key}" and "must not be empty" in str(info.value)


@pytest.mark.parametrize(
    "toml, field",
    [
        ('[policy]\npath = "models/policy"\n', "policy.path"),
        ('[reward]\nkind = "hf"\npath = "models/rm"\n', "reward.path"),
        ('[reward]\nkind = "minilm"\npath = "heads/h"\n', "reward.path"),
        ('[[audit]]\nkind = "chrf"\n[[audit]]\nkind = "hf"\npath = "models/judge"\n', "audit[1].path"),
    ],
)
def test_missing_model_directories_name_their_field(tmp_path: Path, toml: str, field: str):
    path = tmp_path / "cfg" / "campaign.toml"
    path.parent.mkdir()
    path.write_text('[data]\ntrain = "t.jsonl"\nvalidation = "v.jsonl"\n' + toml)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    err = info.value
    assert err.field == field and "no such directory" in str(err)
    assert str(path.parent) in str(err)  # the resolved path, and where relative paths resolve
    # Once the directory exists the same file loads; a file where a folder belongs is named as such.
    Path(err.value).mkdir(parents=True)
    load_config(path)
    Path(err.value).rmdir()
    Path(err.value).write_text("")
    with pytest.raises(ConfigError, match="not a directory"):
        load_config(path)


def test_hf_prompt_template_defaults_to_the_policy_s(tmp_path: Path):
    raw = _with("reward", {"kind": "hf", "path": "rm"})
    raw["policy"] = {"scratch": {}, "prompt_template": "Q: {source}\nA: "}
    assert config_from_dict(raw).reward.prompt_template == "Q: {source}\nA: "
    raw["reward"]["prompt_template"] = "{source}"
    assert config_from_dict(raw).reward.prompt_template == "{source}"
    assert config_from_dict(MINIMAL).reward.prompt_template is None  # only hf rewards read it
    assert config_from_dict(config_to_dict(config_from_dict(raw))) == config_from_dict(raw)
