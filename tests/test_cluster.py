"""Grow shards as Ray tasks: a tiny campaign run by `restgov run` with `[cluster] address = "auto"` joins the
Ray cluster this test starts (2 CPUs); one Ray worker process is SIGKILLed while it holds a shard. Ray
reruns the shard: every (source, sample) lands exactly once, and the texts, token counts, log-probs and
rewards equal those of the same Grow task run in a worker process without Ray. A default config never
imports ray (or vllm).
"""

from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
from conftest import N_TRAIN, RESTGOV, SHARD_SOURCES, K, campaign_ids, restgov_env, write_tiny_campaign

from dashboard.grow_placement import grow_placement
from engine.worker import read_events, spawn

ROOT = Path(__file__).resolve().parent.parent
N_SHARDS = -(-N_TRAIN // SHARD_SOURCES)


def test_only_engine_cluster_imports_ray_and_a_default_grow_path_imports_neither(tmp_path):
    """Statically: `ray` appears in engine/cluster.py only and `vllm` in engine/vllm_backend.py only; at run
    time: loading a default config and the Grow, worker and evaluation modules leaves both unimported."""
    where: dict[str, set[str]] = {"ray": set(), "vllm": set()}
    for path in (ROOT / "engine").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom) and node.level == 0
                else []
            )
            for n in names:
                top = n.split(".")[0]
                if top in where:
                    where[top].add(str(path.relative_to(ROOT)))
    assert where == {"ray": {"engine/cluster.py"}, "vllm": {"engine/vllm_backend.py"}}
    cfg = write_tiny_campaign(tmp_path / "cfg")
    code = (
        "import sys; from engine.config import load_config; "
        "import engine.worker, engine.steps.grow, engine.evaluate, engine.vllm_backend; "
        f"c = load_config({str(cfg)!r}); assert c.cluster.address is None and c.grow.backend == 'hf'; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'vllm')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=restgov_env(), capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.fixture(scope="module")
def ray_cluster():
    """A 2-CPU Ray cluster on this machine that the campaign's worker joins with address = "auto"."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _grow_events(step_dir: Path) -> list[dict]:
    return read_events(step_dir / "events.jsonl", 0)[1]


@pytest.mark.slow  # about 2 minutes on 2 shared CPU cores: a whole tiny campaign, then its Grow again
def test_ray_grow_survives_a_killed_worker_and_equals_the_local_grow(tmp_path, ray_cluster):
    cfg = write_tiny_campaign(tmp_path / "cfg", grows=1)
    cluster = 'max_grow_steps = 1\n\n[cluster]\naddress = "auto"'
    text = cfg.read_text().replace("max_grow_steps = 1", cluster)
    text = text.replace("[improve]\n", "[improve]\nmax_steps = 2\n", 1).replace("max_steps = 5\n", "")
    cfg.write_text(text)
    db = tmp_path / "restgov.duckdb"
    t0 = time.perf_counter()
    with open(tmp_path / "run.log", "wb") as log:
        proc = subprocess.Popen(
            [*RESTGOV, "run", str(cfg), "--db", str(db)], stdout=log, stderr=log, env=restgov_env()
        )
    killed = None
    try:
        while proc.poll() is None and killed is None:  # the first shard task that reports its start
            runs = db.parent / "runs"
            grow = next(iter(runs.glob("*/steps/g1-grow")), None) if runs.exists() else None
            starts = [e for e in _grow_events(grow) if e["kind"] == "shard_start"] if grow else []
            if starts:
                killed = starts[0]
                os.kill(killed["pid"], signal.SIGKILL)
            time.sleep(0.05)
        assert killed is not None, "the Grow ended before a shard task was seen running"
        assert proc.wait(timeout=400) == 0, (tmp_path / "run.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    seconds = time.perf_counter() - t0
    (cid,) = campaign_ids(db)
    step = db.parent / "runs" / cid / "steps" / "g1-grow"
    events = _grow_events(step)
    done = [e for e in events if e["kind"] == "shard"]
    assert sorted(e["shard"] for e in done) == list(range(N_SHARDS))  # each shard reported once
    rerun = [e for e in events if e["kind"] == "shard_start" and e["shard"] == killed["shard"]]
    assert len(rerun) >= 2 and rerun[-1]["pid"] != killed["pid"], rerun  # Ray ran it again elsewhere
    assert all(e["host"] and e["node"] for e in done)
    result = json.loads((step / "result.json").read_text())
    assert result["cluster"] == "auto" and result["backend"] == "hf"
    assert sum(result["nodes"].values()) == N_SHARDS
    # The Campaigns page's "Where Grow runs" rows: every shard done on some node, none left unfinished.
    placement = grow_placement(db.parent / "runs" / cid, running=False)
    assert {(r["step"], r["backend"], r["cluster"]) for r in placement} == {("g1-grow", "hf", "auto")}
    assert sum(r["shards done"] for r in placement) == N_SHARDS
    assert sum(r["in flight"] + r["started, unfinished"] for r in placement) == 0

    with closing(duckdb.connect(str(db), read_only=True)) as con:
        got = con.execute(
            "SELECT source_id, sample_idx, text, n_tokens, sum_logprob, reward FROM samples "
            "WHERE campaign_id = ? AND grow = 1 AND sample_idx >= 0 ORDER BY source_id, sample_idx",
            [cid],
        ).fetchall()
    assert len(got) == N_TRAIN * K
    assert len({(s, i) for s, i, *_ in got}) == N_TRAIN * K  # no duplicate (source_id, sample_idx)

    # The same Grow task in a worker process without Ray.
    task = json.loads((step / "task.json").read_text())
    task["config"].pop("cluster", None)
    local = spawn(tmp_path / "local-grow", task)
    assert local["cluster"] is None and local["shards"] == N_SHARDS
    rows = [
        r
        for p in sorted((tmp_path / "local-grow" / "shards").glob("samples-*.parquet"))
        for r in pq.read_table(p).to_pylist()
        if r["sample_idx"] >= 0
    ]
    cols = ("source_id", "sample_idx", "text", "n_tokens", "sum_logprob", "reward")
    want = sorted(tuple(r[c] for c in cols) for r in rows)
    assert got == want
    with closing(duckdb.connect(str(db), read_only=True)) as con:
        steps = con.execute("SELECT step_key, seconds FROM steps WHERE campaign_id = ?", [cid]).fetchall()
    print(f"ray campaign: {seconds:.1f} s; steps: {steps}; local Grow {local['seconds']:.1f} s")


def test_a_shard_task_runs_no_more_torch_threads_than_the_cpus_it_asked_for():
    from engine.cluster import task_threads

    assert task_threads(8, 1.0) == 1  # 8 worker threads, one CPU per task: one thread
    assert task_threads(8, 4.0) == 4
    assert task_threads(2, 4.0) == 2  # fewer threads than CPUs: the worker's count stands
    assert task_threads(4, 0.0) == 4  # a GPU task asking for no CPU keeps the worker's count
    assert task_threads(3, 0.5) == 3
