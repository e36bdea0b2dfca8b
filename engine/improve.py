"""Improve (and bootstrap BC): fine-tune a policy on (source, target, weight) triples.

Loss: token-level NLL on the target only (BC), optionally weighted per example by its reward
(J = E[r log p], the ReST-EM M-step). Early stopping keeps the weights with the best validation
reward, evaluated before training too, so an Improve step never returns a worse policy than it got.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .models import Policy, autocast


@dataclass
class TrainExample:
    source: str
    target: str
    weight: float = 1.0


@dataclass
class TrainResult:
    steps: int = 0
    tokens: int = 0
    seconds: float = 0.0
    best_step: int = 0
    start_reward: float | None = None
    best_reward: float | None = None
    stopped_early: bool = False
    curve: list[dict] = field(default_factory=list)  # {step, loss, lr, val_reward?}


def _encode(policy: Policy, ex: TrainExample) -> tuple[list[int], list[int]]:
    p, t = policy.prompt_ids(ex.source), policy.target_ids(ex.target)
    ids = (p + t)[: policy.max_length]
    labels = ([-100] * len(p) + t)[: policy.max_length]
    return ids, labels


def _collate(batch: list[tuple[list[int], list[int], float]], pad: int, device: str):
    width = max(len(ids) for ids, _, _ in batch)
    ids = torch.tensor([i + [pad] * (width - len(i)) for i, _, _ in batch], device=device)
    labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab, _ in batch], device=device)
    attn = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i, _, _ in batch], device=device)
    weights = torch.tensor([w for _, _, w in batch], device=device, dtype=torch.float32)
    return ids, attn, labels, weights


def weighted_nll(
    logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor
) -> tuple[torch.Tensor, int]:
    """Mean over target tokens of w_example * -log p(token). Returns (loss, number of target tokens)."""
    logits, labels = logits[:, :-1].float(), labels[:, 1:]  # predict token t+1 from prefix <= t
    mask = labels != -100
    nll = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.size(-1)), labels.clamp(min=0).reshape(-1), reduction="none"
    ).view_as(labels)
    w = weights[:, None].expand_as(labels)
    n = int(mask.sum())
    return (nll * w * mask).sum() / max(n, 1), n


def fine_tune(
    policy: Policy,
    examples: list[TrainExample],
    lr: float,
    epochs: float,
    batch_size: int,
    seed: int,
    max_steps: int | None = None,
    evaluate: Callable[[], float] | None = None,
    eval_every: int = 50,
    patience: int = 2,
    on_step: Callable[[dict], None] | None = None,
    warmup_share: float = 0.05,
) -> TrainResult:
    """AdamW with linear warm-up and linear decay to 10% of `lr`. Mutates `policy.model` in place.

    With `evaluate` (returns the validation reward of the current weights), the weights are checked
    before training, every `eval_every` steps and at the end; the best weights are restored and
    training stops after `patience` checks without improvement.
    """
    if not examples:
        raise ValueError("fine_tune got no training examples (the filter kept nothing)")
    model, device = policy.model, policy.device
    rng = random.Random(seed)
    torch.manual_seed(seed)
    encoded = [(*_encode(policy, ex), ex.weight) for ex in examples]
    steps_per_epoch = math.ceil(len(encoded) / batch_size)
    total = max(1, math.ceil(steps_per_epoch * epochs))
    if max_steps:
        total = min(total, max_steps)
    warmup = max(1, int(total * warmup_share))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warmup, 1.0 - 0.9 * max(0, s - warmup) / max(1, total - warmup))
    )
    res = TrainResult()
    best_state = None
    bad_checks = 0

    def check(step: int) -> bool:
        """Evaluate; remember the best weights; return True when patience is exhausted."""
        nonlocal best_state, bad_checks
        reward = evaluate()
        res.curve.append({"step": step, "loss": None, "lr": None, "val_reward": reward})
        if on_step:
            on_step(res.curve[-1] | {"total": total})
        if res.start_reward is None:
            res.start_reward = reward
        if res.best_reward is None or reward > res.best_reward:
            res.best_reward, res.best_step, bad_checks = reward, step, 0
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            return False
        bad_checks += 1
        return bad_checks >= patience

    if evaluate:
        check(0)
    t0 = time.perf_counter()
    model.train()
    step = 0
    while step < total:
        order = list(range(len(encoded)))
        rng.shuffle(order)
        for b in range(0, len(order), batch_size):
            ids, attn, labels, w = _collate(
                [encoded[i] for i in order[b : b + batch_size]], policy.tokenizer.pad_token_id, device
            )
            with autocast(device):
                logits = model(input_ids=ids, attention_mask=attn).logits
            loss, n = weighted_nll(logits, labels, w)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            step += 1
            res.tokens += n
            point = {"step": step, "loss": loss.item(), "lr": sched.get_last_lr()[0], "val_reward": None}
            res.curve.append(point)
            if on_step:
                on_step(point | {"total": total})
            if evaluate and (step % eval_every == 0 or step == total):
                model.eval()
                stop = check(step)
                model.train()
                if stop:
                    res.stopped_early = step < total
                    step = total
            if step >= total:
                break
    res.steps = sum(1 for p in res.curve if p["loss"] is not None)
    res.seconds = time.perf_counter() - t0
    model.eval()
    if best_state is not None:
        model.load_state_dict(best_state)
    return res
