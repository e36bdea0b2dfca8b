"""The engine's GPU path in one run, on a CUDA machine: Grow with restgov's sampler against the former
generate-based sampler (samples/s, peak GPU memory, same texts?), peak memory of one Grow batch at a 128k
vocabulary, and Improve under bf16 autocast: full fine-tuning, LoRA, LoRA with gradient checkpointing and
LoRA with gradient accumulation (s/step, target tokens/s, peak GPU memory).

The policy is a random Llama-shaped model (no downloads) with a word-level tokenizer of `--vocab` words;
a random model rarely ends early, so every candidate runs to max_new_tokens: the timing is of full-length
decodes. Prints one JSON object per measurement and writes them all to --out.

    python bench/bench_gpu.py --out bench/out/gpu.json
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

DEVICE = "cuda"


def build(vocab: int, hidden: int, layers: int, seed: int = 0):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from engine.models import Policy

    words = {"<pad>": 0, "<eos>": 1} | {f"t{i}": i + 2 for i in range(vocab - 2)}
    tk = Tokenizer(models.WordLevel(words, unk_token="<pad>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="<eos>")
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=hidden * 11 // 4,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 64,
        num_key_value_heads=hidden // 128,
        max_position_embeddings=512,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=1,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(cfg).to(DEVICE).eval()
    return Policy(model, tok, DEVICE, "{source} =>"), tok


def texts(n: int, vocab: int, lo: int, hi: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(f"t{rng.randrange(vocab - 2)}" for _ in range(rng.randint(lo, hi))) for _ in range(n)]


def timed(fn):
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    t0 = time.perf_counter()
    out = fn()
    torch.cuda.synchronize()
    return out, time.perf_counter() - t0, (torch.cuda.max_memory_allocated() - base) / 2**20


def _methods():
    """(name, fn) of the three Grow samplers: restgov's own loop, its generate fallback, the former one."""
    from bench_grow import former_grow_sample

    import engine.grow as eg

    def fallback(policy, srcs, **kw):
        own = eg._own_loop_ok
        eg._own_loop_ok = lambda *a: False  # generate + chosen-token log-prob recorder
        try:
            return eg.sample(policy, srcs, **kw)
        finally:
            eg._own_loop_ok = own

    return [
        ("restgov sampler", eg.sample),
        ("restgov fallback (generate + log-prob recorder)", fallback),
        ("former generate sampler", former_grow_sample),
    ]


def _rounds(policy, srcs, kw, rounds: int) -> dict:
    """Each method `rounds` times, interleaved (A B C A B C): the first use of a shape pays for CUDA
    allocations and kernel selection, so only the last round is reported as the time."""
    res: dict = {}
    for _ in range(rounds):
        for name, fn in _methods():
            out, t, m = timed(lambda fn=fn: fn(policy, srcs, **kw))
            res.setdefault(name, {"times": [], "peaks": []})
            res[name]["times"].append(round(t, 3))
            res[name]["peaks"].append(round(m, 1))
            res[name]["out"] = out
    return res


def grow(args, emit) -> None:
    import engine.grow as eg

    policy, _ = build(args.vocab, args.hidden, args.layers)
    emit(dict(part="grow", own_loop=eg._own_loop_ok(policy.model, False)))
    srcs = texts(args.sources, args.vocab, 16, 48, 1)
    kw = dict(
        k=args.k, temperature=0.8, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, seed=3
    )
    res = _rounds(policy, srcs, kw, args.rounds)
    ref = res["former generate sampler"]["out"]
    for name, r in res.items():
        n = len(r["out"])
        emit(
            dict(
                part="grow",
                method=name,
                samples=n,
                tokens=sum(c.n_tokens for c in r["out"]),
                seconds_per_round=r["times"],
                samples_per_s=round(n / r["times"][-1], 1),
                peak_mib=r["peaks"][-1],
                same_texts_as_former=sum(a.text == b.text for a, b in zip(r["out"], ref)),
                max_logprob_diff_vs_former=max(
                    abs(a.sum_logprob - b.sum_logprob) for a, b in zip(r["out"], ref)
                ),
            )
        )


