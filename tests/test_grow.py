"""Tests for engine.grow.sample on a tiny scratch GPT-2 policy (CPU, real tokenizer and model)."""

from __future__ import annotations

import math

import pytest
import torch

from engine.config import ScratchModel
from engine.grow import sample
from engine.improve import TrainExample, fine_tune
from engine.models import Policy, build_scratch_policy
from engine.recipes.arith import make_splits

MAX_NEW = 12


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def policy() -> Policy:
    exs = make_splits(seed=5, sizes=dict(train=60), answer_only=())["train"]
    template = "{source} => "
    model, tok = build_scratch_policy(
        ScratchModel(n_layer=1, n_head=2, n_embd=32, vocab_size=300, max_length=64),
        [template.format(source=e.source) + e.reference for e in exs],
        seed=0,
    )
    pol = Policy(model, tok, "cpu", template)
    # A few epochs of BC so that decodes are digits and '=' that end with EOS at different lengths.
    fine_tune(
        pol, [TrainExample(e.source, e.reference) for e in exs], lr=5e-3, epochs=15, batch_size=16, seed=0
    )
    return pol


# Different lengths, so batches are left-padded; one longer than the context, so it is truncated.
SOURCES = [
    "Ann has 12 apples, gets 30 more and gives away 5. How many apples now?",
    "Bo has 3 pens?",
    "x",
    "Cy has 40 coins, gets 11 more and gives away 20. How many coins now? " * 6,
    "Di has 9 cards.",
]


def _key(cands):
    return [(c.source_index, c.sample_index, c.text, c.n_tokens, c.sum_logprob) for c in cands]


def test_k_candidates_per_source_in_order(policy: Policy):
    k = 3
    seen = []
    cands = sample(
        policy,
        SOURCES,
        k,
        temperature=1.0,
        max_new_tokens=MAX_NEW,
        batch_size=4,
        seed=1,
        on_batch=seen.append,
    )
    assert [(c.source_index, c.sample_index) for c in cands] == [
        (i, j) for i in range(len(SOURCES)) for j in range(k)
    ]
    assert sum(seen) == len(SOURCES)  # progress reports every source once
    assert len(seen) == math.ceil(len(SOURCES) / (4 // k))
    for c in cands:
        assert isinstance(c.text, str)
        assert 0 <= c.n_tokens <= MAX_NEW
        assert math.isfinite(c.sum_logprob) and c.sum_logprob <= 0.0
        if c.n_tokens > 0:  # at least one real token drawn, each with log p < 0
            assert c.sum_logprob < 0.0


def test_same_seed_same_samples_other_seed_other_samples(policy: Policy):
    a = sample(policy, SOURCES, 2, temperature=1.0, max_new_tokens=MAX_NEW, seed=7)
    torch.manual_seed(12345)  # the global RNG state must not matter
    torch.rand(10)
    b = sample(policy, SOURCES, 2, temperature=1.0, max_new_tokens=MAX_NEW, seed=7)
    assert _key(a) == _key(b)
    c = sample(policy, SOURCES, 2, temperature=1.0, max_new_tokens=MAX_NEW, seed=8)
    assert [x.text for x in a] != [x.text for x in c]


def test_greedy_gives_one_per_source_independent_of_k_seed_and_batching(policy: Policy):
    g1 = sample(policy, SOURCES, k=5, greedy=True, max_new_tokens=MAX_NEW, batch_size=64, seed=0)
    assert [(c.source_index, c.sample_index) for c in g1] == [(i, 0) for i in range(len(SOURCES))]
    g2 = sample(
        policy, SOURCES, k=1, greedy=True, max_new_tokens=MAX_NEW, batch_size=1, seed=99
    )  # no padding at all
    assert [c.text for c in g1] == [c.text for c in g2]
    assert [c.n_tokens for c in g1] == [c.n_tokens for c in g2]
    for a, b in zip(g1, g2):
        assert a.sum_logprob == pytest.approx(b.sum_logprob, abs=1e-4)


@torch.no_grad()
def _reference_greedy(policy: Policy, source: str, max_new: int) -> tuple[str, int, float]:
    """Token-by-token greedy decode with full forward passes: no cache, no padding, no generate()."""
    tok, model = policy.tokenizer, policy.model
    ids = policy.prompt_ids(source)[-(policy.max_length - max_new) :]
    new, lp = [], 0.0
    for _ in range(max_new):
        logits = model(input_ids=torch.tensor([ids + new])).logits[0, -1].float()
        t = int(logits.argmax())
        lp += float(torch.log_softmax(logits, -1)[t])
        if t == tok.eos_token_id:
            break
        new.append(t)
    return tok.decode(new, skip_special_tokens=True).strip(), len(new), lp


def test_greedy_matches_a_plain_decode_loop(policy: Policy):
    """Left padding, the KV cache and the logprob bookkeeping agree with a naive implementation."""
    cands = sample(policy, SOURCES, 1, greedy=True, max_new_tokens=MAX_NEW, batch_size=64)
    assert all(c.text for c in cands) and any(c.n_tokens < MAX_NEW for c in cands)  # real text, some EOS
    for c in cands:
        text, n, lp = _reference_greedy(policy, SOURCES[c.source_index], MAX_NEW)
        assert (c.text, c.n_tokens) == (text, n)
        assert c.sum_logprob == pytest.approx(lp, abs=1e-3)


def test_sample_restores_training_mode(policy: Policy):
    policy.model.train()
    try:
        sample(policy, SOURCES[:2], 1, max_new_tokens=4)
        assert policy.model.training
    finally:
        policy.model.eval()
    sample(policy, SOURCES[:2], 1, max_new_tokens=4)
    assert not policy.model.training


def test_sum_logprob_equals_the_drift_rescore(policy: Policy):
    """Grow's sum_logprob is log p(text + EOS | prompt) at temperature 1, as engine.drift.score_logprobs
    re-scores it from the text, whatever temperature and top-p the sample was drawn with."""
    from engine.drift import score_logprobs

    cands = sample(policy, SOURCES, 4, temperature=0.7, top_p=0.9, max_new_tokens=MAX_NEW, seed=3)
    # Ended with EOS (the re-score appends one) and re-encoded to the drawn token count (BPE may merge
    # decoded text differently; the arith vocabulary keeps digits single tokens). Truncated prompts are
    # left out: the re-score does not truncate them as Grow does.
    fits = {i for i, s in enumerate(SOURCES) if len(policy.prompt_ids(s)) <= policy.max_length - MAX_NEW}
    kept = [
        c
        for c in cands
        if c.source_index in fits
        and c.n_tokens < MAX_NEW
        and len(policy.tokenizer(c.text, add_special_tokens=False)["input_ids"]) == c.n_tokens
    ]
    assert len(kept) >= len(cands) // 2
    want = score_logprobs(policy, [SOURCES[c.source_index] for c in kept], [c.text for c in kept])
    assert [c.sum_logprob for c in kept] == pytest.approx(want.tolist(), abs=1e-4)
