"""Peak CPU memory of one Grow batch at a large vocabulary: the former generate-based engine.grow.sample
(output_logits, stacked (B*K, T, V) logits, full log_softmax), generate with a chosen-token log-prob
recorder (engine.grow's fallback for models its own loop cannot drive), and engine.grow.sample (prefill
once, KV cache repeated K times, own decode loop). Each method runs in a fresh subprocess; its peak is the
process's maximum resident set (getrusage ru_maxrss) minus its resident set just before the batch. Same
random tiny GPT-2, sources, K and seed for all three: the samples and log-probs are compared too.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import env_line

METHODS = {
    "former": "former engine.grow.sample (generate, output_logits, (B*K, T, V) log_softmax)",
    "fallback": "generate + chosen-token log-prob recorder (engine.grow fallback)",
    "current": "engine.grow.sample (prefill once, own decode loop)",
}


def rss_mib() -> float:
    """Current resident set of this process (VmRSS), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def build(args):
    """(policy, sources): a random GPT-2 with a `vocab`-entry word-level tokenizer, and B random sources."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    from engine.models import Policy

    vocab = {"<pad>": 0, "<eos>": 1} | {f"t{i}": i + 2 for i in range(args.vocab - 2)}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="<eos>")
    torch.manual_seed(0)
    cfg = GPT2Config(
        vocab_size=args.vocab,
        n_positions=256,
        n_embd=args.n_embd,
        n_layer=args.n_layer,
        n_head=4,
        activation_function="gelu_pytorch_tanh",
        bos_token_id=1,
        eos_token_id=1,
        pad_token_id=0,
    )
    model = GPT2LMHeadModel(cfg).eval()
    rng = random.Random(0)
    n_src = args.rows // args.k
    sources = [
        " ".join(f"t{rng.randrange(args.vocab - 2)}" for _ in range(rng.randint(8, 24))) for _ in range(n_src)
    ]
    return Policy(model, tok, "cpu", "{source}"), sources


def run_method(policy, sources, args, method: str):
    from bench_grow import former_grow_sample

    from engine.grow import _candidates, _generate_batch, sample

    kw = dict(temperature=args.temperature, max_new_tokens=args.max_new_tokens, batch_size=args.rows, seed=0)
    if method == "former":
        return former_grow_sample(policy, sources, args.k, **kw)
    if method == "current":
        return sample(policy, sources, args.k, **kw)
    # The fallback path on the same batch, with the batch seed sample() would draw.
    prompts = [policy.fit_prompt(policy.prompt_ids(s), args.max_new_tokens) for s in sources]
    order = sorted(range(len(sources)), key=lambda i: len(prompts[i]))
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=torch.Generator().manual_seed(0)))
    with torch.no_grad():
        new, logp = _generate_batch(
            policy,
            [prompts[i] for i in order],
            args.k,
            args.temperature,
            1.0,
            args.max_new_tokens,
            False,
            seed,
        )
    return sorted(
        _candidates(policy, new, logp, order, args.k), key=lambda c: (c.source_index, c.sample_index)
    )


def child(args) -> int:
    torch.set_num_threads(args.threads)
    policy, sources = build(args)
    # Warm-up on one short source: imports and one-off allocations are not part of the batch's peak.
    small = argparse.Namespace(**{**vars(args), "k": 1, "max_new_tokens": 2})
    run_method(policy, sources[:1], small, args.child)
    before, peak_before = rss_mib(), peak_mib()
    t0 = time.perf_counter()
    cands = run_method(policy, sources, args, args.child)
    sec = time.perf_counter() - t0
    peak = peak_mib()
    out = dict(
        rss_before=before,
        peak_before=peak_before,
        peak=peak,
        seconds=sec,
        candidates=[(c.source_index, c.sample_index, c.text, c.n_tokens, c.sum_logprob) for c in cands],
    )
    Path(args.out).write_text(json.dumps(out))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab", type=int, default=128_000)
    ap.add_argument("--n-layer", type=int, default=2)
    ap.add_argument("--n-embd", type=int, default=64)
    ap.add_argument("--rows", type=int, default=64, help="B*K sequences in the batch (batch_size)")
    ap.add_argument("--k", type=int, default=8, help="samples per source (B = rows / k sources)")
    ap.add_argument("--max-new-tokens", type=int, default=64, help="T (a random model rarely stops earlier)")
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--child", choices=list(METHODS), help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(args)

    torch.set_num_threads(args.threads)  # as in the children, so the environment line says so
    start_env = env_line()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for m in args.methods:
            out = Path(tmp) / f"{m}.json"
            cmd = [sys.executable, __file__, *(argv if argv is not None else sys.argv[1:])]
            cmd += ["--child", m, "--out", str(out)]
            subprocess.run(cmd, check=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).parent)})
            results[m] = json.loads(out.read_text())
            r = results[m]
            print(f"  {m}: peak +{r['peak'] - r['rss_before']:.0f} MiB, {r['seconds']:.1f}s", file=sys.stderr)

    n_src = args.rows // args.k
    print(
        f"\nOne Grow batch: random GPT-2 ({args.n_layer} layers, d={args.n_embd}, vocabulary {args.vocab}), "
        f"B={n_src} sources x K={args.k} = {args.rows} sequences, max_new_tokens={args.max_new_tokens}, "
        f"temperature {args.temperature}, seed 0, {args.threads} thread(s); one fresh process per method\n"
    )
    print("| method | peak RSS - RSS before the batch (MiB) | process peak RSS (MiB) | batch s |")
    print("|---|---:|---:|---:|")
    for m, r in results.items():
        print(f"| {METHODS[m]} | {r['peak'] - r['rss_before']:.0f} | {r['peak']:.0f} | {r['seconds']:.1f} |")
    ref = results.get("former") or next(iter(results.values()))
    for m, r in results.items():
        if r is ref:
            continue
        a, b = ref["candidates"], r["candidates"]
        same = [(x, y) for x, y in zip(a, b, strict=True) if x[:4] == y[:4]]
        gap = max((abs(x[4] - y[4]) for x, y in same), default=float("nan"))
        print(
            f"\n{m} vs {'former' if 'former' in results else next(iter(results))}: {len(same)}/{len(a)} "
            f"candidates with identical text and token count; largest sum_logprob gap {gap:.2e} nats"
        )
    print(f"\nat start: {start_env}\nat end:   {env_line()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
