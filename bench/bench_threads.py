"""Do results depend on torch's thread count? One Grow and one short Improve of the arith policy, each run in
a child process with 1 and with 2 threads from the same checkpoint and seed; compares the sample texts, their
log-probs and the trained weights.

    python bench/bench_threads.py [--sources 300] [--k 8] [--steps 60]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def child(threads: int, cache: Path, out: Path, sources: int, k: int, steps: int) -> None:
    import torch

    torch.set_num_threads(threads)
    sys.path.insert(0, str(ROOT / "bench"))
    from _common import arith_policy

    from engine.grow import sample
    from engine.improve import TrainExample, fine_tune

    policy, splits = arith_policy(cache=cache)
    train = splits["train"][:sources]
    cands = sample(policy, [e.source for e in train], k=k, temperature=0.8, max_new_tokens=20, seed=0)
    fine_tune(
        policy, [TrainExample(e.source, e.reference) for e in train], 1e-3, 100, 16, seed=0, max_steps=steps
    )
    weights = {n: p.detach().flatten()[:4096].tolist() for n, p in policy.model.named_parameters()}
    out.write_text(json.dumps({"samples": [[c.text, c.sum_logprob] for c in cands], "weights": weights}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sources", type=int, default=300)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--steps", type=int, default=60, help="Improve steps after the Grow")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--cache", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(int(a.child[0]), Path(a.cache), Path(a.child[1]), a.sources, a.k, a.steps)
        return
    sys.path.insert(0, str(ROOT / "bench"))
    from _common import arith_policy, env_line

    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "policy"
        arith_policy(cache=cache)  # trained once, then loaded by both children
        res = {}
        for n in (1, 2):
            out = Path(tmp) / f"t{n}.json"
            args = ["--child", str(n), str(out), "--cache", str(cache)]
            args += ["--sources", str(a.sources), "--k", str(a.k), "--steps", str(a.steps)]
            subprocess.run([sys.executable, __file__, *args], check=True)
            res[n] = json.loads(out.read_text())
    s1, s2 = res[1]["samples"], res[2]["samples"]
    same = [i for i, (x, y) in enumerate(zip(s1, s2)) if x[0] == y[0]]
    dlp = max((abs(s1[i][1] - s2[i][1]) for i in same), default=0.0)
    dw = max(
        abs(x - y)
        for name in res[1]["weights"]
        for x, y in zip(res[1]["weights"][name], res[2]["weights"][name])
    )
    print(env_line())
    print("| step | 1 thread vs 2 threads |\n|---|---|")
    print(
        f"| Grow from the same checkpoint and seed | {len(same)} of {len(s1)} sample texts identical; "
        f"max log-prob difference {dlp:.2e} |"
    )
    print(f"| Improve, {a.steps} steps from the same checkpoint and seed | max weight difference {dw:.2e} |")


if __name__ == "__main__":
    main()
