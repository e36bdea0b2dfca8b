"""Grow: sample K candidates per source from the current policy, batched and KV-cached.

`sample` is pure: same policy, sources, settings and seed give the same candidates on CPU.
Each candidate carries its token count and its sum log-probability under the unmodified policy
(temperature 1, no top-p), which the drift audit uses to estimate KL from the base policy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .models import Policy, autocast


@dataclass
class Candidate:
    source_index: int  # position in the `sources` list given to `sample`
    sample_index: int  # 0..K-1
    text: str
    n_tokens: int
    sum_logprob: float


@torch.no_grad()
def sample(
    policy: Policy,
    sources: list[str],
    k: int,
    temperature: float = 0.8,
    top_p: float = 1.0,
    max_new_tokens: int = 48,
    batch_size: int = 64,
    seed: int = 0,
    greedy: bool = False,
    on_batch: Callable[[int], None] | None = None,
) -> list[Candidate]:
    """K samples for each source (or one greedy decode each when `greedy`).

    Sources are sorted by prompt length and packed `batch_size // k` at a time (left-padded) so each
    generate call does little padding; results come back in (source, sample) order.
    """
    model = policy.model
    was_training = model.training
    model.eval()
    if greedy:
        k = 1
    prompts = [policy.fit_prompt(policy.prompt_ids(s), max_new_tokens) for s in sources]
    order = sorted(range(len(sources)), key=lambda i: len(prompts[i]))
    per_call = max(1, batch_size // k)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    out: list[Candidate] = []
    try:
        for start in range(0, len(order), per_call):
            idx = order[start : start + per_call]
            out.extend(
                _sample_batch(
                    policy, [prompts[i] for i in idx], idx, k, temperature, top_p, max_new_tokens, greedy, gen
                )
            )
            if on_batch:
                on_batch(len(idx))
    finally:
        model.train(was_training)
    out.sort(key=lambda c: (c.source_index, c.sample_index))
    return out


def _sample_batch(
    policy, prompts, idx, k, temperature, top_p, max_new_tokens, greedy, gen
) -> list[Candidate]:
    tok, device = policy.tokenizer, policy.device
    width = max(len(p) for p in prompts)
    pad = tok.pad_token_id
    input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=device)
    attn = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    # One seed per batch drawn from the campaign generator keeps results independent of the device RNG state.
    torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
    kwargs = (
        dict(do_sample=False)
        if greedy
        else dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=0)
    )
    with autocast(device):
        res = policy.model.generate(
            input_ids=input_ids,
            attention_mask=attn,
            max_new_tokens=max_new_tokens,
            num_return_sequences=k,
            pad_token_id=pad,
            eos_token_id=tok.eos_token_id,
            return_dict_in_generate=True,
            output_logits=True,
            use_cache=True,
            **kwargs,
        )
    new = res.sequences[:, width:]  # (B*K, T)
    logits = torch.stack(res.logits, dim=1).float()  # (B*K, T, V): raw, before temperature/top-p
    logp = torch.log_softmax(logits, dim=-1).gather(-1, new.unsqueeze(-1)).squeeze(-1)  # (B*K, T)
    is_eos = new == tok.eos_token_id
    # Tokens up to and including the first EOS count; everything after it is padding.
    before_eos = torch.cumsum(is_eos.int(), dim=1) - is_eos.int() == 0
    n_tokens = (before_eos & ~is_eos).sum(1)
    sum_lp = (logp * before_eos).sum(1)
    texts = tok.batch_decode(torch.where(before_eos & ~is_eos, new, pad), skip_special_tokens=True)
    out = []
    for row, text in enumerate(texts):
        out.append(Candidate(idx[row // k], row % k, text.strip(), int(n_tokens[row]), float(sum_lp[row])))
    return out
