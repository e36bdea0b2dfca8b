"""Improve throughput (target tokens/s): engine.improve.fine_tune against a bare PyTorch training loop.
Same scratch GPT-2 init, same examples, same batch order, AdamW, same number of steps; median of repeats.
"""

from __future__ import annotations

import argparse
import copy
import math
import random
import statistics
import sys
import time

import torch
from _common import arith_policy, env_line

from engine.improve import TrainExample, _collate, _encode, fine_tune


def bare_loop(
    policy, examples: list[TrainExample], lr: float, batch_size: int, steps: int, seed: int
) -> tuple[int, float, float]:
    """Plain loop: HF's built-in LM loss, AdamW, no clipping, no schedule, no callbacks.

    Batches are drawn exactly as fine_tune draws them (random.Random(seed) shuffle, same collation).
    Tokenisation happens before the clock starts, as it does in fine_tune. Returns (target tokens, seconds,
    first loss).
    """
    model, device, pad = policy.model, policy.device, policy.tokenizer.pad_token_id
    rng = random.Random(seed)
    torch.manual_seed(seed)
    encoded = [(*_encode(policy, ex), ex.weight) for ex in examples]
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    model.train()
    tokens, step, first = 0, 0, math.nan
    t0 = time.perf_counter()
    while step < steps:
        order = list(range(len(encoded)))
        rng.shuffle(order)
        for b in range(0, len(order), batch_size):
            ids, attn, labels, _ = _collate([encoded[i] for i in order[b : b + batch_size]], pad, device)
            loss = model(input_ids=ids, attention_mask=attn, labels=labels).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tokens += int((labels[:, 1:] != -100).sum())
            first = float(loss.detach()) if step == 0 else first
            step += 1
            if step >= steps:
                break
    return tokens, time.perf_counter() - t0, first


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--examples", type=int, default=2000, help="arith training pairs (source, reference)")
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    ap.add_argument(
        "--repeats", type=int, default=5, help="timed repeats of each loop, interleaved; median reported"
    )
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    start_env = env_line()
    policy, splits = arith_policy(n_train=args.examples, train_steps=0)
    init = copy.deepcopy(policy.model.state_dict())
    examples = [TrainExample(e.source, e.reference) for e in splits["train"]]

    def run_engine() -> tuple[int, float, float]:
        policy.model.load_state_dict(init)
        t0 = time.perf_counter()
        res = fine_tune(
            policy,
            examples,
            lr=args.lr,
            epochs=float(args.steps),
            batch_size=args.batch_size,
            seed=0,
            max_steps=args.steps,
        )
        wall = time.perf_counter() - t0
        assert res.steps == args.steps, res.steps
        print(f"  fine_tune: {res.tokens} tokens, loop {res.seconds:.2f}s, call {wall:.2f}s", file=sys.stderr)
        return res.tokens, res.seconds, res.curve[0]["loss"]

    def run_bare() -> tuple[int, float, float]:
        policy.model.load_state_dict(init)
        out = bare_loop(policy, examples, args.lr, args.batch_size, args.steps, seed=0)
        print(f"  bare loop: {out[0]} tokens, loop {out[1]:.2f}s", file=sys.stderr)
        return out

    run_bare()  # warm-up (first backward pass, allocator)
    results: dict[str, list] = {"engine.improve.fine_tune": [], "bare PyTorch loop": []}
    for _ in range(args.repeats):  # interleaved, so background load hits both alike
        results["engine.improve.fine_tune"].append(run_engine())
        results["bare PyTorch loop"].append(run_bare())

    print(
        f"\nImprove: {args.steps} steps x batch {args.batch_size}, AdamW lr={args.lr}, arith pairs, "
        f"scratch GPT-2 (2 layers, d=128), median of {args.repeats}\n"
    )
    print(
        "| loop | target tokens | median s | target tokens/s (median) | steps/s (median) | fastest s "
        "| target tokens/s (fastest) | first-step loss | all runs s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    rates, best = {}, {}
    for name, outs in results.items():
        toks, first = outs[0][0], outs[0][2]
        assert all(o[0] == toks for o in outs)
        med = statistics.median(o[1] for o in outs)
        fast = min(o[1] for o in outs)
        rates[name], best[name] = toks / med, toks / fast
        runs = ", ".join(f"{o[1]:.2f}" for o in outs)
        print(
            f"| {name} | {toks} | {med:.2f} | {toks / med:.0f} | {args.steps / med:.1f} | {fast:.2f} "
            f"| {toks / fast:.0f} | {first:.4f} | {runs} |"
        )
    e, b = "engine.improve.fine_tune", "bare PyTorch loop"
    print(
        f"\nfine_tune / bare loop throughput ratio: {rates[e] / rates[b]:.2f} (medians), "
        f"{best[e] / best[b]:.2f} (fastest runs)"
    )
    print(f"\nat start: {start_env}\nat end:   {env_line()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
