"""Device choice, made once per process: the first CUDA device when present, else the CPU.

On CUDA, forward passes run under bf16 autocast; on CPU they stay in fp32 so runs are reproducible.
"""

from __future__ import annotations

import contextlib


def pick_device(device: str | None = None) -> str:
    """The caller's device, else CUDA when available, else CPU."""
    if device:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def autocast(device: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; a no-op elsewhere."""
    if str(device).startswith("cuda"):
        import torch

        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
