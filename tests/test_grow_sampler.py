"""engine.grow's own decode loop on tiny random GPT-2, Llama, Qwen2, GPT-NeoX, T5 and BART policies and on a
LoRA-wrapped Llama: greedy decodes equal model.generate's, samples equal the generate-based path's for the
same seed, and each candidate's sum_logprob equals a teacher-forced re-score of its text.

The tokenizer is word-level (whitespace split), so a decoded candidate re-encodes to exactly the tokens
that were drawn and can be re-scored from its text.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    BartConfig,
    BartForConditionalGeneration,
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
    T5Config,
    T5ForConditionalGeneration,
)

from engine.drift import score_logprobs
from engine.grow import _generate_batch, _own_loop_ok, decode_batch, sample
from engine.models import Policy, load_policy

pytestmark = pytest.mark.usefixtures("one_torch_thread")

WORDS = [f"w{i}" for i in range(36)] + ["=>"]
TEMPLATE = "{source} =>"
MAX_NEW = 24
PAD, EOS = 0, 1
rng = random.Random(3)
# Different lengths, so the decoder-only batches are left-padded and the encoder ones right-padded.
SOURCES = [" ".join(rng.choice(WORDS[:-1]) for _ in range(n)) for n in (1, 7, 3, 12, 5, 2)]


def _tokenizer() -> PreTrainedTokenizerFast:
    vocab = {"<pad>": PAD, "<eos>": EOS} | {w: i + 2 for i, w in enumerate(WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>")


V = len(WORDS) + 2
COMMON = dict(vocab_size=V, pad_token_id=PAD, eos_token_id=EOS, bos_token_id=EOS, initializer_range=0.2)
SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
CAUSAL = {
    "gpt2": lambda: GPT2LMHeadModel(
        GPT2Config(
            n_embd=32, n_layer=2, n_head=4, n_positions=96, activation_function="gelu_pytorch_tanh", **COMMON
        )
    ),
    "llama": lambda: LlamaForCausalLM(
        LlamaConfig(num_key_value_heads=2, max_position_embeddings=96, **SMALL, **COMMON)
    ),
    "qwen2": lambda: Qwen2ForCausalLM(
        Qwen2Config(num_key_value_heads=2, max_position_embeddings=96, **SMALL, **COMMON)
    ),
    "gpt_neox": lambda: GPTNeoXForCausalLM(GPTNeoXConfig(max_position_embeddings=96, **SMALL, **COMMON)),
}
SEQ2SEQ = {
    "t5": lambda: T5ForConditionalGeneration(
        T5Config(
            d_model=32,
            d_ff=64,
            d_kv=8,
            num_layers=2,
            num_heads=4,
            decoder_start_token_id=PAD,
            **{**COMMON, "initializer_factor": 1.0},
        )
    ),
    "bart": lambda: BartForConditionalGeneration(
        BartConfig(
            d_model=32,
            encoder_layers=1,
            decoder_layers=2,
            encoder_attention_heads=4,
            decoder_attention_heads=4,
            encoder_ffn_dim=64,
            decoder_ffn_dim=64,
            max_position_embeddings=96,
            decoder_start_token_id=EOS,
            forced_eos_token_id=None,
            **{**COMMON, "init_std": 0.2},
        )
    ),
}


def _policy(kind: str, tmp: Path) -> Policy:
    torch.manual_seed(0)
    tok = _tokenizer()
    if kind in SEQ2SEQ:
        pol = Policy(SEQ2SEQ[kind]().eval(), tok, "cpu", TEMPLATE)
    else:
        # Saved with its tokenizer and loaded back, as a campaign's policy directory is. The tokenizer object
        # is kept: transformers maps a qwen2 directory to Qwen2Tokenizer, which does not split words.
        CAUSAL[kind]().save_pretrained(tmp)
        tok.save_pretrained(tmp)
        pol = load_policy(tmp, TEMPLATE, device="cpu")
        pol.tokenizer = tok
    _make_eos_likely(pol)
    return pol


@torch.no_grad()
def _make_eos_likely(policy: Policy) -> None:
    """A random model's greedy decodes loop without EOS: make EOS's output row a scaled copy of a token
    greedy picks (the most picked first), so that some greedy decodes end early and others run on."""
    prompts = _prompts(policy)
    new, _ = decode_batch(policy, prompts, 1, 1.0, 1.0, MAX_NEW, greedy=True, seed=0)
    w = policy.model.get_output_embeddings().weight
    for t in torch.bincount(new.flatten(), minlength=V).argsort(descending=True).tolist():
        w[EOS] = 1.05 * w[t]
        rows = [_until_eos(r) for r in _greedy_ids(policy, prompts)]
        if any(r[-1] == EOS for r in rows) and any(len(r) > 3 for r in rows):
            return
    raise AssertionError("no output row of EOS gives both short and long greedy decodes")


@pytest.fixture(scope="module", params=[*CAUSAL, *SEQ2SEQ])
def policy(request, tmp_path_factory) -> Policy:
    return _policy(request.param, tmp_path_factory.mktemp(request.param))


@pytest.fixture(scope="module")
def lora_policy(tmp_path_factory) -> Policy:
    from peft import LoraConfig, get_peft_model

    pol = _policy("llama", tmp_path_factory.mktemp("lora"))
    torch.manual_seed(1)
    model = get_peft_model(pol.model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    for name, p in model.named_parameters():  # LoRA B starts at zero: give the adapter an effect
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.3)
    return Policy(model.eval(), pol.tokenizer, "cpu", TEMPLATE)


def _prompts(policy: Policy) -> list[list[int]]:
    room = 0 if policy.is_seq2seq else MAX_NEW
    return [policy.fit_prompt(policy.prompt_ids(s), room) for s in SOURCES]


def _greedy_ids(policy: Policy, prompts: list[list[int]]) -> list[list[int]]:
    return decode_batch(policy, prompts, 1, 1.0, 1.0, MAX_NEW, greedy=True, seed=0)[0].tolist()


def _until_eos(row: list[int]) -> list[int]:
    return row[: row.index(EOS) + 1] if EOS in row else row


@torch.no_grad()
def _generate_greedy(policy: Policy, prompt: list[int]) -> list[int]:
    """model.generate's greedy decode of one unpadded prompt: the new ids up to and including EOS."""
    ids = torch.tensor([prompt])
    seq = policy.model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        do_sample=False,
        max_new_tokens=MAX_NEW,
        pad_token_id=PAD,
        eos_token_id=EOS,
    )
    return _until_eos(seq[0, 1 if policy.is_seq2seq else ids.shape[1] :].tolist())


