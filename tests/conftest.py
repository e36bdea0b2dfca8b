"""Shared fixtures: tiny arith campaigns (data + TOML) on a scratch policy small enough for 2 CPU cores,
and helpers to drive the real `restgov` console script in a subprocess against a DuckDB file in tmp_path.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from engine.data import write_examples  # noqa: E402
from engine.recipes.arith import make_splits  # noqa: E402

# The dashboard AppTest files' helpers and shared stores (session fixtures: each store is built once).
pytest_plugins = ["apptest_helpers"]

N_TRAIN, N_VAL, N_TEST = 120, 30, 30
K = 2  # grow.samples_per_source
SHARD_SOURCES = 16  # 120 sources -> 8 samples shards per Grow

TINY_TOML = """\
name = "{name}"
mode = "{mode}"
seed = 0

[policy]
prompt_template = "{{source}} => "

[policy.scratch]
n_layer = 1
n_head = 2
n_embd = 32
vocab_size = 300
max_length = 64

[policy.bootstrap]
epochs = 1
lr = 2e-3
batch_size = 32

[data]
train = "train.jsonl"
validation = "validation.jsonl"
test = "test.jsonl"

[reward]
kind = "numeric"

[grow]
samples_per_source = {k}
temperature = 0.8
max_new_tokens = 20
batch_size = {grow_batch}
shard_sources = {shard_sources}

[improve]
{improve}
lr = 1e-3
epochs = 1
max_steps = 5
batch_size = 16
eval_every = 5
patience = 2
# The originals (reward 1 under the numeric verifier) are mixed in so that a barely trained policy whose
# samples are all wrong still leaves every filter with something to keep.
original_mix = 1.0

[eval]
best_of_n = [1, 2]
max_sources = 10

[stop]
max_grow_steps = {grows}
"""


def write_tiny_campaign(
    root: Path,
    mode: str = "rest-em",
    improve: str = "",
    grows: int = 2,
    grow_batch: int = 64,
    name: str | None = None,
) -> Path:
    """Write train/validation/test JSONL and campaign.toml under `root`; return the TOML path."""
    root.mkdir(parents=True, exist_ok=True)
    for split, exs in make_splits(
        seed=3, sizes=dict(train=N_TRAIN, validation=N_VAL, test=N_TEST), answer_only=()
    ).items():
        write_examples(root / f"{split}.jsonl", exs)
    path = root / "campaign.toml"
    path.write_text(
        TINY_TOML.format(
            name=name or f"tiny-{mode}",
            mode=mode,
            k=K,
            grow_batch=grow_batch,
            shard_sources=SHARD_SOURCES,
            improve=improve,
            grows=grows,
        )
    )
    return path


def edit_toml(cfg_path: Path, replace: dict[str, str] | None = None, append: str = "") -> Path:
    """Edit a tiny campaign's TOML: replace exact snippets (each must be present), append tables."""
    text = cfg_path.read_text()
    for old, new in (replace or {}).items():
        assert old in text, f"{old!r} not in {cfg_path}"
        text = text.replace(old, new)
    cfg_path.write_text(text + append)
    return cfg_path


# Test files by how long they take (tiny campaigns, a Ray cluster, the browser: minutes each), longest first.
# tests/run.sh hands whole files to two processes in collection order: starting with the long ones keeps the
# two busy to the end instead of leaving one idle while the other runs the last long file.
LONG_FIRST = (
    "test_governance.py",
    "test_gates.py",
    "test_campaign.py",
    "test_governance_runs.py",
    "test_cli.py",
    "test_cluster.py",
    "test_browser.py",
    "test_lora.py",
    "test_page_governance.py",
    "test_page_campaigns.py",
    "test_architectures.py",
    "test_recipes.py",
    "test_browser_nav.py",
    "test_browser_concurrent.py",
    "test_rating_leases.py",
    "test_refresh.py",
    "test_reward_formats.py",
    "test_browser_sessions.py",
    "test_grow_sampler.py",
    "test_worker.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Long files first (LONG_FIRST), the rest in their usual order; tests keep their order within a file."""
    rank = {name: i for i, name in enumerate(LONG_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run fastest on one intra-op thread, and the 2 cores may be shared with other processes."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def tiny_arith(tmp_path: Path) -> Path:
    """ReST-EM (binary rule, restart from base), 2 Grow steps, 1 Improve each."""
    return write_tiny_campaign(tmp_path / "arith")


@pytest.fixture
def tiny_rest(tmp_path: Path) -> Path:
    """ReST with per-source percentiles [0, 50]: two warm-started Improve steps per Grow."""
    return write_tiny_campaign(
        tmp_path / "rest", mode="rest", improve='rule = "percentile"\npercentiles = [0.0, 50.0]'
    )


# ---------------------------------------------------------------- driving the CLI

# The console script beside this interpreter (or on PATH), else its entry point run by this interpreter.
_SCRIPT = Path(sys.executable).with_name("restgov")
_SCRIPT = str(_SCRIPT) if _SCRIPT.is_file() else shutil.which("restgov")
RESTGOV = [_SCRIPT] if _SCRIPT else [sys.executable, "-m", "engine.cli"]


def restgov_env() -> dict[str, str]:
    # One intra-op thread per process: the controller and its worker share 2 cores, and oversubscribed
    # torch threads make a tiny campaign several times slower.
    return os.environ | {
        "HF_HUB_OFFLINE": "1",
        "COLUMNS": "200",
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
    }


def restgov(*args: str | Path, timeout: float = 240, check: bool = False) -> subprocess.CompletedProcess:
    """Run `restgov ARGS` to completion; a hang fails the test instead of blocking the suite."""
    proc = subprocess.run(
        [*RESTGOV, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=restgov_env()
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"restgov {' '.join(map(str, args))} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def campaign_ids(db: Path) -> list[str]:
    """Campaign ids from the run directories beside the db (runs/<id>/)."""
    runs = db.parent / "runs"
    return sorted(p.name for p in runs.iterdir()) if runs.exists() else []


def status_json(db: Path, cid: str) -> dict:
    return json.loads(restgov("status", cid, "--db", db, "--json", check=True, timeout=120).stdout)


@pytest.fixture(scope="session")
def finished_arith(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, Path]:
    """One tiny ReST-EM campaign run to DONE with `restgov run`, shared by the campaign and CLI tests.

    Returns (db path, campaign id, config path). Tests must only read it.
    """
    root = tmp_path_factory.mktemp("finished")
    cfg = write_tiny_campaign(root / "arith")
    db = root / "db" / "restgov.duckdb"
    restgov("run", cfg, "--db", db, check=True, timeout=300)
    (cid,) = campaign_ids(db)
    return db, cid, cfg
