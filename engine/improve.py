"""Improve (and bootstrap BC): fine-tune a policy on (source, target, weight) triples.

Loss: token-level NLL on the target only (BC), optionally weighted per example by its reward
(J = E[r log p], the ReST-EM M-step). A causal policy reads prompt + target as one sequence; an
encoder-decoder policy reads the prompt in its encoder and the target as decoder labels. Early stopping
keeps the weights with the best validation reward, evaluated before training too, so an Improve step
never returns a worse policy than it got.
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


def answer_room(policy: Policy, n_target: int) -> int:
    """Positions a causal policy's sequence reserves for a target of `n_target` tokens (EOS included): all
    of it, but at most half the context (rounded up), so a long prompt keeps at least its last
    max_length // 2 tokens and a long target at least its first ceil(max_length / 2)."""
    return min(n_target, policy.max_length - policy.max_length // 2)


def _encode(policy: Policy, ex: TrainExample) -> tuple[list[int], list[int]]:
    """(input ids, labels) of one pair under the truncation rule Grow uses (`Policy.fit_prompt`: the
    prompt keeps its tail), so every pair trains on target tokens.

    Causal: ids = fit_prompt(prompt, answer_room) + target, cut at max_length; labels are -100 on the
    prompt. A target that fits keeps all its tokens with EOS, and the prompt then keeps at least the tail
    Grow sampled from when the target is no longer than Grow's max_new_tokens (Grow reserves
    max_new_tokens); a longer one keeps at least min(len(target), ceil(max_length / 2)) tokens.
    Encoder-decoder: ids = fit_prompt(prompt, 0) (up to max_length encoder tokens), labels = target + EOS
    cut at max_length (the decoder input is the labels shifted right after the decoder start token).
    """
    p, t = policy.prompt_ids(ex.source), policy.target_ids(ex.target)
    if policy.is_seq2seq:
        return policy.fit_prompt(p, 0), t[: policy.max_length]
    p = policy.fit_prompt(p, answer_room(policy, len(t)))
    t = t[: max(1, policy.max_length - len(p))]
    return p + t, [-100] * len(p) + t


def _collate(batch: list[tuple[list[int], list[int], float]], pad: int, device: str):
    """Right-padded tensors (ids, attention mask, labels, weights). Ids and labels are padded to their own
    widths: the same for a causal policy, the encoder's and the decoder's for an encoder-decoder one."""
    width = max(len(ids) for ids, _, _ in batch)
    lab_width = max(len(lab) for _, lab, _ in batch)
    ids = torch.tensor([i + [pad] * (width - len(i)) for i, _, _ in batch], device=device)
    labels = torch.tensor([lab + [-100] * (lab_width - len(lab)) for _, lab, _ in batch], device=device)
    attn = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i, _, _ in batch], device=device)
    weights = torch.tensor([w for _, _, w in batch], device=device, dtype=torch.float32)
    return ids, attn, labels, weights


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor, shifted: bool = True) -> torch.Tensor:
    """log p(label) per position, 0 where the label is -100. `shifted` (causal): logits at t predict the
    token at t+1; else (encoder-decoder decoder logits) the label at t itself."""
    if shifted:
        logits, labels = logits[:, :-1], labels[:, 1:]
    lp = torch.log_softmax(logits.float(), -1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return lp * (labels != -100)


def policy_logits(
    policy: Policy, ids: torch.Tensor, attn: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Logits over the positions `labels` are scored at: the whole sequence for a causal policy, the
    decoder's for an encoder-decoder one (its decoder input is built from `labels` by the model)."""
    with autocast(policy.device):
        if policy.is_seq2seq:
            return policy.model(input_ids=ids, attention_mask=attn, labels=labels).logits
        return policy.model(input_ids=ids, attention_mask=attn).logits


def weighted_nll(
    logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor, shifted: bool = True
) -> tuple[torch.Tensor, int]:
    """Mean over target tokens of w_example * -log p(token). Returns (loss, number of target tokens).
    `shifted` as in `token_logprobs`: False for an encoder-decoder policy's decoder logits."""
    if shifted:
        logits, labels = logits[:, :-1], labels[:, 1:]  # predict token t+1 from prefix <= t
    logits = logits.float()
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
    grad_accum: int = 1,
    gradient_checkpointing: bool = False,
) -> TrainResult:
    """AdamW with linear warm-up and linear decay to 10% of `lr`. Mutates `policy.model` in place.

    Only parameters that require grad are trained (with a LoRA adapter, the adapter alone). An optimizer
    step averages the losses of `grad_accum` micro-batches of `batch_size` pairs each. With `evaluate`
    (returns the validation reward of the current weights), the weights are checked before training,
    every `eval_every` steps and at the end; the best weights are restored and training stops after
    `patience` checks without improvement.
    """
    if not examples:
        raise ValueError("fine_tune got no training examples (the filter kept nothing)")
    model = policy.model
    rng = random.Random(seed)
    torch.manual_seed(seed)
    encoded = [(*_encode(policy, ex), ex.weight) for ex in examples]
    steps_per_epoch = math.ceil(len(encoded) / (batch_size * grad_accum))
    total = max(1, math.ceil(steps_per_epoch * epochs))
    if max_steps:
        total = min(total, max_steps)
    warmup = max(1, int(total * warmup_share))
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if gradient_checkpointing:
        _enable_checkpointing(model)
    opt = torch.optim.AdamW(list(params.values()), lr=lr, weight_decay=0.01)
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
            # The trained parameters only: with LoRA a few MB instead of a copy of the whole model.
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in params.items()}
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
        per_step = batch_size * grad_accum
        for b in range(0, len(order), per_step):
            chunk = order[b : b + per_step]
            micro = [chunk[m : m + batch_size] for m in range(0, len(chunk), batch_size)]
            opt.zero_grad(set_to_none=True)
            loss_sum = 0.0
            n = 0
            for mb in micro:
                loss_mb, n_mb = _batch_loss(policy, [encoded[i] for i in mb])
                (loss_mb / len(micro)).backward()
                loss_sum += loss_mb.item()
                n += n_mb
            loss = loss_sum / len(micro)
            torch.nn.utils.clip_grad_norm_(list(params.values()), 1.0)
            opt.step()
            sched.step()
            step += 1
            res.tokens += n
            point = {"step": step, "loss": loss, "lr": sched.get_last_lr()[0], "val_reward": None}
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
        with torch.no_grad():
            for k, v in best_state.items():
                params[k].copy_(v)
    if gradient_checkpointing:
        model.gradient_checkpointing_disable()
    return res


def _batch_loss(policy: Policy, batch: list[tuple[list[int], list[int], float]]) -> tuple[torch.Tensor, int]:
    """Weighted NLL of one micro-batch of encoded (ids, labels, weight) and its target-token count."""
    ids, attn, labels, w = _collate(batch, policy.tokenizer.pad_token_id, policy.device)
    logits = policy_logits(policy, ids, attn, labels)
    return weighted_nll(logits, labels, w, shifted=not policy.is_seq2seq)


def _enable_checkpointing(model: torch.nn.Module) -> None:
    """Recompute activations in backward; with frozen embeddings (LoRA) the inputs must carry grad."""
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if hasattr(model, "enable_input_require_grads"):
        model.enable_input_require_grads()