def test_the_own_loop_drives_every_architecture(policy: Policy, lora_policy: Policy):
    assert _own_loop_ok(policy.model, policy.is_seq2seq)
    assert _own_loop_ok(lora_policy.model, False)


def _check_greedy_matches_generate(policy: Policy) -> None:
    prompts = _prompts(policy)
    got = [_until_eos(r) for r in _greedy_ids(policy, prompts)]
    want = [_generate_greedy(policy, p) for p in prompts]
    assert got == want
    assert any(EOS in r for r in got) and any(len(r) > 2 for r in got)  # some stop early, some run on
    cands = sample(policy, SOURCES, k=3, greedy=True, max_new_tokens=MAX_NEW, batch_size=4)
    dec = policy.tokenizer.batch_decode([[t for t in r if t != EOS] for r in want], skip_special_tokens=True)
    assert [c.text for c in cands] == [d.strip() for d in dec]
    assert [c.n_tokens for c in cands] == [len([t for t in r if t != EOS]) for r in want]


def test_greedy_equals_model_generate(policy: Policy):
    _check_greedy_matches_generate(policy)


def test_greedy_equals_model_generate_for_a_lora_model(lora_policy: Policy):
    _check_greedy_matches_generate(lora_policy)


@pytest.mark.parametrize("top_p", [1.0, 0.8])
def test_samples_equal_the_generate_path_for_the_same_seed(policy: Policy, top_p: float):
    """The own loop (prefill once, cache repeated K times, ended rows dropped) against generate with
    num_return_sequences=K, a chosen-token log-prob recorder and the same warpers and seed."""
    prompts = _prompts(policy)
    a_ids, a_lp = decode_batch(policy, prompts, 4, 0.7, top_p, MAX_NEW, greedy=False, seed=11)
    with torch.no_grad():
        b_ids, b_lp = _generate_batch(policy, prompts, 4, 0.7, top_p, MAX_NEW, greedy=False, seed=11)
    a_rows, b_rows = [_until_eos(r) for r in a_ids.tolist()], [_until_eos(r) for r in b_ids.tolist()]
    assert a_rows == b_rows
    assert len(set(map(tuple, a_rows))) > len(prompts)  # K samples of a prompt differ
    n = max(map(len, a_rows))
    mask = torch.tensor([[j < len(r) for j in range(n)] for r in a_rows])
    assert torch.allclose(a_lp[:, :n] * mask, b_lp[:, :n] * mask, atol=1e-4)


