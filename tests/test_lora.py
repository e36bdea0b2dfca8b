"""LoRA fine-tuning ([improve.lora], peft) on a tiny random Llama: only the adapter trains, a checkpoint is
the adapter alone, sampling sees base + adapter merged, warm starts continue the saved adapter, the merge
export equals the adapted model, and a campaign killed after its first LoRA Improve resumes from the adapter
checkpoint to DONE."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from conftest import RESTGOV, campaign_ids, restgov, restgov_env, status_json, write_tiny_campaign
from tiny_models import save_tiny_policy

from engine.config import LoraSpec
from engine.improve import TrainExample, fine_tune
from engine.lora import is_adapter_dir, policy_for_training, trainable_share
from engine.models import load_policy, save_policy

pytest.importorskip("peft")

PAIRS = [TrainExample(f"{a} + {b}", str(a + b)) for a in range(6) for b in range(4)]


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    return save_tiny_policy("llama", tmp_path_factory.mktemp("llama") / "base")


def _logits(policy, text: str = "3 + 4 => ") -> torch.Tensor:
    ids = torch.tensor([policy.prompt_ids(text.removesuffix(" => "))])
    with torch.no_grad():
        return policy.model(input_ids=ids).logits.float()


def _train(policy, steps: int = 6, **kw):
    return fine_tune(policy, PAIRS, lr=5e-3, epochs=10, batch_size=8, seed=0, max_steps=steps, **kw)


def test_only_the_adapter_trains_and_is_saved(llama_dir: Path, tmp_path: Path):
    spec = LoraSpec(r=4, alpha=8.0, dropout=0.0)
    policy = policy_for_training(llama_dir, spec, load_policy, prompt_template="{source} => ")
    n_train, n_all = trainable_share(policy.model)
    assert 0 < n_train < n_all / 5
    before = {n: p.detach().clone() for n, p in policy.model.named_parameters()}
    res = _train(policy)
    assert res.steps == 6
    changed = {n for n, p in policy.model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all("lora_" in n for n in changed)
    # peft's default targets for Llama: the query and value projections, in every layer.
    assert {n.split(".")[-4] for n in changed} == {"q_proj", "v_proj"}
    assert any(
        "lora_B" in n for n in changed
    )  # B starts at zero: it moved, so the adapter now does something

    out = save_policy(policy, tmp_path / "g1-i1", {"policy": "g1-i1"})
    assert is_adapter_dir(out)
    assert not (out / "model.safetensors").exists()
    adapter_bytes = (out / "adapter_model.safetensors").stat().st_size
    assert adapter_bytes < (llama_dir / "model.safetensors").stat().st_size / 5
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == str(
        llama_dir.resolve()
    )

    adapted = _logits(policy)
    merged = load_policy(out, "{source} => ")  # sampling: base + adapter merged into plain weights
    assert not hasattr(merged.model, "peft_config")
    assert torch.allclose(_logits(merged), adapted, atol=1e-5)
    base = load_policy(llama_dir, "{source} => ")
    assert (_logits(base) - adapted).abs().max() > 1e-3

    # Warm start: the saved adapter, trainable again, picks up where it stopped.
    again = policy_for_training(out, spec, load_policy, prompt_template="{source} => ")
    assert trainable_share(again.model)[0] == n_train
    assert torch.allclose(_logits(again), adapted, atol=1e-5)
    _train(again, steps=2)
    assert (_logits(again) - adapted).abs().max() > 0

    # Export: a plain directory that loads without peft and gives the adapted model's logits.
    exported = tmp_path / "export"
    done = restgov("merge-lora", "--checkpoint", out, "--out", exported, check=True)
    assert str(exported) in done.stdout
    assert (exported / "config.json").is_file() and not is_adapter_dir(exported)
    again_out = restgov("merge-lora", "--checkpoint", out, "--out", exported)
    assert again_out.returncode == 2 and "already exists" in again_out.stderr
    not_lora = restgov("merge-lora", "--checkpoint", llama_dir, "--out", tmp_path / "x")
    assert not_lora.returncode == 2 and "not a LoRA checkpoint" in not_lora.stderr
    assert torch.allclose(_logits(load_policy(exported, "{source} => ")), adapted, atol=1e-5)


def test_grad_accum_and_checkpointing_match_one_big_batch(llama_dir: Path):
    """Two micro-batches of 8 accumulated give the gradient of one batch of 16 (up to float error), with and
    without gradient checkpointing."""
    spec = LoraSpec(r=4, alpha=8.0, dropout=0.0)
    finals = []
    for kw in (
        dict(batch_size=16),
        dict(batch_size=8, grad_accum=2),
        dict(batch_size=8, grad_accum=2, gradient_checkpointing=True),
    ):
        policy = policy_for_training(llama_dir, spec, load_policy, prompt_template="{source} => ")
        bs = kw.pop("batch_size")
        # 16 pairs of equal length: the per-micro-batch token means average to the big batch's token mean.
        pairs = [TrainExample(f"{a} + {b}", str(a + b)) for a in range(4) for b in range(4)]
        fine_tune(policy, pairs, lr=5e-3, epochs=1, batch_size=bs, seed=0, max_steps=1, **kw)
        finals.append({n: p.detach().clone() for n, p in policy.model.named_parameters() if "lora_" in n})
    for other in finals[1:]:
        assert max((finals[0][n] - other[n]).abs().max().item() for n in other) < 1e-6


def test_campaign_resumes_from_an_adapter_checkpoint(llama_dir: Path, tmp_path: Path):
    """A ReST campaign on the Llama policy with LoRA: SIGKILLed once its first Improve has saved an adapter,
    resumed, it runs to DONE (the second Improve warm-starts from that adapter, the final evaluation samples
    from base + adapter merged); every Improve checkpoint is an adapter over the base checkpoint."""
    cfg = write_tiny_campaign(
        tmp_path / "lora",
        mode="rest",
        grows=1,
        improve='rule = "percentile"\npercentiles = [0.0, 50.0]\nlora = { r = 4, alpha = 8.0 }',
    )
    text = cfg.read_text()
    scratch = text[text.index("[policy.scratch]") : text.index("[policy.bootstrap]")]
    cfg.write_text(text.replace(scratch, f'path = "{llama_dir}"\n\n'))
    db = tmp_path / "db" / "restgov.duckdb"
    proc = subprocess.Popen(
        [*RESTGOV, "run", str(cfg), "--db", str(db)],
        env=restgov_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            ids = campaign_ids(db)
            ckpt = db.parent / "runs" / ids[0] / "checkpoints" / "g1-i1" if ids else None
            if ckpt is not None and is_adapter_dir(ckpt):
                break
            if proc.poll() is not None:
                pytest.fail(f"restgov run exited {proc.returncode}:\n{proc.stdout.read().decode()[-3000:]}")
            time.sleep(0.5)
        else:
            pytest.fail("no adapter checkpoint g1-i1 within 240 s")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    (cid,) = campaign_ids(db)
    restgov("resume", cid, "--db", db, check=True, timeout=300)
    st = status_json(db, cid)
    assert st["state"] == "DONE", st
    runs = db.parent / "runs" / cid / "checkpoints"
    improves = sorted(
        p.name for p in runs.iterdir() if p.name.startswith("g") and not p.name.endswith(".tmp")
    )
    assert improves == ["g1-i1", "g1-i2"]  # g1-i2 warm-starts from the adapter saved before the kill
    for name in improves:
        assert is_adapter_dir(runs / name)
        base = json.loads((runs / name / "adapter_config.json").read_text())["base_model_name_or_path"]
        assert base == str((runs / "base").resolve())
    assert json.loads((runs / "g1-i2" / "restgov.json").read_text())["init"] == str(runs / "g1-i1")
    steps = {(s["grow"], s["improve"]): s for s in st["steps"]}
    assert set(steps) >= {(1, 1), (1, 2)}
