"""Tests for engine.improve: fine_tune on a tiny scratch GPT-2 (weights change, loss falls, early stopping
restores the best weights) and weighted_nll checked by hand on small tensors."""

from __future__ import annotations

import math

import pytest
import torch

from engine.config import ScratchModel
from engine.improve import TrainExample, _collate, _encode, fine_tune, weighted_nll
from engine.models import Policy, build_scratch_policy

PAIRS = [("7 + 5", "12"), ("3 + 4", "7"), ("9 + 9", "18"), ("2 + 6", "8")]
TEMPLATE = "{source} = "


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _policy(seed: int = 0) -> Policy:
    model, tok = build_scratch_policy(
        ScratchModel(n_layer=1, n_head=2, n_embd=32, vocab_size=300, max_length=32),
        [TEMPLATE.format(source=s) + t for s, t in PAIRS] * 4,
        seed=seed,
    )
    return Policy(model, tok, "cpu", TEMPLATE)


def _state(policy: Policy) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in policy.model.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@torch.no_grad()
def _loss(policy: Policy, examples: list[TrainExample]) -> float:
    """Mean target-token NLL of the whole set, in eval mode."""
    policy.model.eval()
    ids, attn, labels, w = _collate(
        [(*_encode(policy, e), e.weight) for e in examples], policy.tokenizer.pad_token_id, "cpu"
    )
    return float(weighted_nll(policy.model(input_ids=ids, attention_mask=attn).logits, labels, w)[0])


DATA = [TrainExample(s, t) for s, t in PAIRS] * 8  # a tiny dataset, repeated


def test_fine_tune_changes_weights_and_lowers_the_loss():
    policy = _policy()
    before, loss0 = _state(policy), _loss(policy, DATA)
    points = []
    res = fine_tune(policy, DATA, lr=3e-3, epochs=6, batch_size=8, seed=0, on_step=points.append)
    assert not _same(before, _state(policy))
    loss1 = _loss(policy, DATA)
    assert loss1 < 0.7 * loss0, (loss0, loss1)
    assert res.steps == 6 * math.ceil(len(DATA) / 8) == len(points)
    assert [p["step"] for p in points] == list(range(1, res.steps + 1))
    assert all(p["total"] == res.steps and math.isfinite(p["loss"]) and p["lr"] > 0 for p in points)
    assert (
        res.tokens > 0 and res.best_step == 0 and res.best_reward is None
    )  # no evaluate: nothing to restore
    assert not policy.model.training


def test_fine_tune_is_reproducible_for_a_seed():
    a, b = _policy(), _policy()
    fine_tune(a, DATA, lr=3e-3, epochs=1, batch_size=8, seed=4)
    fine_tune(b, DATA, lr=3e-3, epochs=1, batch_size=8, seed=4)
    assert _same(_state(a), _state(b))


def test_max_steps_caps_the_optimizer_steps():
    res = fine_tune(_policy(), DATA, lr=1e-3, epochs=10, batch_size=4, seed=0, max_steps=3)
    assert res.steps == 3


def test_no_examples_is_an_error():
    with pytest.raises(ValueError, match="no training examples"):
        fine_tune(_policy(), [], lr=1e-3, epochs=1, batch_size=4, seed=0)


def test_early_stopping_restores_the_best_initial_weights():
    policy = _policy()
    before = _state(policy)
    values = iter([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])  # every check after the first is worse
    calls = []

    def evaluate() -> float:
        calls.append(1)
        return next(values)

    res = fine_tune(
        policy, DATA, lr=3e-3, epochs=4, batch_size=8, seed=0, evaluate=evaluate, eval_every=2, patience=2
    )
    assert _same(before, _state(policy)), "the weights of the best check (before training) must be restored"
    assert (res.start_reward, res.best_reward, res.best_step) == (0.9, 0.9, 0)
    assert len(calls) == 3  # step 0, then two worse checks exhaust the patience
    assert res.stopped_early and res.steps == 4  # stopped at step 4 of 16
    assert [p["val_reward"] for p in res.curve if p["val_reward"] is not None] == [0.9, 0.8, 0.7]


