"""Named perturbations of a candidate: (source, candidate, rng) -> perturbed text, or None when the
perturbation does not apply to that candidate (one sentence only, no word long enough for a typo, ...).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable

Perturbation = Callable[[str, str, random.Random], "str | None"]

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_CLAUSE_END = re.compile(r"(?<=[,;:])\s+")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_WORD = re.compile(r"[A-Za-z]+")
# Function words carry little meaning of their own: swapping one is not a meaning change we can vouch for.
STOPWORDS = frozenset(
    "a an the and or but if of to in on at by for with from as is are was were be been being it its "
    "this that these those he she they we you i me him her them us my his their our your not no so than "
    "then there here do does did has have had will would can could should may might must shall also very "
    "just too".split()
)
NAMES = ["Maria", "Peter", "Aisha", "Kenji", "Olga", "Carlos", "Fatima", "Lars"]
FILLERS = [
    "The weather was pleasant that afternoon.",
    "Many people enjoy a cup of tea in the morning.",
    "The museum is closed on Mondays.",
    "Bananas are a good source of potassium.",
    "The train to the coast leaves every hour.",
]


def sentences(text: str) -> list[str]:
    """Sentences split on [.!?] followed by whitespace; a text without such a break is one sentence."""
    return [s for s in _SENTENCE_END.split(text.strip()) if s]


def _shuffled(items: list[str], rng: random.Random) -> list[str] | None:
    """A permutation of `items` that differs from it, or None when every permutation is the same."""
    if len(set(items)) < 2:
        return None
    while True:  # terminates: at least two distinct items, so a different order has positive probability
        out = items[:]
        rng.shuffle(out)
        if out != items:
            return out


def repeat_output(source: str, candidate: str, rng: random.Random) -> str | None:
    """The whole output twice: the paper's 'delusion' was a reward that likes repetition."""
    return f"{candidate.strip()} {candidate.strip()}" if candidate.strip() else None


def repeat_sentence(source: str, candidate: str, rng: random.Random) -> str | None:
    """One sentence repeated in place; in a one-sentence output, a clause or a 2-3 word phrase instead."""
    sents = sentences(candidate)
    if len(sents) >= 2:
        i = rng.randrange(len(sents))
        return " ".join(sents[: i + 1] + [sents[i]] + sents[i + 1 :])
    # One sentence: repeating all of it is repeat_output, so repeat a part that a reader would notice.
    clauses = [c for c in _CLAUSE_END.split(candidate.strip()) if c]
    if len(clauses) >= 2:
        i = rng.randrange(len(clauses))
        return " ".join(clauses[: i + 1] + [clauses[i]] + clauses[i + 1 :])
    words = candidate.split()
    if len(words) < 3:
        return None
    span = min(len(words) - 1, rng.choice([2, 3]))
    i = rng.randrange(len(words) - span + 1)
    return " ".join(words[: i + span] + words[i : i + span] + words[i + span :])


def _split_trailing(sentence: str) -> tuple[str, str]:
    m = re.search(r"[.!?,;:]+$", sentence)
    return (sentence[: m.start()], m.group()) if m else (sentence, "")


def shuffle_words(source: str, candidate: str, rng: random.Random) -> str | None:
    """Words shuffled within each sentence (end punctuation stays at the end): same words, no grammar."""
    out, changed = [], False
    for s in sentences(candidate):
        body, end = _split_trailing(s)
        words = body.split()
        new = _shuffled(words, rng)
        changed |= new is not None
        out.append(" ".join(new or words) + end)
    return " ".join(out) if changed else None


def permute_sentences(source: str, candidate: str, rng: random.Random) -> str | None:
    """Sentences in another order; clauses of a one-sentence output; None with nothing to reorder."""
    sents = sentences(candidate)
    new = _shuffled(sents, rng) if len(sents) >= 2 else None
    if new is not None:
        return " ".join(new)
    body, end = _split_trailing(candidate.strip())
    clauses = [c.rstrip(",;:") for c in _CLAUSE_END.split(body) if c]
    new = _shuffled(clauses, rng) if len(sents) == 1 and len(clauses) >= 2 else None
    return ", ".join(new) + end if new is not None else None


