"""`[grow] backend`: "vllm" is refused when the config is loaded on a machine without vllm or without CUDA
(naming grow.backend and why, without importing vllm); "auto" is vllm where both are present and hf
elsewhere, and then samples exactly as engine.grow.sample. Where vllm and CUDA are present, a tiny Llama
is sampled through vLLM: K candidates per source, token counts and sum log-probs under the raw policy.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import restgov_env, write_tiny_campaign

from engine.config import ConfigError, load_config
from engine.vllm_backend import backend_refusal, load_sampling_policy, resolve_backend, sample_any

ROOT = Path(__file__).resolve().parent.parent
HAS_VLLM = importlib.util.find_spec("vllm") is not None
HAS_CUDA = torch.cuda.is_available()


def _config(tmp_path: Path, backend: str) -> Path:
    cfg = write_tiny_campaign(tmp_path / backend)
    cfg.write_text(cfg.read_text().replace("[grow]\n", f'[grow]\nbackend = "{backend}"\n'))
    return cfg


@pytest.mark.skipif(HAS_VLLM and HAS_CUDA, reason="vllm and CUDA are both present: nothing to refuse")
def test_vllm_backend_is_refused_at_load_without_vllm_or_cuda_and_vllm_is_not_imported(tmp_path):
    why = "vllm is not installed" if not HAS_VLLM else "vLLM needs a CUDA device"
    assert backend_refusal().startswith(why)
    code = (
        "import sys; from engine.config import ConfigError, load_config\n"
        f"try:\n    load_config({str(_config(tmp_path, 'vllm'))!r})\n"
        "except ConfigError as e:\n    print(e.field, '|', e.allowed, '|', 'vllm' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=restgov_env(), capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    field, allowed, imported = out.stdout.strip().split(" | ")
    assert field == "grow.backend" and allowed.startswith(why) and "'hf' or 'auto'" in allowed
    assert imported == "False"


def test_auto_picks_vllm_only_with_vllm_and_cuda_and_samples_like_hf_otherwise(tmp_path, one_torch_thread):
    from tiny_models import save_tiny_policy

    from engine.grow import sample

    assert resolve_backend("auto") == ("vllm" if HAS_VLLM and HAS_CUDA else "hf")
    assert resolve_backend("hf") == "hf" and resolve_backend("vllm") == "vllm"
    assert load_config(_config(tmp_path, "auto")).grow.backend == "auto"  # never refused
    if HAS_VLLM and HAS_CUDA:
        pytest.skip("auto resolves to vllm here; test_vllm_samples_a_tiny_llama covers that path")
    path = save_tiny_policy("llama", tmp_path / "llama")
    policy = load_sampling_policy(path, "{source} => ", "auto")
    assert type(policy).__name__ == "Policy"  # engine.models' transformers policy
    sources = ["12 + 7", "3 * 4", "a red house"]
    kw = dict(temperature=0.8, top_p=0.9, max_new_tokens=8, batch_size=4, seed=5)
    got = sample_any(policy, sources, 3, **kw)
    assert got == sample(policy, sources, 3, **kw)
    assert [(c.source_index, c.sample_index) for c in got] == [(i, j) for i in range(3) for j in range(3)]


@pytest.mark.skipif(not (HAS_VLLM and HAS_CUDA), reason="needs vllm installed and a CUDA device")
def test_vllm_samples_a_tiny_llama(tmp_path):
    from tiny_models import save_tiny_policy

    from engine.drift import score_logprobs
    from engine.models import load_policy
    from engine.vllm_backend import VllmPolicy

    assert backend_refusal() is None
    load_config(_config(tmp_path, "vllm"))  # accepted here
    path = save_tiny_policy("llama", tmp_path / "llama")
    pol = VllmPolicy(path, "{source} => ", seed=0)
    sources = ["12 + 7", "3 * 4", "a red house", "what is 40 - 2"]
    cands = pol.sample(sources, 4, temperature=0.8, top_p=1.0, max_new_tokens=12, seed=3)
    assert [(c.source_index, c.sample_index) for c in cands] == [(i, j) for i in range(4) for j in range(4)]
    assert all(0 <= c.n_tokens <= 12 for c in cands)
    again = pol.sample(sources, 4, temperature=0.8, top_p=1.0, max_new_tokens=12, seed=3)
    assert [c.text for c in again] == [c.text for c in cands]  # a fixed seed redraws the same samples
    # sum_logprob is under the raw policy (temperature 1): transformers scores the same texts alike.
    # Only answers that ended with EOS are compared (a cut answer's text + EOS is not what was sampled).
    hf = load_policy(path, "{source} => ", device="cuda")
    ended = [c for c in cands if c.n_tokens < 12]
    ref = score_logprobs(hf, [sources[c.source_index] for c in ended], [c.text for c in ended])
    for c, r in zip(ended, ref):
        assert abs(c.sum_logprob - float(r)) < 0.05 * (c.n_tokens + 1), (c, r)
    greedy = pol.sample(sources, 4, max_new_tokens=12, greedy=True)
    assert [c.sample_index for c in greedy] == [0, 0, 0, 0]


def test_config_refusal_names_the_field_for_a_bad_backend_value(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(_config(tmp_path, "tgi"))
    assert e.value.field == "grow.backend"