def grow_memory(args, emit) -> None:
    policy, _ = build(128_256, args.hidden, 2)
    srcs = texts(8, 128_256, 16, 32, 2)
    for t in (64, 128):
        kw = dict(k=8, temperature=0.8, max_new_tokens=t, batch_size=64, seed=5)
        res = _rounds(policy, srcs, kw, args.rounds)
        emit(
            dict(
                part="grow memory V=128256",
                rows=64,
                max_new_tokens=t,
                **{f"{name}: peak_mib, s per round": [r["peaks"][-1], r["times"]] for name, r in res.items()},
            )
        )


def improve(args, emit, tmp: Path) -> None:
    from engine.config import LoraSpec
    from engine.improve import TrainExample, fine_tune
    from engine.lora import add_adapter, trainable_share

    srcs = texts(args.pairs, args.vocab, 16, 48, 7)
    tgts = texts(args.pairs, args.vocab, 16, 32, 8)
    exs = [TrainExample(s, t) for s, t in zip(srcs, tgts)]
    spec = LoraSpec(r=16, alpha=32.0, dropout=0.05, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    setups = [
        ("full fine-tune", None, {}),
        ("LoRA r=16", spec, {}),
        ("LoRA r=16 + gradient checkpointing", spec, {"gradient_checkpointing": True}),
        ("LoRA r=16, 4 x 8 accumulated", spec, {"grad_accum": 4}),
    ]
    for name, lora, kw in setups:
        policy, _ = build(args.vocab, args.hidden, args.layers)
        if lora:
            add_adapter(policy, lora, tmp, seed=0)
        n_train, n_all = trainable_share(policy.model)
        bs = 8 if kw.get("grad_accum") else 32
        fine_tune(policy, exs[:64], lr=1e-4, epochs=1, batch_size=bs, seed=0, max_steps=2, **kw)  # warm-up
        res, t, m = timed(
            lambda policy=policy, bs=bs, kw=kw: fine_tune(
                policy, exs, lr=1e-4, epochs=10, batch_size=bs, seed=0, max_steps=args.steps, **kw
            )
        )
        losses = [p["loss"] for p in res.curve if p["loss"] is not None]
        emit(
            dict(
                part="improve (bf16 autocast)",
                setup=name,
                trainable_params=n_train,
                all_params=n_all,
                base_dtype=str(next(p for p in policy.model.parameters() if not p.requires_grad).dtype)
                if lora
                else "torch.float32",
                steps=res.steps,
                s_per_step=round(t / res.steps, 4),
                target_tokens_per_s=round(res.tokens / t, 1),
                peak_mib=round(m, 1),
                loss_first=round(losses[0], 4),
                loss_last=round(losses[-1], 4),
            )
        )
        del policy
        torch.cuda.empty_cache()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab", type=int, default=32_000)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--sources", type=int, default=512)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=1024, help="Grow sequences per batch")
    ap.add_argument("--pairs", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=30, help="Improve optimizer steps per setup")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds of the Grow samplers")
    ap.add_argument("--parts", default="grow,memory,improve", help="comma-separated: grow, memory, improve")
    ap.add_argument("--out", default="bench/out/gpu.json")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device: bench_gpu.py measures the GPU path only", file=sys.stderr)
        return 2
    rows: list[dict] = []

    def emit(row: dict) -> None:
        rows.append(row)
        print(json.dumps(row), flush=True)

    import transformers

    emit(
        dict(
            device=torch.cuda.get_device_name(0),
            torch=torch.__version__,
            transformers=transformers.__version__,
            args=vars(args),
        )
    )
    tmp = Path(args.out).parent / "lora-base"
    tmp.mkdir(parents=True, exist_ok=True)
    parts = set(args.parts.split(","))
    for name, part in (("grow", grow), ("memory", grow_memory)):
        if name in parts:
            part(args, emit)  # each part's models are freed when it returns
            torch.cuda.empty_cache()
    if "improve" in parts:
        improve(args, emit, tmp)
    Path(args.out).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
