"""LoRA fine-tuning through peft ([improve.lora]): adapters over a frozen base policy.

A LoRA checkpoint is a directory holding `adapter_config.json` (whose `base_model_name_or_path` names the
full base checkpoint it adapts, an absolute path), the adapter weights, the tokenizer and `restgov.json`.
- Sampling (Grow, evaluation) loads base + adapter and merges them: one weight matrix per layer, so the
  sampler runs at the full model's speed.
- Training loads them unmerged with only the adapter trainable; a policy without an adapter gets a fresh one
  (the first Improve, and every Improve with `improve.init = "restart_from_base"`).
- Export: `restgov merge-lora --checkpoint DIR --out DIR` writes a plain Hugging Face directory.

peft is an optional extra (`pip install restgov[lora]`), imported only here and only when LoRA is used.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from .config import LoraSpec

ADAPTER_CONFIG = "adapter_config.json"


def is_adapter_dir(path: str | Path) -> bool:
    return (Path(path) / ADAPTER_CONFIG).is_file()


def adapter_base(path: str | Path) -> Path:
    """The full checkpoint directory an adapter directory was trained on."""
    cfg = json.loads((Path(path) / ADAPTER_CONFIG).read_text())
    base = cfg.get("base_model_name_or_path")
    if not base or not (Path(base) / "config.json").is_file():
        raise FileNotFoundError(
            f"adapter {path}: its base model {base!r} (adapter_config.json base_model_name_or_path) is not a "
            "local model directory"
        )
    return Path(base)


def _peft():
    try:
        import peft
    except ImportError as e:  # pragma: no cover - the test extra installs peft
        raise ImportError("[improve.lora] needs peft: pip install 'restgov[lora]'") from e
    return peft


def load_adapter_policy(path: str | Path, load_base: Callable, trainable: bool = False, **kwargs):
    """base + adapter of a LoRA checkpoint: merged for sampling, or unmerged with the adapter trainable."""
    peft = _peft()
    policy = load_base(adapter_base(path), **kwargs)
    _frozen_base_in_bf16(policy)
    model = peft.PeftModel.from_pretrained(policy.model, str(path), is_trainable=trainable)
    policy.model = model if trainable else model.merge_and_unload()
    policy.model.to(policy.device)
    return policy


def _frozen_base_in_bf16(policy) -> None:
    """On CUDA the frozen base weights are kept in bf16 (half the memory of fp32; forward passes run under
    bf16 autocast there anyway); peft keeps the trainable adapter weights in fp32. On CPU nothing changes."""
    if str(policy.device).startswith("cuda"):
        import torch

        policy.model.to(torch.bfloat16)


def add_adapter(policy, spec: LoraSpec, base_path: str | Path, seed: int = 0) -> None:
    """Wrap `policy.model` (a full checkpoint loaded from `base_path`) in a fresh LoRA adapter, its random
    A matrices drawn from `seed` (B starts at zero, so the adapted model starts equal to the base)."""
    import torch

    peft = _peft()
    task = "SEQ_2_SEQ_LM" if getattr(policy.model.config, "is_encoder_decoder", False) else "CAUSAL_LM"
    lcfg = peft.LoraConfig(
        r=spec.r,
        lora_alpha=spec.alpha,
        lora_dropout=spec.dropout,
        target_modules=spec.target_modules,
        task_type=task,
    )
    _frozen_base_in_bf16(policy)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = peft.get_peft_model(policy.model, lcfg)
    except ValueError as e:  # no target_modules given and peft knows no default for this architecture
        raise ValueError(f"improve.lora.target_modules: {e}") from e
    model.peft_config["default"].base_model_name_or_path = str(Path(base_path).resolve())
    policy.model = model


def policy_for_training(
    path: str | Path, spec: LoraSpec | None, load_policy: Callable, seed: int = 0, **kwargs
):
    """The policy an Improve step trains: all weights without LoRA; else the checkpoint's adapter (warm
    start from a LoRA checkpoint) or a fresh adapter over a full checkpoint (first Improve, restart)."""
    if spec is None:
        return load_policy(path, **kwargs)
    if is_adapter_dir(path):
        return load_policy(path, trainable=True, **kwargs)
    policy = load_policy(path, **kwargs)
    add_adapter(policy, spec, path, seed)
    return policy


def trainable_share(model) -> tuple[int, int]:
    """(trainable parameters, all parameters)."""
    n_all = sum(p.numel() for p in model.parameters())
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return n_train, n_all


def merge(checkpoint: str | Path, out: str | Path) -> Path:
    """Write base + adapter merged as a plain save_pretrained directory (for export or serving)."""
    from .models import load_policy, save_policy

    if not is_adapter_dir(checkpoint):
        raise FileNotFoundError(f"{checkpoint} has no {ADAPTER_CONFIG}: not a LoRA checkpoint")
    meta_path = Path(checkpoint) / "restgov.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    policy = load_policy(checkpoint, "{source}")  # merged on load
    return save_policy(policy, out, meta | {"merged_from": str(Path(checkpoint).resolve())})
