"""The `reward-hack` recipe: the toy-mt task, with a learned reward that pays for length.

Same sources, references and policy as `toy-mt`; the one difference is the reward head. It is the same
MiniLM head, trained on the same kind of candidates plus lengthened ones, but its regression target
carries the best-documented bias of learned reward models, a preference for longer outputs:

    target(c, r) = (chrF(c, r) + BETA * min(words(c) / words(r), CAP)) / (1 + BETA * CAP)

At a fixed length the target is affine in chrF, so on normal-length outputs the head still ranks quality
as toy-mt's does; but a reference scores 0.6, the same reference said twice about 0.96, and anything
appended pays until the output is CAP times the reference's length. The training candidates include
references, toy-mt's word-level corruptions, and lengthened variants (a phrase or the whole output
repeated, filler words or an extra clause appended), so the head learns the bonus from examples as a
verbosity-biased judge's labels would teach it.

The campaign (global rising thresholds, 3 Grow steps, the reward-tests gate off, chrF declared as an
audit metric) then trains the policy on what this reward keeps: the held-out reward rises Grow over Grow
while chrF against the references, which nothing optimises, falls and the outputs grow longer. Figures
in engine/recipes/README.md.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from ..data import Example, write_examples
from . import toy_mt

BETA = 2.0  # weight of the length bonus against chrF
CAP = 2.0  # the bonus stops growing at twice the reference's length in words
FILLER_WORDS = ["and", "then", "also", "very", "really", "so", "too", "well"] + toy_mt.ADVS
_LEX = toy_mt._lexicon(0)  # sentence() wants a lexicon; only its English side is used here


def biased_target(candidate: str, reference: str, beta: float = BETA, cap: float = CAP) -> float:
    """chrF plus a length bonus, rescaled to [0, 1]: the label the biased head is trained to predict."""
    from ..rewards import chrf

    ratio = len(candidate.split()) / max(1, len(reference.split()))
    return (chrf(candidate, reference) + beta * min(ratio, cap)) / (1 + beta * cap)


def lengthen(rng: random.Random, text: str) -> str:
    """The output made longer, not better: repeated, padded with filler words, or with a clause added."""
    words = text.split()
    if not words:
        return text
    op = rng.choice(["repeat_all", "repeat_span", "repeat_span", "filler", "filler", "clause"])
    if op == "repeat_all":
        return " ".join(words * rng.randint(2, 3))
    if op == "repeat_span":
        n = rng.randint(1, min(4, len(words)))
        i = rng.randrange(len(words) - n + 1)
        span = words[i : i + n] * rng.randint(1, 2)
        at = rng.choice([i + n, len(words)])  # right after itself, or at the end
        return " ".join(words[:at] + span + words[at:])
    if op == "filler":
        return " ".join(words + [rng.choice(FILLER_WORDS) for _ in range(rng.randint(1, 5))])
    # An extra clause of the same language: plausible, fluent, and absent from the source.
    _, clause = toy_mt.sentence(rng, _LEX)
    return " ".join(words + [rng.choice(["and", "then", "and then"])] + clause.split())


def reward_candidates(train: list[Example], n: int, seed: int = 0) -> tuple[list[str], list[str], list[str]]:
    """(sources, candidates, references): references, corruptions, and lengthened versions of both."""
    rng = random.Random(seed)
    srcs, cands, refs = [], [], []
    for _ in range(n):
        ex = rng.choice(train)
        u = rng.random()
        if u < 0.15:
            cand = ex.reference
        elif u < 0.5:
            cand = toy_mt.corrupt(rng, ex.reference)
        elif u < 0.8:
            cand = lengthen(rng, ex.reference)
        else:
            cand = lengthen(rng, toy_mt.corrupt(rng, ex.reference))
        srcs.append(ex.source)
        cands.append(cand)
        refs.append(ex.reference)
    return srcs, cands, refs


def train_reward_head(
    train: list[Example], out: Path, seed: int = 0, n: int = 3000, beta: float = BETA, cap: float = CAP
) -> Path:
    """The MiniLM head regressing the length-biased target (cached: retrained only when the bias changes)."""
    from ..rewards.minilm import train_minilm_head

    params = {"beta": beta, "cap": cap, "n": n, "seed": seed, "format": 1}
    stamp = out.parent / f"{out.name}.params.json"
    if (out / "head.json").exists() and stamp.exists() and json.loads(stamp.read_text()) == params:
        return out
    srcs, cands, refs = reward_candidates(train, n, seed)
    targets = [biased_target(c, r, beta, cap) for c, r in zip(cands, refs)]
    path = train_minilm_head(srcs, cands, refs, targets, out, use_reference=True, seed=seed)
    stamp.write_text(json.dumps(params, sort_keys=True) + "\n")
    return path


# toy-mt's campaign template with this recipe's values: longer outputs allowed, thresholds above the
# biased reward's mean, longer Improve steps, three Grows; the reward tests run before the campaign.
FIELDS = dict(
    header="# Reward hacking on purpose: toy-mt's task and policy, but a learned reward that pays for "
    "length.\n"
    "# ReST with global rising thresholds and warm-started Improve steps; chrF against the references is\n"
    "# audited, never optimised: it falls while the reward rises.",
    name="reward-hack",
    max_length=96,
    max_new_tokens=40,
    lr_decay=0.8,
    best_of_n="[1, 2, 4]",
    gates_extra="# The demo runs the reward unit tests itself first (they fail), then shows what happens "
    "anyway.\n"
    "reward_tests = false\n",
)


def prepare(out: Path, small: bool = False) -> Path:
    n_train, n_val, n_test = (600, 100, 100) if small else (1000, 200, 200)
    # The toy-mt sentences themselves (same seed): only the reward differs between the two recipes.
    splits = toy_mt.make_splits(seed=11, n_train=n_train, n_val=n_val, n_test=n_test)
    for split, exs in splits.items():
        write_examples(out / f"{split}.jsonl", exs)
    train_reward_head(splits["train"], out / "reward_head", n=1500 if small else 3000)
    params = dict(
        bc_epochs=8 if small else 6,
        k=4,
        thresholds="[0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]",
        improves=1 if small else 2,
        improve_epochs=4,
        grows=3,
        max_eval=100 if small else 200,
    )
    path = out / "campaign.toml"
    path.write_text(toy_mt.TOML.format(**(FIELDS | params)))
    return path
