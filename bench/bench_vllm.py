"""Grow throughput (samples/s), transformers generate (engine.grow.sample, the hf backend) vs vLLM's
LLM.generate (engine.vllm_backend, the vllm backend): same checkpoint, same sources, K, temperature, top-p,
max new tokens and seed. Runs only where vllm is installed and torch sees CUDA; elsewhere it says so and
exits with status 2.

    python bench/bench_vllm.py                       # the arith recipe's GPT-2, briefly BC-trained
    python bench/bench_vllm.py --model DIR --template "{source} => "
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import TEMPLATE, arith_policy, env_line

from engine.grow import sample
from engine.models import load_policy
from engine.vllm_backend import VllmPolicy, backend_refusal


def timed(fn, repeats: int) -> tuple[float, list]:
    """Median seconds of `repeats` calls after one warm-up call, and the last call's candidates."""
    out = fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, help="a local model directory (default: the arith policy)")
    ap.add_argument("--template", default=TEMPLATE)
    ap.add_argument("--sources", type=int, default=512)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--top-p", type=float, default=1.0)
    ap.add_argument("--max-new-tokens", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=256, help="hf sequences per generate call")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    if why := backend_refusal():
        print(f"bench_vllm: not run: {why}. It compares hf and vLLM on a CUDA machine with vllm installed.")
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="bench-vllm-"))
    policy, splits = arith_policy(cache=tmp / "arith")
    model = args.model or tmp / "arith"
    sources = [e.source for e in splits["train"]][: args.sources]
    kw = dict(temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens, seed=0)
    hf = load_policy(model, args.template, device="cuda")
    t_hf, c_hf = timed(lambda: sample(hf, sources, args.k, batch_size=args.batch_size, **kw), args.repeats)
    hf.model.to("cpu")  # its GPU memory back before vLLM sizes its KV cache
    t0 = time.perf_counter()
    vl = VllmPolicy(model, args.template, seed=0)
    t_build = time.perf_counter() - t0
    t_vl, c_vl = timed(lambda: vl.sample(sources, args.k, **kw), args.repeats)
    n = len(sources) * args.k
    print(env_line())
    print(
        f"model {model}; {len(sources)} sources x K={args.k}, temperature {args.temperature}, top-p "
        f"{args.top_p}, {args.max_new_tokens} new tokens; median of {args.repeats} after a warm-up"
    )
    print("| sampler | s per Grow | samples/s | mean tokens | mean sum log-prob |")
    print("|---|---:|---:|---:|---:|")
    for name, t, c in (("hf generate", t_hf, c_hf), ("vLLM", t_vl, c_vl)):
        toks = statistics.mean(x.n_tokens for x in c)
        lp = statistics.mean(x.sum_logprob for x in c)
        print(f"| {name} | {t:.2f} | {n / t:.0f} | {toks:.2f} | {lp:.2f} |")
    print(f"vLLM engine build: {t_build:.1f} s (once per checkpoint and Grow)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