@torch.no_grad()
def _seq2seq_rescore(policy: Policy, sources: list[str], texts: list[str]) -> list[float]:
    """sum log p(text + EOS | source) with one teacher-forced decoder pass, no cache."""
    model, out = policy.model, []
    for s, t in zip(sources, texts):
        src = torch.tensor([policy.fit_prompt(policy.prompt_ids(s), 0)])
        tgt = policy.target_ids(t)
        dec = torch.tensor([[policy.model.generation_config.decoder_start_token_id] + tgt[:-1]])
        logits = model(input_ids=src, attention_mask=torch.ones_like(src), decoder_input_ids=dec).logits[0]
        out.append(float(torch.log_softmax(logits.float(), -1).gather(1, torch.tensor(tgt)[:, None]).sum()))
    return out


def test_sum_logprob_equals_a_teacher_forced_rescore(policy: Policy):
    cands = sample(policy, SOURCES, 4, temperature=0.9, top_p=0.95, max_new_tokens=MAX_NEW, seed=5)
    # Those that ended with EOS (which the re-score appends) and hold no special token (which decoding
    # drops; a random model may draw <pad>): the word-level tokenizer gives their drawn tokens back.
    ended = [
        c
        for c in cands
        if c.n_tokens < MAX_NEW
        and len(policy.tokenizer(c.text, add_special_tokens=False)["input_ids"]) == c.n_tokens
    ]
    assert len(ended) >= len(cands) // 4
    srcs, texts = [SOURCES[c.source_index] for c in ended], [c.text for c in ended]
    if policy.is_seq2seq:
        want = _seq2seq_rescore(policy, srcs, texts)
    else:
        want = score_logprobs(policy, srcs, texts).tolist()
    assert [c.sum_logprob for c in ended] == pytest.approx(want, abs=1e-4)


