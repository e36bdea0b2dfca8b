"""The samplers behind `[grow] backend`: transformers generate (hf) or vLLM's offline LLM.generate (vllm).

`backend_refusal` says why vllm cannot run here (no vllm package, no CUDA) without importing vllm;
`resolve_backend` turns "auto" into the backend this process uses. `VllmPolicy` samples like
engine.grow.sample: the same prompts (prompt template, tail kept when too long), K samples per source,
temperature, top-p, max new tokens, and Candidate objects with the token count and the sum log-probability.

Log-probabilities: restgov's sum_logprob is under the unmodified policy (temperature 1, no top-p), as the
drift audit's KL estimate needs. vLLM reports the log-probability of each sampled token; the engine is built
with `logprobs_mode="raw_logprobs"` (vLLM >= 0.10.2) so these are the model's raw log-softmax, before
temperature and top-p, not the processed distribution it sampled from. The sum runs over the answer's
tokens and the first EOS when vLLM returns it (as the hf sampler counts it); n_tokens excludes the EOS.

Seeds: each source gets its own request seed derived from (seed, source position), so a source's K samples
do not depend on which other sources share the call. vLLM's draws differ from transformers' for the same
seed: the backends are each reproducible, not equal to one another.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from .grow import Candidate

# Share of GPU memory vLLM takes for weights and KV cache; the rest stays for the reward model and the
# BC policy's log-probabilities, which run through transformers on the same device.
GPU_MEMORY_UTILIZATION = 0.6


def backend_refusal() -> str | None:
    """Why the vllm backend cannot run in this process (None when it can); vllm itself is not imported."""
    if importlib.util.find_spec("vllm") is None:
        return "vllm is not installed (pip install restgov[vllm])"
    import torch

    if not torch.cuda.is_available():
        return "vLLM needs a CUDA device and torch sees none"
    return None


def resolve_backend(name: str) -> str:
    """hf or vllm: "auto" is vllm when vllm is installed and CUDA is present, hf otherwise."""
    if name == "auto":
        return "vllm" if backend_refusal() is None else "hf"
    return name


def request_seed(seed: int, source_index: int) -> int:
    """The vLLM request seed of one source: fixed by the unit's seed and the source's position."""
    h = hashlib.sha256(repr((seed, "vllm", source_index)).encode()).digest()
    return int.from_bytes(h[:4], "little") & 0x7FFFFFFF


class VllmPolicy:
    """A checkpoint served by vLLM for sampling: a full model directory, or a base model plus a LoRA
    adapter directory. Only sampling goes through vLLM; training and log-prob scoring stay in transformers."""

    backend = "vllm"

    def __init__(self, path: str | Path, prompt_template: str, seed: int = 0, chat_template: bool = False):
        from types import SimpleNamespace

        from transformers import AutoConfig, AutoTokenizer
        from vllm import LLM

        from .models import Policy

        self.path = str(path)
        from .lora import adapter_base, is_adapter_dir

        base = str(adapter_base(path)) if is_adapter_dir(path) else None
        model_dir = base or self.path
        config = AutoConfig.from_pretrained(model_dir, local_files_only=True, trust_remote_code=False)
        if getattr(config, "is_encoder_decoder", False):
            raise ValueError(f"{model_dir}: grow.backend = 'vllm' serves decoder-only policies; use hf")
        tok = AutoTokenizer.from_pretrained(self.path, local_files_only=True, trust_remote_code=False)
        # engine.models' Policy over the model's config alone: prompts, special tokens and truncation are
        # built by the same code as on the hf backend, without loading the weights into transformers.
        self.prompts = Policy(SimpleNamespace(config=config), tok, "cpu", prompt_template, chat_template)
        self.eos = tok.eos_token_id
        kwargs: dict = {}
        self.lora = None
        if base is not None:
            from vllm.lora.request import LoRARequest

            rank = int(json.loads((Path(path) / "adapter_config.json").read_text()).get("r", 16))
            kwargs |= dict(enable_lora=True, max_lora_rank=max(rank, 8))
            self.lora = LoRARequest("policy", 1, self.path)
        self.llm = LLM(
            model=model_dir,
            tokenizer=self.path,
            seed=seed,
            gpu_memory_utilization=GPU_MEMORY_UTILIZATION,
            logprobs_mode="raw_logprobs",
            **kwargs,
        )

    def sample(
        self,
        sources: list[str],
        k: int,
        temperature: float = 0.8,
        top_p: float = 1.0,
        max_new_tokens: int = 48,
        seed: int = 0,
        greedy: bool = False,
        on_batch: Callable[[int], None] | None = None,
    ) -> list[Candidate]:
        """K candidates per source (one greedy decode each when `greedy`), in (source, sample) order."""
        from vllm import SamplingParams

        if greedy:
            k = 1
        params = [
            SamplingParams(
                n=k,
                temperature=0.0 if greedy else temperature,
                top_p=1.0 if greedy else top_p,
                max_tokens=max_new_tokens,
                seed=request_seed(seed, i),
                logprobs=0,  # the sampled token's own log-probability
                skip_special_tokens=True,
            )
            for i in range(len(sources))
        ]
        pol = self.prompts
        prompts = [{"prompt_token_ids": pol.fit_prompt(pol.prompt_ids(s), max_new_tokens)} for s in sources]
        outs = self.llm.generate(prompts, params, use_tqdm=False, lora_request=self.lora)
        cands = []
        for i, req in enumerate(outs):
            for j, c in enumerate(req.outputs):
                n, lp = answer_stats(list(c.token_ids), c.logprobs, self.eos)
                cands.append(Candidate(i, j, c.text.strip(), n, lp))
        if on_batch:
            on_batch(len(sources))
        return cands


def answer_stats(token_ids: list[int], logprobs: list[dict] | None, eos: int | None) -> tuple[int, float]:
    """(tokens before the first EOS, sum of raw log-probs up to and including it) of one vLLM output."""
    n, total = 0, 0.0
    for pos, tok in enumerate(token_ids):
        if logprobs is not None:
            total += float(logprobs[pos][tok].logprob)
        if tok == eos:
            break
        n += 1
    return n, total


@lru_cache(maxsize=2)
def vllm_policy(path: str, prompt_template: str, seed: int = 0, chat_template: bool = False) -> VllmPolicy:
    """One vLLM engine per checkpoint and process (building one takes seconds to minutes)."""
    return VllmPolicy(path, prompt_template, seed, chat_template)


def load_sampling_policy(
    path: str | Path, prompt_template: str, backend: str, seed: int = 0, chat_template: bool = False
):
    """The policy a step samples from: a VllmPolicy on the vllm backend, else engine.models' Policy."""
    if resolve_backend(backend) == "vllm":
        return vllm_policy(str(path), prompt_template, seed, chat_template)
    from .models import load_policy

    return load_policy(path, prompt_template, chat_template=chat_template)


def sample_any(policy, sources: list[str], k: int, **kw) -> list[Candidate]:
    """engine.grow.sample for a transformers Policy, VllmPolicy.sample for a vLLM one (batch_size is the
    hf sampler's batching, as is batch_tokens; vLLM schedules its own batches)."""
    if getattr(policy, "backend", "hf") == "vllm":
        kw.pop("batch_size", None)
        kw.pop("batch_tokens", None)
        return policy.sample(sources, k, **kw)
    from .grow import sample

    return sample(policy, sources, k, **kw)
