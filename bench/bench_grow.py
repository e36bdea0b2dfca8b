"""Grow throughput (samples/s): a per-source `generate` loop, one big padded `generate` (without and with
per-token log-probs), the former generate-based engine.grow.sample, and engine.grow.sample. Same tiny GPT-2
policy (arith recipe, briefly BC-trained), same sources, K, temperature and max_new_tokens. Then the former
and the current engine.grow.sample are compared on the same seed: identical texts, largest log-prob gap.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from _common import arith_policy, env_line, median_time

from engine.grow import Candidate, sample
from engine.models import Policy, autocast


def new_token_count(new: torch.Tensor, eos: int) -> int:
    """Generated tokens before the first EOS (EOS and what follows it are not counted), summed over rows."""
    is_eos = new == eos
    before = (torch.cumsum(is_eos.int(), dim=1) - is_eos.int()) == 0
    return int((before & ~is_eos).sum())


def gen_kwargs(policy, args) -> dict:
    tok = policy.tokenizer
    return dict(
        do_sample=True,
        temperature=args.temperature,
        top_p=1.0,
        top_k=0,
        max_new_tokens=args.max_new_tokens,
        num_return_sequences=args.k,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        use_cache=True,
    )


@torch.no_grad()
def per_source_loop(policy, prompts, args) -> tuple[int, int]:
    """(a) one generate call per source, K return sequences each; texts decoded like Grow does."""
    tok, kw, n, toks = policy.tokenizer, gen_kwargs(policy, args), 0, 0
    for p in prompts:
        ids = torch.tensor([p], device=policy.device)
        seq = policy.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kw)
        new = seq[:, ids.shape[1] :]
        tok.batch_decode(new, skip_special_tokens=True)
        n, toks = n + new.shape[0], toks + new_token_count(new, tok.eos_token_id)
    return n, toks


@torch.no_grad()
def one_big_call(policy, prompts, args) -> tuple[int, int]:
    """(b) a single generate call on every source, left-padded in the given (unsorted) order."""
    tok, pad = policy.tokenizer, policy.tokenizer.pad_token_id
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=policy.device)
    attn = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=policy.device)
    seq = policy.model.generate(input_ids=ids, attention_mask=attn, **gen_kwargs(policy, args))
    new = seq[:, width:]
    tok.batch_decode(new, skip_special_tokens=True)
    return new.shape[0], new_token_count(new, tok.eos_token_id)


@torch.no_grad()
def one_big_call_logprobs(policy, prompts, args) -> tuple[int, int]:
    """(b') (b) with output_logits and each drawn token's log-prob (full-vocabulary log_softmax)."""
    tok, pad = policy.tokenizer, policy.tokenizer.pad_token_id
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=policy.device)
    attn = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=policy.device)
    res = policy.model.generate(
        input_ids=ids,
        attention_mask=attn,
        return_dict_in_generate=True,
        output_logits=True,
        **gen_kwargs(policy, args),
    )
    new = res.sequences[:, width:]
    logp = torch.log_softmax(torch.stack(res.logits, 1).float(), -1).gather(-1, new[..., None])
    float(logp.sum())
    tok.batch_decode(new, skip_special_tokens=True)
    return new.shape[0], new_token_count(new, tok.eos_token_id)


@torch.no_grad()
def former_grow_sample(
    policy: Policy,
    sources: list[str],
    k: int,
    temperature: float = 0.8,
    top_p: float = 1.0,
    max_new_tokens: int = 48,
    batch_size: int = 64,
    seed: int = 0,
    greedy: bool = False,
) -> list[Candidate]:
    """engine.grow.sample as it was before its own decode loop: one generate call per batch with
    num_return_sequences=K (each prompt copied K times before the prefill), output_logits=True, and a
    full-vocabulary log_softmax over the stacked (B*K, T, V) logits. Kept here as the reference."""
    model = policy.model
    model.eval()
    if greedy:
        k = 1
    prompts = [policy.fit_prompt(policy.prompt_ids(s), max_new_tokens) for s in sources]
    order = sorted(range(len(sources)), key=lambda i: len(prompts[i]))
    per_call = max(1, batch_size // k)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    out: list[Candidate] = []
    tok, device, pad = policy.tokenizer, policy.device, policy.tokenizer.pad_token_id
    for start in range(0, len(order), per_call):
        idx = order[start : start + per_call]
        batch = [prompts[i] for i in idx]
        width = max(len(p) for p in batch)
        input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in batch], device=device)
        attn = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch], device=device)
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        kwargs = (
            dict(do_sample=False)
            if greedy
            else dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=0)
        )
        with autocast(device):
            res = model.generate(
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
        new = res.sequences[:, width:]
        logits = torch.stack(res.logits, dim=1).float()
        logp = torch.log_softmax(logits, dim=-1).gather(-1, new.unsqueeze(-1)).squeeze(-1)
        is_eos = new == tok.eos_token_id
        before_eos = torch.cumsum(is_eos.int(), dim=1) - is_eos.int() == 0
        n_tokens = (before_eos & ~is_eos).sum(1)
        sum_lp = (logp * before_eos).sum(1)
        texts = tok.batch_decode(torch.where(before_eos & ~is_eos, new, pad), skip_special_tokens=True)
        for row, text in enumerate(texts):
            out.append(
                Candidate(idx[row // k], row % k, text.strip(), int(n_tokens[row]), float(sum_lp[row]))
            )
    out.sort(key=lambda c: (c.source_index, c.sample_index))
    return out


def compare(a: list[Candidate], b: list[Candidate]) -> tuple[int, int, float]:
    """(candidates with identical text and token count, candidates, largest |sum_logprob gap| among them)."""
    same = [(x, y) for x, y in zip(a, b, strict=True) if (x.text, x.n_tokens) == (y.text, y.n_tokens)]
    gap = max((abs(x.sum_logprob - y.sum_logprob) for x, y in same), default=float("nan"))
    return len(same), len(a), gap


def engine_sample(policy, sources, args, batch_size: int, fn=sample) -> tuple[int, int]:
    """(c) engine.grow.sample: length-sorted batches of batch_size // K sources, raw-logit logprobs,
    decoding."""
    cands = fn(
        policy,
        sources,
        args.k,
        temperature=args.temperature,
        top_p=1.0,
        max_new_tokens=args.max_new_tokens,
        batch_size=batch_size,
        seed=0,
    )
    return len(cands), sum(c.n_tokens for c in cands)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sources", type=int, default=256, help="arith training sources to sample from")
    ap.add_argument("--k", type=int, default=8, help="samples per source")
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument(
        "--batch-sizes", type=int, nargs="+", default=[256, 1024], help="engine.grow.sample batch_size values"
    )
    ap.add_argument(
        "--train-steps", type=int, default=100, help="BC steps before sampling (0: untrained policy)"
    )
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    ap.add_argument(
        "--repeats", type=int, default=3, help="timed repeats per variant; the median is reported"
    )
    ap.add_argument(
        "--cache",
        type=Path,
        default=Path(__file__).parent / "out" / "arith-policy-tanh",
        help="trained policy cached at CACHE-<train steps>; delete it to retrain",
    )
    ap.add_argument("--no-cache", action="store_true", help="always train a fresh policy")
    ap.add_argument("--skip-loop", action="store_true", help="skip the slow per-source loop (a)")
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    start_env = env_line()
    t0 = time.perf_counter()
    cache = None if args.no_cache else args.cache.with_name(f"{args.cache.name}-{args.train_steps}")
    policy, splits = arith_policy(n_train=max(2000, args.sources), train_steps=args.train_steps, cache=cache)
    print(
        f"policy ready in {time.perf_counter() - t0:.1f}s ({args.train_steps} BC steps, cache {cache})",
        file=sys.stderr,
    )
    sources = [e.source for e in splits["train"][: args.sources]]
    prompts = [policy.prompt_ids(s) for s in sources]
    assert max(map(len, prompts)) <= policy.max_length - args.max_new_tokens, (
        "prompts would be truncated by Grow"
    )

    variants = (
        []
        if args.skip_loop
        else [("(a) per-source generate loop", len(sources), lambda: per_source_loop(policy, prompts, args))]
    )
    variants.append(("(b) one padded generate, unsorted", 1, lambda: one_big_call(policy, prompts, args)))
    variants.append(
        (
            "(b') one padded generate + log-probs, unsorted",
            1,
            lambda: one_big_call_logprobs(policy, prompts, args),
        )
    )
    for bs in args.batch_sizes:
        calls = -(-len(sources) // max(1, bs // args.k))
        variants.append(
            (
                f"(c) former engine.grow.sample (generate) batch_size={bs}",
                calls,
                lambda bs=bs: engine_sample(policy, sources, args, bs, former_grow_sample),
            )
        )
        variants.append(
            (
                f"(d) engine.grow.sample batch_size={bs}",
                calls,
                lambda bs=bs: engine_sample(policy, sources, args, bs),
            )
        )

    # Warm-up: the first generate call in a process pays one-off costs.
    one_big_call(policy, prompts[:8], args)
    # Repeats are interleaved (a, b, c..., a, b, c...): changing background load hits all variants alike.
    times: list[list[float]] = [[] for _ in variants]
    outs: list[list[tuple[int, int]]] = [[] for _ in variants]
    for r in range(args.repeats):
        for i, (name, _, fn) in enumerate(variants):
            torch.manual_seed(r)
            sec, out = median_time(fn, 1)
            times[i].append(sec)
            outs[i].extend(out)
            print(f"  repeat {r}: {name}: {sec:.2f}s", file=sys.stderr)
    rows = []
    for (name, calls, _), ts, os_ in zip(variants, times, outs):
        med = statistics.median(ts)
        mean_len = statistics.mean([o[1] / o[0] for o in os_])
        rows.append((name, calls, os_[0][0], med, os_[0][0] / med, mean_len, ts))

    base = rows[0][4]
    print(
        f"\nGrow: {len(sources)} sources x K={args.k}, max_new_tokens={args.max_new_tokens}, "
        f"temperature={args.temperature}, policy trained {args.train_steps} BC steps, "
        f"median of {args.repeats} interleaved repeats\n"
    )
    print(
        "| variant | calls (batches) | samples | median s | samples/s (median) | vs first row "
        "| samples/s (fastest run) | mean new tokens/sample | all runs s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for name, calls, n, med, rate, mean_len, ts in rows:
        runs = ", ".join(f"{t:.1f}" for t in ts)
        print(
            f"| {name} | {calls} | {n} | {med:.2f} | {rate:.0f} | {rate / base:.2f}x | {n / min(ts):.0f} "
            f"| {mean_len:.1f} | {runs} |"
        )
    for top_p in (1.0, 0.9):
        kw = dict(temperature=args.temperature, top_p=top_p, max_new_tokens=args.max_new_tokens, seed=0)
        for bs in args.batch_sizes:
            same, n, gap = compare(
                former_grow_sample(policy, sources, args.k, batch_size=bs, **kw),
                sample(policy, sources, args.k, batch_size=bs, **kw),
            )
            print(
                f"\nformer vs current engine.grow.sample, seed 0, top_p={top_p}, batch_size={bs}: "
                f"{same}/{n} candidates with identical text and token count; largest sum_logprob gap "
                f"among them {gap:.2e} nats"
            )
    greedy = [c.text for c in sample(policy, sources, 1, greedy=True, max_new_tokens=args.max_new_tokens)]
    former = former_grow_sample(policy, sources, 1, greedy=True, max_new_tokens=args.max_new_tokens)
    print(f"greedy: {sum(a == b.text for a, b in zip(greedy, former))}/{len(greedy)} identical texts")
    print(f"\nat start: {start_env}\nat end:   {env_line()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