def test_same_seed_same_candidates_and_batch_tokens_caps_batches(policy: Policy):
    kw = dict(temperature=1.0, max_new_tokens=MAX_NEW, batch_size=64)
    a = sample(policy, SOURCES, 3, seed=4, **kw)
    torch.manual_seed(999)  # the global RNG state must not matter
    b = sample(policy, SOURCES, 3, seed=4, **kw)
    assert [(c.text, c.n_tokens, c.sum_logprob) for c in a] == [
        (c.text, c.n_tokens, c.sum_logprob) for c in b
    ]
    # batch_tokens: sequences x (longest prompt + MAX_NEW) per batch; every batch within the cap unless
    # it holds a single source.
    lens = sorted(len(p) for p in _prompts(policy))
    cap = 3 * 2 * (lens[-1] + MAX_NEW)  # two sources of the longest prompts fit
    seen: list[int] = []
    c = sample(policy, SOURCES, 3, seed=4, on_batch=seen.append, batch_tokens=cap, **kw)
    assert sum(seen) == len(SOURCES) and 1 < len(seen) < len(SOURCES)
    assert [(x.source_index, x.sample_index) for x in c] == [(x.source_index, x.sample_index) for x in a]
    start = 0
    for n in seen:
        assert n == 1 or 3 * n * (lens[start + n - 1] + MAX_NEW) <= cap
        start += n
    g1 = sample(policy, SOURCES, 1, greedy=True, max_new_tokens=MAX_NEW)
    g2 = sample(policy, SOURCES, 1, greedy=True, max_new_tokens=MAX_NEW, batch_tokens=1)  # one per batch
    assert [(x.text, x.n_tokens) for x in g1] == [(x.text, x.n_tokens) for x in g2]
    assert [x.sum_logprob for x in g1] == pytest.approx([x.sum_logprob for x in g2], abs=1e-4)


def _raw_rescore_matches(policy: Policy, cands) -> None:
    """sum_logprob of the candidates that ended with EOS equals a teacher-forced rescore of the raw model."""
    ended = [
        c
        for c in cands
        if c.n_tokens < MAX_NEW
        and len(policy.tokenizer(c.text, add_special_tokens=False)["input_ids"]) == c.n_tokens
    ]
    assert ended
    srcs, texts = [SOURCES[c.source_index] for c in ended], [c.text for c in ended]
    want = _seq2seq_rescore(policy, srcs, texts) if policy.is_seq2seq else score_logprobs(policy, srcs, texts)
    assert [c.sum_logprob for c in ended] == pytest.approx(list(want), abs=1e-4)


def test_a_checkpoint_that_forces_its_first_token_is_sampled_through_generate(tmp_path: Path):
    """mBART-style checkpoints force the first decoded token (the target language); the own loop would
    ignore that, so such a checkpoint is sampled through generate. Every candidate starts with the forced
    token, and sum_logprob is still the raw policy's (a teacher-forced rescore), not the forced distribution's
    (where the forced token has log-prob 0)."""
    from engine.grow import generation_settings

    policy = _policy("bart", tmp_path / "bart")
    assert generation_settings(policy.model) == {}
    forced = 2 + WORDS.index("w7")
    policy.model.generation_config.forced_bos_token_id = forced
    assert generation_settings(policy.model) == {"forced_bos_token_id": forced}
    new, logp = decode_batch(policy, _prompts(policy), 3, 0.9, 1.0, MAX_NEW, greedy=False, seed=2)
    assert new[:, 0].tolist() == [forced] * len(new)
    assert (logp[:, 0] < -1e-3).all()  # the raw model does not put all its mass on the forced token
    cands = sample(policy, SOURCES, 3, temperature=0.9, max_new_tokens=MAX_NEW, seed=2)
    assert all(c.text.split()[0] == "w7" for c in cands if c.n_tokens)
    _raw_rescore_matches(policy, cands)


def test_a_checkpoint_that_suppresses_tokens_never_draws_them(tmp_path: Path):
    """A causal checkpoint whose generation_config suppresses tokens: sampled through generate, the token
    never appears, and sum_logprob is the raw policy's."""
    from engine.grow import generation_settings

    policy = _policy("llama", tmp_path / "llama")
    before = sample(policy, SOURCES, 3, temperature=0.9, max_new_tokens=MAX_NEW, seed=2)
    drawn = [w for c in before for w in c.text.split()]
    top = max(set(drawn), key=drawn.count)  # the word the unconstrained policy draws most
    policy.model.generation_config.suppress_tokens = [2 + WORDS.index(top)]
    assert set(generation_settings(policy.model)) == {"suppress_tokens"}
    cands = sample(policy, SOURCES, 3, temperature=0.9, max_new_tokens=MAX_NEW, seed=2)
    assert all(top not in c.text.split() for c in cands)
    _raw_rescore_matches(policy, cands)
