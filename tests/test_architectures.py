"""Policies of every supported architecture (Llama, Qwen2, GPT-NeoX causal; T5, BART encoder-decoder), built
as tiny random local directories by tests/tiny_models.py: loading, fine-tuning, scoring, the one truncation
rule Grow and Improve share, the chat template, and a tiny campaign end to end on a Llama and a T5 policy.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_tiny_campaign
from tiny_models import ARCHITECTURES, CHAT_TEMPLATE, SEQ2SEQ, save_tiny_policy

from engine.config import ConfigError
from engine.drift import score_logprobs
from engine.improve import (
    TrainExample,
    _collate,
    _encode,
    answer_room,
    fine_tune,
    policy_logits,
    weighted_nll,
)
from engine.models import load_policy

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TEMPLATE = "{source} => "
PAIRS = [("12 + 7", "19"), ("3 * 4", "12"), ("a red house", "une maison rouge"), ("40 - 2", "38")]
MAX_LENGTH = 64  # of the tiny models: short enough that a repeated source overflows it


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("policies")
    out = {a: save_tiny_policy(a, root / a, max_length=MAX_LENGTH) for a in ARCHITECTURES}
    out["llama_chat"] = save_tiny_policy("llama_chat", root / "llama_chat", max_length=MAX_LENGTH)
    return out


def _loss(policy, examples: list[TrainExample]) -> float:
    """Mean target-token NLL of `examples`, in eval mode."""
    policy.model.eval()
    ids, attn, labels, w = _collate(
        [(*_encode(policy, e), e.weight) for e in examples], policy.tokenizer.pad_token_id, "cpu"
    )
    with torch.no_grad():
        logits = policy_logits(policy, ids, attn, labels)
    return float(weighted_nll(logits, labels, w, shifted=not policy.is_seq2seq)[0])


def _reference_logprob(policy, prompt: list[int], target: list[int]) -> float:
    """sum log p(target | prompt) computed here, independently of engine.improve, with the documented
    truncation: causal keeps the prompt's last max(L - len(target), L // 2) tokens and as much of the
    target as then fits; encoder-decoder keeps the prompt's last L tokens and the target's first L."""
    model, big = policy.model, policy.max_length
    with torch.no_grad():
        if policy.is_seq2seq:
            p, t = prompt[-big:], target[:big]
            start = model.config.decoder_start_token_id
            logits = model(
                input_ids=torch.tensor([p]), decoder_input_ids=torch.tensor([[start] + t[:-1]])
            ).logits[0]
            lp = torch.log_softmax(logits.float(), -1)
            return float(sum(lp[i, tok] for i, tok in enumerate(t)))
        p = prompt[-max(big - len(target), big // 2) :]
        t = target[: big - len(p)]
        lp = torch.log_softmax(model(input_ids=torch.tensor([p + t])).logits[0].float(), -1)
        return float(sum(lp[len(p) - 1 + i, tok] for i, tok in enumerate(t)))


# ---------------------------------------------------------------- each architecture


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_load_fine_tune_and_score(arch: str, dirs):
    policy = load_policy(dirs[arch], TEMPLATE, "cpu")
    assert policy.is_seq2seq == (arch in SEQ2SEQ)
    assert policy.max_length == MAX_LENGTH  # T5 names no position limit: the tokenizer's model_max_length
    data = [TrainExample(s, t) for s, t in PAIRS] * 4
    loss0 = _loss(policy, data)
    sources, texts = [s for s, _ in PAIRS], [t for _, t in PAIRS]
    lp0 = score_logprobs(policy, sources, texts)
    assert np.isfinite(lp0).all() and (lp0 < 0).all()
    # score_logprobs is the quantity the weighted loss averages: sum of the same per-token terms.
    n_tokens = sum(len(policy.target_ids(t)) for t in texts)
    assert -lp0.sum() / n_tokens == pytest.approx(_loss(policy, data[: len(PAIRS)]), rel=1e-4)

    res = fine_tune(policy, data, lr=3e-3, epochs=6, batch_size=4, seed=0)
    assert res.steps == 6 * math.ceil(len(data) / 4) and res.tokens > 0
    loss1 = _loss(policy, data)
    assert loss1 < 0.7 * loss0, (loss0, loss1)
    lp1 = score_logprobs(policy, sources, texts)
    assert (lp1 > lp0).all()


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_long_prompts_and_targets_score_as_truncated(arch: str, dirs):
    """A prompt and a target each longer than the context: score_logprobs gives what the documented
    truncation gives, and Improve always trains on target tokens."""
    policy = load_policy(dirs[arch], TEMPLATE, "cpu")
    long_src = " ".join(["the cat sat on the mat"] * 30)
    long_tgt = " ".join(["une maison rouge"] * 30)
    cases = [(long_src, "19"), ("12 + 7", long_tgt), (long_src, long_tgt), ("3 * 4", "12")]
    got = score_logprobs(policy, [s for s, _ in cases], [t for _, t in cases])
    assert np.isfinite(got).all()
    for (s, t), g in zip(cases, got, strict=True):
        p_ids, t_ids = policy.prompt_ids(s), policy.target_ids(t)
        assert g == pytest.approx(_reference_logprob(policy, p_ids, t_ids), abs=1e-3)
        ids, labels = _encode(policy, TrainExample(s, t))
        kept = [x for x in labels if x != -100]
        assert len(ids) <= MAX_LENGTH and len(labels) <= MAX_LENGTH
        # At least min(len(target), ceil(L / 2)) target tokens, and the kept ones are its first.
        assert min(len(t_ids), MAX_LENGTH - MAX_LENGTH // 2) <= len(kept) and kept == t_ids[: len(kept)]
        if policy.is_seq2seq:
            assert ids == p_ids[-MAX_LENGTH:]
        else:
            assert ids[: len(ids) - len(kept)] == p_ids[-(len(ids) - len(kept)) :]  # the prompt's tail


@pytest.mark.parametrize("arch", ["llama", "t5"])
def test_grow_and_improve_truncate_a_long_prompt_the_same_way(arch: str, dirs, monkeypatch):
    """The prompt Grow decodes from (recorded on its way into engine.grow.decode_batch, which still runs)
    is the prompt Improve trains the same source with when the target is max_new_tokens long, and its tail
    when the target is shorter: Improve never sees less of the prompt than Grow sampled from."""
    import engine.grow as grow

    policy = load_policy(dirs[arch], TEMPLATE, "cpu")
    seen: list[list[int]] = []
    real = grow.decode_batch

    def recording(policy, prompts, *args):
        seen.extend(prompts)
        return real(policy, prompts, *args)

    monkeypatch.setattr(grow, "decode_batch", recording)
    src, m = " ".join(["the cat sat on the mat"] * 30), 6
    cands = grow.sample(policy, [src], k=2, max_new_tokens=m, seed=0)
    assert len(cands) == 2 and all(c.n_tokens <= m and math.isfinite(c.sum_logprob) for c in cands)
    (grow_prompt,) = seen
    assert len(policy.prompt_ids(src)) > MAX_LENGTH
    tok = policy.tokenizer
    for n in (m, 2):  # target + EOS of exactly max_new_tokens tokens, and a shorter one
        target = tok.decode(tok("une maison rouge " * 4, add_special_tokens=False)["input_ids"][: n - 1])
        t_ids = policy.target_ids(target)
        assert len(t_ids) == n
        ids, labels = _encode(policy, TrainExample(src, target))
        if policy.is_seq2seq:
            assert ids == grow_prompt and len(ids) == MAX_LENGTH
            continue
        prompt = ids[: len(ids) - n]
        assert ids[len(prompt) :] == t_ids and labels == [-100] * len(prompt) + t_ids
        if n == m:
            assert prompt == grow_prompt and len(prompt) == MAX_LENGTH - m
        else:
            assert prompt[-len(grow_prompt) :] == grow_prompt
            assert len(prompt) == MAX_LENGTH - answer_room(policy, n) > len(grow_prompt)


def test_bos_is_kept_when_a_long_prompt_is_cut(tmp_path: Path):
    """A tokenizer that starts every text with BOS (as Llama's does): prompts start with it, and a prompt cut
    to its tail still does, in Grow and in Improve."""
    from tokenizers.processors import TemplateProcessing
    from transformers import AutoTokenizer

    path = save_tiny_policy("llama", tmp_path / "bos", max_length=MAX_LENGTH)
    tok = AutoTokenizer.from_pretrained(path)
    bos = tok.bos_token_id
    tok._tokenizer.post_processor = TemplateProcessing(
        single=f"{tok.bos_token} $A", special_tokens=[(tok.bos_token, bos)]
    )
    tok.save_pretrained(path)
    policy = load_policy(path, TEMPLATE, "cpu")
    short = policy.prompt_ids("12 + 7")
    assert short[0] == bos and short[1:] == tok("12 + 7 => ", add_special_tokens=False)["input_ids"]
    long_ids = policy.prompt_ids(" ".join(["the cat sat on the mat"] * 30))
    cut = policy.fit_prompt(long_ids, 10)
    assert len(cut) == MAX_LENGTH - 10 and cut[0] == bos and cut[1:] == long_ids[-(len(cut) - 1) :]
    ids, _ = _encode(policy, TrainExample(" ".join(["the cat sat on the mat"] * 30), "19"))
    assert ids[0] == bos and len(ids) == MAX_LENGTH


# ---------------------------------------------------------------- chat template


def test_chat_template_wraps_the_prompt_as_one_user_turn(dirs):
    policy = load_policy(dirs["llama_chat"], TEMPLATE, "cpu", chat_template=True)
    tok = policy.tokenizer
    assert tok.chat_template == CHAT_TEMPLATE
    msgs = [{"role": "user", "content": TEMPLATE.format(source="12 + 7")}]
    want = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
    want = want["input_ids"] if hasattr(want, "keys") else want
    got = policy.prompt_ids("12 + 7")
    assert got == list(want)
    assert tok.decode(got) == "<|user|>12 + 7 => <|eos|><|assistant|>"
    plain = load_policy(dirs["llama_chat"], TEMPLATE, "cpu")  # off: the template is not used
    assert plain.prompt_ids("12 + 7") == tok("12 + 7 => ", add_special_tokens=False)["input_ids"]
    # Improve trains the answer right after the opened assistant turn.
    ids, labels = _encode(policy, TrainExample("12 + 7", "19"))
    assert ids == got + policy.target_ids("19") and labels[: len(got)] == [-100] * len(got)
    assert np.isfinite(score_logprobs(policy, ["12 + 7"], ["19"])).all()


def test_missing_chat_template_is_refused_naming_the_field(dirs):
    from engine.config import PolicyConfig, ScratchModel
    from engine.probe import ProbeFailed, check_policy

    with pytest.raises(ConfigError, match="policy.chat_template") as e:
        load_policy(dirs["llama"], TEMPLATE, "cpu", chat_template=True)
    assert e.value.field == "policy.chat_template" and "no chat template" in str(e.value)
    with pytest.raises(ProbeFailed) as pe:
        check_policy(str(dirs["llama"]), chat_template=True)
    assert pe.value.field == "policy.chat_template" and "no chat template" in pe.value.why
    check_policy(str(dirs["llama_chat"]), chat_template=True)
    for arch in ARCHITECTURES:
        check_policy(str(dirs[arch]))
    with pytest.raises(ConfigError, match="policy.chat_template"):
        PolicyConfig(scratch=ScratchModel(), chat_template=True)


def test_probe_refuses_a_model_that_is_no_language_model(tmp_path: Path):
    """DistilBERT is an encoder with no causal LM head: load_policy could not load it."""
    from transformers import DistilBertConfig

    from engine.probe import ProbeFailed, check_policy

    DistilBertConfig(vocab_size=50, dim=32, n_layers=1, n_heads=2).save_pretrained(tmp_path / "enc")
    with pytest.raises(ProbeFailed, match="names no causal language model") as e:
        check_policy(str(tmp_path / "enc"))
    assert e.value.field == "policy.path"


# ---------------------------------------------------------------- campaigns end to end


def _policy_campaign(root: Path, arch: str) -> Path:
    """The tiny arith campaign of conftest (1 Grow, 1 Improve), on a tiny `arch` policy directory with BC."""
    toml = write_tiny_campaign(root, grows=1)
    policy_dir = save_tiny_policy(arch, root / "policy", max_length=MAX_LENGTH)
    text = toml.read_text()
    scratch = text[text.index("[policy.scratch]") : text.index("[policy.bootstrap]")]
    text = text.replace(scratch, "").replace("[policy.bootstrap]", "[policy.bootstrap]\nforce = true", 1)
    text = text.replace(
        'prompt_template = "{source} => "', f'prompt_template = "{{source}} => "\npath = "{policy_dir}"'
    )
    toml.write_text(text)
    return toml


# A Llama policy runs end to end in tests/test_lora.py (with LoRA adapters); this one covers the
# encoder-decoder path.
@pytest.mark.slow  # about a minute on 2 busy cores: a worker process per step
@pytest.mark.parametrize("arch", ["t5"])
def test_campaign_end_to_end(arch: str, tmp_path: Path):
    from engine.campaign import Controller, new_campaign
    from engine.config import load_config
    from engine.store import open_store

    cfg = load_config(_policy_campaign(tmp_path / "c", arch))
    assert cfg.policy.path and cfg.policy.scratch is None
    store = open_store(tmp_path / "restgov.duckdb")
    cid = new_campaign(store, cfg, tmp_path / "runs")
    state = Controller(store).run(cid)
    done = store.done_steps(cid)
    assert state == "DONE", store.campaign(cid)
    assert {"bootstrap", "g1-grow", "g1-i1", "final"} <= set(done)
    assert done["bootstrap"]["trained"] is True
    ((n, finite),) = (
        store.cursor()
        .execute(
            "SELECT count(*), count(*) FILTER (WHERE isfinite(sum_logprob)) FROM samples "
            "WHERE campaign_id = ? AND sample_idx >= 0",
            [cid],
        )
        .fetchall()
    )
    assert n == finite > 0
