"""The `toy-mt` recipe: ReST on a synthetic translation task with the MiniLM-based learned reward.

Sources are in an invented verb-final language with postposed adjectives and its own lexicon; the
references are English. The reward head is trained (once, cached in the recipe folder) to predict the
chrF of a candidate against its reference from MiniLM embeddings, so it is a learned reward with the
blind spots of one: the reward-test suite reports them.
"""

from __future__ import annotations

import random
from pathlib import Path

from ..data import Example, write_examples

NOUNS = [
    "dog",
    "cat",
    "bird",
    "child",
    "farmer",
    "teacher",
    "horse",
    "fish",
    "king",
    "girl",
    "boy",
    "doctor",
    "apple",
    "ball",
    "book",
    "house",
    "river",
    "tree",
    "letter",
    "stone",
    "song",
    "boat",
    "door",
    "hat",
]
ADJS = ["small", "big", "red", "old", "young", "green", "happy", "quiet", "tall", "bright", "cold", "brave"]
VERBS = [
    "sees",
    "finds",
    "likes",
    "takes",
    "paints",
    "carries",
    "follows",
    "opens",
    "builds",
    "hears",
    "wants",
    "loses",
]
ADVS = ["today", "slowly", "again", "quickly", "often", "there"]
DETS = ["the", "a"]


def _lexicon(seed: int) -> dict[str, str]:
    """A pseudo-word for every English word: consonant-vowel syllables, deterministic from the seed."""
    rng = random.Random(seed)
    cons, vows = "bdfgklmnprstvz", "aeiou"
    used: set[str] = set()
    lex = {}
    for w in NOUNS + ADJS + VERBS + ADVS + DETS:
        while True:
            pw = "".join(
                rng.choice(cons) + rng.choice(vows) for _ in range(rng.randint(1, 3) if w not in DETS else 1)
            )
            if pw not in used:
                used.add(pw)
                lex[w] = pw
                break
    return lex


def _np(rng: random.Random) -> list[str]:
    return [rng.choice(DETS)] + ([rng.choice(ADJS)] if rng.random() < 0.6 else []) + [rng.choice(NOUNS)]


def sentence(rng: random.Random, lex: dict[str, str]) -> tuple[str, str]:
    subj, obj, verb = _np(rng), _np(rng), rng.choice(VERBS)
    adv = [rng.choice(ADVS)] if rng.random() < 0.4 else []
    english = subj + [verb] + obj + adv
    # Target language: adjective after its noun, subject-object-verb, adverb first.

    def np_out(np: list[str]) -> list[str]:
        return [np[0], np[-1]] + np[1:-1]

    foreign = adv + np_out(subj) + np_out(obj) + [verb]
    return " ".join(lex[w] for w in foreign), " ".join(english)


def make_splits(seed: int, n_train: int, n_val: int, n_test: int) -> dict[str, list[Example]]:
    rng, lex = random.Random(seed), _lexicon(seed)
    seen: set[str] = set()
    out: dict[str, list[Example]] = {}
    for split, n in (("train", n_train), ("validation", n_val), ("test", n_test)):
        rows = []
        while len(rows) < n:
            src, ref = sentence(rng, lex)
            if src not in seen:
                seen.add(src)
                rows.append(Example(str(len(rows)), src, ref))
        out[split] = rows
    return out


def corrupt(rng: random.Random, ref: str) -> str:
    """A plausible policy mistake: dropped, swapped, replaced or repeated words, or a truncation."""
    words = ref.split()
    for _ in range(rng.randint(1, 3)):
        op = rng.choice(["drop", "swap", "replace", "replace", "repeat", "truncate"])
        if op == "drop" and len(words) > 1:
            words.pop(rng.randrange(len(words)))
        elif op == "swap" and len(words) > 1:
            i, j = rng.sample(range(len(words)), 2)
            words[i], words[j] = words[j], words[i]
        elif op == "replace":
            words[rng.randrange(len(words))] = rng.choice(NOUNS + ADJS + VERBS)
        elif op == "repeat":
            i = rng.randrange(len(words))
            words.insert(i, words[i])
        elif op == "truncate" and len(words) > 2:
            words = words[: rng.randint(1, len(words) - 1)]
    return " ".join(words)


