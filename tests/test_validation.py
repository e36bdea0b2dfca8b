"""new_campaign checks the policy directory, the reward and each audit metric before anything is written: a
failing check is a ConfigError naming the field, and leaves no campaign row, no event and no run folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import restgov, write_tiny_campaign

from engine.campaign import new_campaign
from engine.config import ConfigError, load_config
from engine.store import open_store

REWARDS = """\
import math


def good(sources, candidates, references):
    return [1.0 if c.strip() == r.strip() else 0.0 for c, r in zip(candidates, references)]


def short(sources, candidates):
    return [0.5] * (len(candidates) - 1)


def nan(sources, candidates):
    return [math.nan] * len(candidates)


def broken(sources, candidates):
    raise ZeroDivisionError("the reward divides by zero")
"""


@pytest.fixture
def rewards_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A real module of reward functions on PYTHONPATH (the probe child and the worker inherit it)."""
    pkg = tmp_path / "pymods"
    pkg.mkdir()
    (pkg / "probe_rewards_mod.py").write_text(REWARDS)
    monkeypatch.setenv("PYTHONPATH", str(pkg))
    return "probe_rewards_mod"


def tiny_config(tmp_path: Path, reward: str = 'kind = "numeric"', policy: str | None = None, audit: str = ""):
    """The tiny arith campaign with its [reward] table replaced, and optionally policy.path and audits."""
    path = write_tiny_campaign(tmp_path / "cfg")
    text = path.read_text().replace('[reward]\nkind = "numeric"', f"[reward]\n{reward}")
    if policy is not None:
        head, _, rest = text.partition("[policy.scratch]")
        rest = rest[rest.index("[policy.bootstrap]") :]
        text = head.replace("[policy]\n", f"[policy]\npath = {json.dumps(policy)}\n") + rest
    path.write_text(text + audit)
    return path


def refuse(tmp_path: Path, cfg_path: Path) -> ConfigError:
    """new_campaign on a fresh store: assert it raises ConfigError and wrote nothing; return the error."""
    cfg = load_config(cfg_path)
    store = open_store(tmp_path / "db" / "restgov.duckdb")
    runs = tmp_path / "db" / "runs"
    with pytest.raises(ConfigError) as ei:
        new_campaign(store, cfg, runs)
    assert store.campaigns() == []
    assert store.cursor().execute("SELECT count(*) FROM events").fetchone()[0] == 0
    assert store.cursor().execute("SELECT count(*) FROM prompts").fetchone()[0] == 0
    assert not runs.exists()
    return ei.value


def test_callable_that_does_not_import(tmp_path: Path):
    e = refuse(tmp_path, tiny_config(tmp_path, 'kind = "callable"\nfunction = "no_such_reward_mod:score"'))
    assert e.field == "reward.function"
    assert e.value == "no_such_reward_mod:score"
    assert "cannot import module 'no_such_reward_mod'" in str(e)
    assert "ModuleNotFoundError" in str(e)


def test_callable_missing_attribute(tmp_path: Path, rewards_module: str):
    e = refuse(tmp_path, tiny_config(tmp_path, f'kind = "callable"\nfunction = "{rewards_module}:nope"'))
    assert e.field == "reward.function"
    assert "has no attribute 'nope'" in str(e)


def test_reward_returns_wrong_number_of_scores(tmp_path: Path, rewards_module: str):
    e = refuse(tmp_path, tiny_config(tmp_path, f'kind = "callable"\nfunction = "{rewards_module}:short"'))
    assert e.field == "reward.function"
    assert "returned 7 scores for a batch of 8" in str(e)


def test_reward_returns_nan(tmp_path: Path, rewards_module: str):
    e = refuse(tmp_path, tiny_config(tmp_path, f'kind = "callable"\nfunction = "{rewards_module}:nan"'))
    assert e.field == "reward.function"
    assert "returned nan" in str(e)


def test_reward_raises_on_probe_batch(tmp_path: Path, rewards_module: str):
    e = refuse(tmp_path, tiny_config(tmp_path, f'kind = "callable"\nfunction = "{rewards_module}:broken"'))
    assert e.field == "reward.function"
    assert "ZeroDivisionError" in str(e) and "divides by zero" in str(e)


def test_missing_reward_model_directory(tmp_path: Path):
    # Refused when the file loads, before any store or probe: the config names a folder that is not there.
    with pytest.raises(ConfigError) as ei:
        load_config(tiny_config(tmp_path, f'kind = "minilm"\npath = "{tmp_path / "no-head"}"'))
    assert ei.value.field == "reward.path"
    assert str(tmp_path / "no-head") in str(ei.value) and "no such directory" in str(ei.value)


def test_audit_metric_checked(tmp_path: Path, rewards_module: str):
    audit = '\n[[audit]]\nname = "chrf"\nkind = "chrf"\n\n[[audit]]\nkind = "callable"\n'
    audit += f'function = "{rewards_module}:nan"\n'
    e = refuse(tmp_path, tiny_config(tmp_path, audit=audit))
    assert e.field == "audit[1].function"
    assert "returned nan" in str(e)


def test_missing_policy_directory(tmp_path: Path):
    with pytest.raises(ConfigError) as ei:
        load_config(tiny_config(tmp_path, policy=str(tmp_path / "no-policy")))
    assert ei.value.field == "policy.path"
    assert "no such directory" in str(ei.value)


def test_policy_directory_without_config_json(tmp_path: Path):
    (tmp_path / "empty-policy").mkdir()
    e = refuse(tmp_path, tiny_config(tmp_path, policy=str(tmp_path / "empty-policy")))
    assert e.field == "policy.path"
    assert "no config.json" in str(e)


def test_policy_config_json_autoconfig_cannot_read(tmp_path: Path):
    pol = tmp_path / "bad-policy"
    pol.mkdir()
    (pol / "config.json").write_text(json.dumps({"model_type": "no-such-architecture"}))
    e = refuse(tmp_path, tiny_config(tmp_path, policy=str(pol)))
    assert e.field == "policy.path"
    assert "AutoConfig cannot read" in str(e)


def test_valid_configs_still_create(tmp_path: Path, rewards_module: str):
    store = open_store(tmp_path / "db" / "restgov.duckdb")
    runs = tmp_path / "db" / "runs"
    plain = new_campaign(store, load_config(tiny_config(tmp_path / "a")), runs)
    code = new_campaign(
        store,
        load_config(
            tiny_config(
                tmp_path / "b",
                f'kind = "callable"\nfunction = "{rewards_module}:good"',
                audit='\n[[audit]]\nkind = "chrf"\n',
            )
        ),
        runs,
    )
    assert sorted(c["id"] for c in store.campaigns()) == sorted([plain, code])
    assert (runs / plain / "inputs" / "validation.parquet").is_file()
    assert (runs / code / "inputs" / "train.parquet").is_file()


def test_cli_run_refuses_with_one_line(tmp_path: Path):
    cfg = tiny_config(tmp_path, 'kind = "callable"\nfunction = "no_such_reward_mod:score"')
    db = tmp_path / "db" / "restgov.duckdb"
    proc = restgov("run", cfg, "--db", db, timeout=120)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error in {cfg}: reward.function = 'no_such_reward_mod:score': ")
    assert "cannot import module 'no_such_reward_mod'" in lines[0]
    assert "Traceback" not in proc.stderr
    assert not (db.parent / "runs").exists()
    assert "no campaigns" in restgov("status", "--db", db, check=True, timeout=120).stdout
