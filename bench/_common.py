"""Shared set-up for the benchmarks: the arith recipe's tiny GPT-2 policy, optionally trained briefly.
Also the environment line (versions, cores, load average) every benchmark prints with its table.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path

import torch

from engine.config import ScratchModel
from engine.improve import TrainExample, fine_tune
from engine.models import Policy, build_scratch_policy, load_policy, pick_device, save_policy
from engine.recipes.arith import make_splits

SPEC = ScratchModel(n_layer=2, n_head=4, n_embd=128, vocab_size=320, max_length=64)
TEMPLATE = "{source} => "


def arith_policy(n_train: int = 2000, train_steps: int = 100, seed: int = 0, cache: Path | None = None):
    """(policy, splits): the arith recipe's scratch GPT-2, BC-trained for `train_steps` steps (0: untrained).

    With `cache`, the trained policy is saved there (save_pretrained) and loaded on later runs.
    """
    splits = make_splits(seed=7, sizes=dict(train=n_train, validation=200, test=300), answer_only=())
    if cache is not None and (cache / "config.json").is_file():
        policy = load_policy(cache, TEMPLATE)
        policy.model.eval()
        return policy, splits
    texts = [TEMPLATE.format(source=e.source) + e.reference for e in splits["train"]]
    model, tok = build_scratch_policy(SPEC, texts, seed)
    device = pick_device()
    policy = Policy(model.to(device), tok, device, TEMPLATE)
    if train_steps:
        exs = [TrainExample(e.source, e.reference) for e in splits["train"]]
        fine_tune(policy, exs, lr=2e-3, epochs=100, batch_size=32, seed=seed, max_steps=train_steps)
    policy.model.eval()
    if cache is not None:
        save_policy(policy, cache, {"bench": "arith", "train_steps": train_steps, "seed": seed})
    return policy, splits


def median_time(fn, repeats: int) -> tuple[float, list]:
    """Median wall seconds of `repeats` calls of fn(); also the list of fn's return values."""
    times, outs = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        outs.append(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times), outs


def env_line() -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"python {platform.python_version()}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"cpus {os.cpu_count()}, device {pick_device()}, load avg (1/5/15 min) {load}"
    )