def train_reward_head(train: list[Example], out: Path, seed: int = 0, n: int = 3000) -> Path:
    """Head on MiniLM features, regressing chrF(candidate, reference) on references and their corruptions."""
    from ..rewards import chrf
    from ..rewards.minilm import train_minilm_head

    rng = random.Random(seed)
    srcs, cands, refs = [], [], []
    for _ in range(n):
        ex = rng.choice(train)
        cand = ex.reference if rng.random() < 0.2 else corrupt(rng, ex.reference)
        srcs.append(ex.source)
        cands.append(cand)
        refs.append(ex.reference)
    targets = [chrf(c, r) for c, r in zip(cands, refs)]
    return train_minilm_head(srcs, cands, refs, targets, out, use_reference=True, seed=seed)


TOML = """\
{header}
name = "{name}"
mode = "rest"
seed = 0

[policy]
prompt_template = "{{source}} => "

[policy.scratch]
n_layer = 2
n_head = 4
n_embd = 128
vocab_size = 400
max_length = {max_length}

[policy.bootstrap]
epochs = {bc_epochs}
lr = 3e-3
batch_size = 32

[data]
train = "train.jsonl"
validation = "validation.jsonl"
test = "test.jsonl"

[reward]
kind = "minilm"
path = "reward_head"

[grow]
samples_per_source = {k}
temperature = 0.8
max_new_tokens = {max_new_tokens}
batch_size = 256

[improve]
rule = "thresholds"
thresholds = {thresholds}
max_improve_steps = {improves}
lr = 1e-3
lr_decay = {lr_decay}
epochs = {improve_epochs}
batch_size = 32
original_mix = 1.0
eval_every = 40
patience = 2

[eval]
best_of_n = {best_of_n}
max_sources = {max_eval}

[stop]
max_grow_steps = {grows}

# The audit metric: chrF against the reference, never optimised (the reward is a learned head).
[[audit]]
name = "chrf"
kind = "chrf"

# Governance gates after every Grow: audit (reward up while the audit metric falls) and drift (length,
# diversity, KL from BC, reward at the ceiling, samples beating the references).
[gates]
audit = true
drift = true
{gates_extra}"""
# toy-mt's own values of the template's fields (the reward-hack recipe fills them with its own).
TOY_MT = dict(
    header="# ReST (Gulcehre et al.) on a synthetic translation task: learned MiniLM reward, rising "
    "thresholds,\n"
    "# warm-started Improve steps with a decaying learning rate, original pairs mixed into every Grow.",
    name="toy-mt",
    max_length=64,
    max_new_tokens=24,
    thresholds="[0.0, 0.7, 0.8, 0.9, 0.95, 0.99]",
    lr_decay=0.7,
    improve_epochs=1,
    best_of_n="[1, 2, 4, 8]",
    gates_extra="",
)


def prepare(out: Path, small: bool = False) -> Path:
    n_train, n_val, n_test = (600, 100, 100) if small else (1500, 200, 200)
    splits = make_splits(seed=11, n_train=n_train, n_val=n_val, n_test=n_test)
    for split, exs in splits.items():
        write_examples(out / f"{split}.jsonl", exs)
    if not (out / "reward_head" / "head.json").exists():
        train_reward_head(splits["train"], out / "reward_head", n=1500 if small else 3000)
    params = dict(
        bc_epochs=10 if small else 4,
        k=4 if small else 8,
        improves=2 if small else 3,
        grows=1 if small else 2,
        max_eval=100 if small else 200,
    )
    path = out / "campaign.toml"
    path.write_text(TOML.format(**(TOY_MT | params)))
    return path
