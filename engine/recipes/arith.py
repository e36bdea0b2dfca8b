"""The `arith` recipe: ReST-EM on two-step arithmetic word problems with a binary numeric verifier.

As in Singh et al., only a few problems come with worked solutions (`bootstrap.jsonl`, for BC); the
Grow problems (`train.jsonl`) carry just the final answer. The policy must write `a+b=c c-d=e`; the
reward is 1 when its last number equals the answer. All splits are disjoint.
"""

from __future__ import annotations

import random
from pathlib import Path

from ..data import Example, write_examples

NAMES = ["Ann", "Bo", "Cy", "Di", "Ed", "Flo", "Gus", "Hal"]
THINGS = ["apples", "coins", "books", "pens", "cards", "shells"]


def problem(rng: random.Random) -> tuple[str, str]:
    a, b = rng.randint(2, 19), rng.randint(2, 9)
    d = rng.randint(1, min(9, a + b - 1))
    who, what = rng.choice(NAMES), rng.choice(THINGS)
    src = f"{who} has {a} {what}, gets {b} more and gives away {d}. How many {what} now?"
    return src, f"{a}+{b}={a + b} {a + b}-{d}={a + b - d}"


def make_splits(
    seed: int, sizes: dict[str, int], answer_only: tuple[str, ...] = ("train",)
) -> dict[str, list[Example]]:
    """Disjoint problem sets; splits in `answer_only` keep only the final answer, the others the worked
    solution."""
    rng = random.Random(seed)
    seen: set[str] = set()
    splits: dict[str, list[Example]] = {}
    for split, n in sizes.items():
        rows = []
        while len(rows) < n:
            src, ref = problem(rng)
            if src not in seen:
                seen.add(src)
                rows.append(Example(str(len(rows)), src, ref.split("=")[-1] if split in answer_only else ref))
        splits[split] = rows
    return splits


TOML = """\
# ReST-EM on arithmetic word problems (Singh et al.): binary reward, one Improve per Grow,
# every Improve fine-tunes the base (bootstrapped) policy from scratch on the correct samples.
name = "arith"
mode = "rest-em"
seed = 0

[policy]
prompt_template = "{{source}} => "

[policy.scratch]
n_layer = 2
n_head = 4
n_embd = 128
vocab_size = 320
max_length = 64

[policy.bootstrap]
epochs = {bc_epochs}
lr = 3e-3
batch_size = 32

[data]
bootstrap = "bootstrap.jsonl"   # worked solutions, for BC only
train = "train.jsonl"           # Grow problems: the reference is the final answer alone
validation = "validation.jsonl"
test = "test.jsonl"

[reward]
kind = "numeric"

[grow]
samples_per_source = {k}
temperature = 0.8
max_new_tokens = 24
batch_size = 256
shard_sources = 256

[improve]
lr = 1e-3
epochs = {epochs}
batch_size = 32
eval_every = 40
patience = 4

[eval]
best_of_n = [1, 2, 4, 8]

[stop]
max_grow_steps = {grows}

# The audit metric: the exact-answer check (the final number against the reference answer). Here it is
# the reward itself, so it can only confirm it; it audits a campaign whose reward is learned.
[[audit]]
name = "exact_answer"
kind = "numeric"

# Governance gates after every Grow: audit (reward up while the audit metric falls) and drift (length,
# diversity, KL from BC, reward at the ceiling, samples beating the references).
[gates]
audit = true
drift = true
# Correct answers are one string per problem: fewer distinct samples is the improvement here, not collapse.
drift_unique_share_drop = 1.0
drift_distinct_drop = 1.0
"""


def prepare(out: Path, small: bool = False) -> Path:
    sizes = (
        dict(bootstrap=500, train=2000, validation=200, test=200)
        if small
        else dict(bootstrap=500, train=3000, validation=300, test=500)
    )
    for split, exs in make_splits(seed=7, sizes=sizes).items():
        write_examples(out / f"{split}.jsonl", exs)
    params = dict(bc_epochs=15, k=8, epochs=4, grows=1 if small else 2)
    path = out / "campaign.toml"
    path.write_text(TOML.format(**params))
    return path