def test_early_stopping_keeps_the_best_intermediate_weights():
    """Checks at steps 0, 3, 6, 9; the best is at step 3: the weights after step 3 are returned, not the
    last."""

    def run(values: list[float], patience: int):
        policy = _policy()
        it = iter(values)
        res = fine_tune(
            policy,
            DATA,
            lr=3e-3,
            epochs=4,
            batch_size=8,
            seed=0,
            max_steps=9,
            evaluate=lambda: next(it),
            eval_every=3,
            patience=patience,
        )
        return res, _state(policy)

    best3, w_best3 = run([0.1, 0.5, 0.2, 0.3], patience=5)
    assert (best3.best_step, best3.best_reward, best3.start_reward) == (3, 0.5, 0.1)
    assert not best3.stopped_early and best3.steps == 9
    again, w_again = run([0.1, 0.5, 0.0, 0.0], patience=2)  # same trajectory; patience runs out at the end
    assert again.best_step == 3 and _same(w_best3, w_again)
    last, w_last = run([0.1, 0.2, 0.3, 0.4], patience=2)  # improving to the end: the final weights are kept
    assert last.best_step == 9 and not _same(w_best3, w_last)
    assert not _same(w_best3, _state(_policy()))


# ---------------------------------------------------------------- weighted_nll by hand


def _by_hand(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> float:
    num, n = 0.0, 0
    for b in range(logits.shape[0]):
        for t in range(logits.shape[1] - 1):
            y = int(labels[b, t + 1])
            if y == -100:
                continue
            p = torch.softmax(logits[b, t].double(), -1)[y]
            num += float(weights[b]) * -math.log(float(p))
            n += 1
    return num / n


def test_weighted_nll_by_hand():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 7, generator=g)  # (B, T, V)
    labels = torch.tensor([[-100, -100, 3, 1, 6], [-100, 2, 2, -100, -100], [-100, -100, -100, 0, 5]])
    weights = torch.tensor([1.0, 0.0, 0.5])
    loss, n = weighted_nll(logits, labels, weights)
    assert n == 3 + 2 + 2  # target tokens (labels after the first position, not -100)
    assert float(loss) == pytest.approx(_by_hand(logits, labels, weights), rel=1e-6)
    # All weights 1: the usual token-mean cross-entropy of next-token prediction.
    ones, _ = weighted_nll(logits, labels, torch.ones(3))
    ce = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, 7), labels[:, 1:].reshape(-1), ignore_index=-100
    )
    assert float(ones) == pytest.approx(float(ce), rel=1e-6)


def test_weight_zero_examples_contribute_nothing():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 4, 6, generator=g, requires_grad=True)
    labels = torch.tensor([[-100, 1, 2, 3], [-100, 4, 5, 0]])
    weights = torch.tensor([1.0, 0.0])
    loss, _ = weighted_nll(logits, labels, weights)
    loss.backward()
    assert torch.count_nonzero(logits.grad[1]) == 0  # no gradient reaches the weight-0 example
    assert torch.count_nonzero(logits.grad[0]) > 0
    # Changing what the weight-0 example predicts does not move the loss.
    other = logits.detach().clone()
    other[1] = torch.randn(4, 6, generator=g) * 10
    assert float(weighted_nll(other, labels, weights)[0]) == pytest.approx(float(loss.detach()), abs=1e-7)


def test_reward_weighted_fine_tune_ignores_weight_zero_targets():
    """Two runs that differ only in the targets of weight-0 examples end with identical weights."""
    keep = [TrainExample(s, t, 1.0) for s, t in PAIRS[:2]]
    a, b = _policy(), _policy()
    fine_tune(
        a,
        keep + [TrainExample("9 + 9", "18", 0.0), TrainExample("2 + 6", "8", 0.0)],
        lr=3e-3,
        epochs=3,
        batch_size=4,
        seed=0,
    )
    fine_tune(
        b,
        keep + [TrainExample("9 + 9", "81", 0.0), TrainExample("2 + 6", "5", 0.0)],
        lr=3e-3,
        epochs=3,
        batch_size=4,
        seed=0,
    )
    assert _same(_state(a), _state(b))
    c = _policy()  # a non-zero weight on a different target does change the result
    fine_tune(
        c,
        keep + [TrainExample("9 + 9", "81", 0.5), TrainExample("2 + 6", "5", 0.5)],
        lr=3e-3,
        epochs=3,
        batch_size=4,
        seed=0,
    )
    assert not _same(_state(a), _state(c))