def truncate_half(source: str, candidate: str, rng: random.Random) -> str | None:
    """The first half of the words: an output that stopped early."""
    words = candidate.split()
    return " ".join(words[: len(words) // 2]) if len(words) >= 2 else None


def append_filler(source: str, candidate: str, rng: random.Random) -> str | None:
    """A fluent sentence unrelated to the source appended to the output."""
    if not candidate.strip():
        return None
    body = candidate.strip()
    sep = " " if body[-1] in ".!?" else ". "  # keep the filler a sentence of its own
    return body + sep + rng.choice(FILLERS)


def empty_output(source: str, candidate: str, rng: random.Random) -> str | None:
    """No output at all."""
    return "" if candidate.strip() else None


def copy_source(source: str, candidate: str, rng: random.Random) -> str | None:
    """The source copied as the output (untranslated, unanswered)."""
    return source if source.strip() and source.strip() != candidate.strip() else None


def typo(source: str, candidate: str, rng: random.Random) -> str | None:
    """One small character edit (two letters swapped, one dropped or doubled) in a word of 4+ letters."""
    spots = [m for m in _WORD.finditer(candidate) if len(m.group()) >= 4]
    if not spots:
        return None
    m = rng.choice(spots)
    w = m.group()
    i = rng.randrange(1, len(w) - 1)  # inner letters: the word stays recognisable
    ops = ["drop", "double"] + (["swap"] if w[i] != w[i + 1] else [])
    op = rng.choice(ops)
    if op == "swap":
        new = w[:i] + w[i + 1] + w[i] + w[i + 2 :]
    elif op == "drop":
        new = w[:i] + w[i + 1 :]
    else:
        new = w[:i] + w[i] + w[i:]
    return candidate[: m.start()] + new + candidate[m.end() :]


def punctuation(source: str, candidate: str, rng: random.Random) -> str | None:
    """A trailing period or comma removed, or a period added: meaning unchanged."""
    text = candidate.rstrip()
    if not text:
        return None
    if text[-1] in ".,":
        return text[:-1]
    if text[-1] in "!?":
        return None  # dropping '?' turns a question into a statement
    return text + "."


def _replace(text: str, m: re.Match, new: str) -> str:
    return text[: m.start()] + new + text[m.end() :]


def swap_number_or_name(source: str, candidate: str, rng: random.Random) -> str | None:
    """A number, else a name, else a content word replaced by another one: the output now says something else.

    Numbers get one digit changed; a capitalised name (not sentence-initial) becomes another name of the
    output, or a common name; a content word becomes another content word of the same output.
    """
    numbers = list(_NUMBER.finditer(candidate))
    if numbers:
        m = rng.choice(numbers)
        digits = [i for i, ch in enumerate(m.group()) if ch.isdigit()]
        i = rng.choice(digits)
        old = m.group()[i]
        choices = [d for d in "0123456789" if d != old and not (i == 0 and d == "0" and len(digits) > 1)]
        return _replace(candidate, m, m.group()[:i] + rng.choice(choices) + m.group()[i + 1 :])
    starts = {0} | {m.end() for m in _SENTENCE_END.finditer(candidate)}
    names = [
        m
        for m in _WORD.finditer(candidate)
        if m.group()[0].isupper() and m.start() not in starts and m.group() != "I"
    ]
    if names:
        m = rng.choice(names)
        others = sorted({n.group() for n in names} - {m.group()}) or [n for n in NAMES if n != m.group()]
        return _replace(candidate, m, rng.choice(others))
    content = [
        m for m in _WORD.finditer(candidate) if len(m.group()) >= 3 and m.group().lower() not in STOPWORDS
    ]
    vocab = sorted({m.group().lower() for m in content})
    if len(vocab) < 2:
        return None
    m = rng.choice(content)
    new = rng.choice([w for w in vocab if w != m.group().lower()])
    return _replace(candidate, m, new.capitalize() if m.group()[0].isupper() else new)


ALL: dict[str, Perturbation] = {
    f.__name__: f
    for f in (
        repeat_output,
        repeat_sentence,
        shuffle_words,
        permute_sentences,
        truncate_half,
        append_filler,
        empty_output,
        copy_source,
        typo,
        punctuation,
        swap_number_or_name,
    )
}
