"""Reference-based verifiers in pure Python: exact match, numeric final answer, and chrF.
They need no model, so their version is the hash of the scoring code itself.
"""

from __future__ import annotations

import re
from collections import Counter

from .base import RewardModel, hash_source


def normalize_ws(text: str) -> str:
    """Strip and collapse runs of whitespace to one space."""
    return " ".join(str(text).split())


def exact_match(candidate: str, reference: str) -> float:
    """1.0 when the texts agree up to whitespace, else 0.0."""
    return 1.0 if normalize_ws(candidate) == normalize_ws(reference) else 0.0


# Thousands groups first ("1,234.5"), so "3,4" reads as 3 and 4, not 34; then plain and leading-dot decimals.
_NUMBER = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?|-?\.\d+")


def extract_answer(text: str) -> float | None:
    """The number after the last '####' if there is one (GSM8K style), else the last number in the text."""
    text = str(text)
    if "####" in text:
        found = _NUMBER.findall(text.rsplit("####", 1)[1])
        token = found[0] if found else None  # a declared answer that is not a number does not fall back
    else:
        found = _NUMBER.findall(text)
        token = found[-1] if found else None
    if token is None:
        return None
    try:
        return float(token.replace(",", ""))
    except ValueError:  # pragma: no cover - the regex only admits parseable tokens
        return None


def numeric_match(candidate: str, reference: str, tol: float = 1e-6) -> float:
    """1.0 when both final answers parse and agree within `tol`, else 0.0."""
    a, b = extract_answer(candidate), extract_answer(reference)
    return 1.0 if a is not None and b is not None and abs(a - b) <= tol else 0.0


def _ngrams(text: str, n: int) -> Counter:
    return Counter(text[i : i + n] for i in range(len(text) - n + 1))


def chrf(candidate: str, reference: str, n: int = 6, beta: float = 2.0) -> float:
    """Character n-gram F-beta (chrF, Popovic 2015) in [0, 1], whitespace removed: sacrebleu's sentence
    chrF (its defaults: 6 character orders, no word n-grams, beta 2, no smoothing) divided by 100.

    Precision and recall are averaged over the orders 1..n that both texts are long enough to have; an
    order one of them lacks carries no evidence and is left out. With no such order (an empty text) the
    score is 0.0, as sacrebleu's, even for two empty strings.
    """
    c, r = "".join(str(candidate).split()), "".join(str(reference).split())
    precisions, recalls = [], []
    for k in range(1, min(n, len(c), len(r)) + 1):
        cg, rg = _ngrams(c, k), _ngrams(r, k)
        match = sum((cg & rg).values())
        precisions.append(match / (len(c) - k + 1))
        recalls.append(match / (len(r) - k + 1))
    if not precisions:
        return 0.0
    p, rc = sum(precisions) / len(precisions), sum(recalls) / len(recalls)
    b2 = beta * beta
    return 0.0 if p + rc == 0 else (1 + b2) * p * rc / (b2 * p + rc)


class _PairVerifier(RewardModel):
    """A reward that compares each candidate with its reference, one pair at a time."""

    needs_reference = True
    _fn = staticmethod(exact_match)
    _code: tuple = (exact_match, normalize_ws)  # the functions whose source makes up the version

    def __init__(self, batch_size: int = 64):
        self.batch_size = batch_size
        self.version = hash_source(*type(self)._code)

    def score(
        self, sources: list[str], candidates: list[str], references: list[str] | None = None
    ) -> list[float]:
        self._check_inputs(sources, candidates, references)
        assert references is not None
        return [float(type(self)._fn(c, r)) for c, r in zip(candidates, references, strict=True)]


class ExactMatch(_PairVerifier):
    """1.0 for a whitespace-insensitive exact match with the reference."""

    name = "exact_match"
    _fn = staticmethod(exact_match)
    _code = (exact_match, normalize_ws)


class NumericAnswer(_PairVerifier):
    """1.0 when the candidate's final number equals the reference's (see extract_answer)."""

    name = "numeric"
    _fn = staticmethod(numeric_match)
    _code = (numeric_match, extract_answer, _NUMBER.pattern)


class ChrF(_PairVerifier):
    """chrF against the reference (character 6-grams, beta=2): a graded reward for translation-like tasks."""

    name = "chrf"
    _fn = staticmethod(chrf)
    _code = (chrf, _ngrams)
