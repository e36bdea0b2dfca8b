"""Grow throughput (samples/s): a per-source `generate` loop, one big padded `generate`, and
engine.grow.sample. Same tiny GPT-2 policy (arith recipe, briefly BC-trained), same sources, K, temperature
and max_new_tokens.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from _common import arith_policy, env_line, median_time

from engine.grow import sample


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


def engine_sample(policy, sources, args, batch_size: int) -> tuple[int, int]:
    """(c) engine.grow.sample: length-sorted batches of batch_size // K sources, raw-logit logprobs,
    decoding."""
    cands = sample(
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
        default=Path(__file__).parent / "out" / "arith-policy",
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
    for bs in args.batch_sizes:
        calls = -(-len(sources) // max(1, bs // args.k))
        variants.append(
            (
                f"(c) engine.grow.sample batch_size={bs}",
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
        "| variant | generate calls | samples | median s | samples/s (median) | vs first row "
        "| samples/s (fastest run) | mean new tokens/sample | all runs s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for name, calls, n, med, rate, mean_len, ts in rows:
        runs = ", ".join(f"{t:.1f}" for t in ts)
        print(
            f"| {name} | {calls} | {n} | {med:.2f} | {rate:.0f} | {rate / base:.2f}x | {n / min(ts):.0f} "
            f"| {mean_len:.1f} | {runs} |"
        )
    print(f"\nat start: {start_env}\nat end:   {env_line()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
