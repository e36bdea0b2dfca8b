"""Grow: sample K candidates per source from the current policy, batched and KV-cached.

`sample` is pure: same policy, sources, settings and seed give the same candidates on CPU.
Each candidate carries its token count and its sum log-probability under the unmodified policy
(temperature 1, no top-p), which the drift audit uses to estimate KL from the base policy.

Each prompt is encoded once: the B prompts of a batch are prefilled (decoder-only) or encoded and given
their first decoder step (encoder-decoder), then the KV cache (and encoder states) is repeated K times and
the K samples are decoded together by a plain loop. Only the log-prob of each chosen token is kept, so
memory per step is one (B*K, vocabulary) row of logits, never (B*K, steps, vocabulary). Models whose
forward the loop cannot drive (no `cache`/`past_key_values` argument, prompt-learning adapters), and
checkpoints whose generation_config constrains the next token (forced BOS/EOS, repetition penalties,
suppressed tokens: `generation_settings`), go through `generate` with a logits processor that gathers the
chosen tokens' raw log-probs step by step, before generate's own processors.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import LogitsProcessor, LogitsProcessorList
from transformers.cache_utils import DynamicLayer
from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper
from transformers.modeling_outputs import BaseModelOutput

from .models import Policy, autocast


@dataclass
class Candidate:
    source_index: int  # position in the `sources` list given to `sample`
    sample_index: int  # 0..K-1
    text: str
    n_tokens: int
    sum_logprob: float


@torch.no_grad()
def sample(
    policy: Policy,
    sources: list[str],
    k: int,
    temperature: float = 0.8,
    top_p: float = 1.0,
    max_new_tokens: int = 48,
    batch_size: int = 64,
    seed: int = 0,
    greedy: bool = False,
    on_batch: Callable[[int], None] | None = None,
    batch_tokens: int | None = None,
) -> list[Candidate]:
    """K samples for each source (or one greedy decode each when `greedy`).

    Sources are sorted by prompt length and packed `batch_size // k` at a time (left-padded; right-padded
    for an encoder) so each batch does little padding; `batch_tokens` further caps a batch at that many
    sequences x (prompt + max_new_tokens) tokens, so long prompts get smaller batches. Results come back
    in (source, sample) order.
    """
    model = policy.model
    was_training = model.training
    model.eval()
    if greedy:
        k = 1
    # A decoder-only model holds prompt and answer in one context; an encoder sees the prompt alone.
    room = 0 if policy.is_seq2seq else max_new_tokens
    prompts = [policy.fit_prompt(policy.prompt_ids(s), room) for s in sources]
    order = sorted(range(len(sources)), key=lambda i: len(prompts[i]))
    gen = torch.Generator(device="cpu").manual_seed(seed)
    out: list[Candidate] = []
    try:
        for idx in _batches(
            [len(prompts[i]) for i in order], order, k, batch_size, batch_tokens, max_new_tokens
        ):
            # One seed per batch drawn from the campaign generator: results do not depend on any RNG state
            # outside this call, nor on the device's.
            batch_seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
            new, logp = decode_batch(
                policy, [prompts[i] for i in idx], k, temperature, top_p, max_new_tokens, greedy, batch_seed
            )
            out.extend(_candidates(policy, new, logp, idx, k))
            if on_batch:
                on_batch(len(idx))
    finally:
        model.train(was_training)
    out.sort(key=lambda c: (c.source_index, c.sample_index))
    return out


def _batches(
    lengths: list[int], order: list[int], k: int, batch_size: int, batch_tokens: int | None, max_new: int
) -> list[list[int]]:
    """Consecutive runs of `order` (sorted by prompt length, `lengths` aligned with it): at most
    batch_size // k sources, and at most batch_tokens sequences x (longest prompt + max_new) tokens;
    always at least one source."""
    per_call = max(1, batch_size // k)
    out: list[list[int]] = []
    cur: list[int] = []
    for i, n in zip(order, lengths):
        full = len(cur) >= per_call or (
            batch_tokens is not None and (len(cur) + 1) * k * (n + max_new) > batch_tokens
        )
        if cur and full:
            out.append(cur)
            cur = []
        cur.append(i)
    if cur:
        out.append(cur)
    return out


def _candidates(
    policy: Policy, new: torch.Tensor, logp: torch.Tensor, idx: list[int], k: int
) -> list[Candidate]:
    """Candidates from generated ids (B*K, T) and their per-token log-probs (B*K, T)."""
    tok = policy.tokenizer
    is_eos = new == tok.eos_token_id
    # Tokens up to and including the first EOS count; everything after it is padding.
    before_eos = torch.cumsum(is_eos.int(), dim=1) - is_eos.int() == 0
    n_tokens = (before_eos & ~is_eos).sum(1).tolist()
    sum_lp = (logp.double() * before_eos).sum(1).tolist()
    texts = tok.batch_decode(
        torch.where(before_eos & ~is_eos, new, tok.pad_token_id).cpu(), skip_special_tokens=True
    )
    return [
        Candidate(idx[row // k], row % k, text.strip(), int(n_tokens[row]), float(sum_lp[row]))
        for row, text in enumerate(texts)
    ]


def decode_batch(
    policy: Policy,
    prompts: list[list[int]],
    k: int,
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    greedy: bool,
    seed: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """K continuations of each prompt: generated ids (B*K, T), rows grouped by prompt and padded after
    their first EOS, and each token's log-prob under the raw distribution (B*K, T)."""
    drive = _own_loop_ok(policy.model, policy.is_seq2seq) and not generation_settings(policy.model)
    fn = (_seq2seq_loop if policy.is_seq2seq else _decoder_loop) if drive else _generate_batch
    return fn(policy, prompts, k, temperature, top_p, max_new_tokens, greedy, seed)


# generation_config settings that change which tokens may come next. The own loop applies temperature and
# top-p only; a checkpoint that sets any of these (mBART's forced target-language BOS, a repetition penalty
# of an instruct model) is sampled through generate, which applies them, after the log-prob recorder.
_GENERATION_SETTINGS = {
    "repetition_penalty": (None, 1.0),
    "no_repeat_ngram_size": (None, 0),
    "encoder_no_repeat_ngram_size": (None, 0),
    "encoder_repetition_penalty": (None, 1.0),
    "bad_words_ids": (None,),
    "forced_bos_token_id": (None,),
    "forced_eos_token_id": (None,),
    "forced_decoder_ids": (None,),
    "suppress_tokens": (None,),
    "begin_suppress_tokens": (None,),
    "sequence_bias": (None,),
    "min_length": (None, 0),
    "min_new_tokens": (None, 0),
}


def generation_settings(model: torch.nn.Module) -> dict:
    """The token-constraining settings of `model`'s generation_config that differ from off, by name."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    gc = getattr(base, "generation_config", None)
    if gc is None:
        return {}
    out = {}
    for name, off in _GENERATION_SETTINGS.items():
        v = getattr(gc, name, None)
        if v not in off and v != []:
            out[name] = v
    return out


def _own_loop_ok(model: torch.nn.Module, seq2seq: bool) -> bool:
    """Whether the hand-written decode loop can drive `model`: a transformers model (or a LoRA-style
    peft wrapper around one) whose forward takes a `cache` and the inputs the loop passes."""
    peft_cfg = getattr(model, "peft_config", None)
    if peft_cfg and any(getattr(c, "is_prompt_learning", False) for c in peft_cfg.values()):
        return False  # prompt tuning / prefix tuning prepend virtual tokens: generate handles those
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    params = inspect.signature(base.forward).parameters
    if _cache_kwarg(model) is None:
        return False
    if seq2seq:
        return "encoder_outputs" in params and "decoder_input_ids" in params and hasattr(base, "get_encoder")
    return "position_ids" in params and "attention_mask" in params


class _Picker:
    """Chooses the next token from raw logits (temperature, then top-p, then torch.multinomial, as the
    warpers of transformers' generate do; argmax when greedy) and returns its raw log-prob.

    Rows that ended are dropped from the model batch, but multinomial still draws over all `n_rows`: with
    one sample per row it is an exponential race over the whole (rows, vocabulary) tensor, whose random
    stream depends on the shape alone, so the live rows get the draws they would get in generate."""

    def __init__(self, temperature: float, top_p: float, greedy: bool, seed: int, device: str, n_rows: int):
        self.greedy, self.n_rows = greedy, n_rows
        self.warpers = LogitsProcessorList()
        if not greedy and temperature != 1.0:
            self.warpers.append(TemperatureLogitsWarper(temperature))
        if not greedy and top_p < 1.0:
            self.warpers.append(TopPLogitsWarper(top_p))
        self.gen = None if greedy else torch.Generator(device=device).manual_seed(seed)
        self.full: torch.Tensor | None = None  # (n_rows, V) probabilities once rows have been dropped

    def __call__(self, logits: torch.Tensor, rows: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Token and raw log-prob for each row of `logits`, which holds the batch rows `rows` (None: all)."""
        logits = logits.float()
        if self.greedy:
            tok = logits.argmax(-1)
        else:
            probs = torch.softmax(self.warpers(None, logits), dim=-1)
            if rows is not None:
                if self.full is None:
                    self.full = probs.new_zeros(self.n_rows, probs.shape[1])
                    self.full[:, 0] = 1.0  # any distribution will do for the rows that ended
                self.full[rows] = probs
                probs = self.full
            tok = torch.multinomial(probs, 1, generator=self.gen).squeeze(1)
            if rows is not None:
                tok = tok[rows]
        lp = logits.gather(1, tok[:, None]).squeeze(1) - torch.logsumexp(logits, -1)
        return tok, lp


# Drop ended rows from the model batch once at most this share of its rows is still decoding.
PRUNE_AT = 0.75


def _run_steps(
    policy: Policy,
    first_logits: torch.Tensor,
    step: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor],
    pick: _Picker,
    max_new_tokens: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The decode loop shared by both model kinds: pick, record, stop rows at EOS (pad after it), feed the
    chosen tokens back through `step(tokens, keep)` until every row has ended or max_new_tokens are drawn.
    `keep` (None: no change) tells `step` which of its batch rows stay, before it runs the model."""
    eos, pad = policy.tokenizer.eos_token_id, policy.tokenizer.pad_token_id
    n = first_logits.shape[0]
    device = first_logits.device
    live = torch.ones(n, dtype=torch.bool, device=device)
    rows: torch.Tensor | None = None  # batch rows the model still runs (None: all of them)
    n_model = n_live = n
    toks: list[torch.Tensor] = []
    lps: list[torch.Tensor] = []
    logits = first_logits
    for t in range(max_new_tokens):
        if t:
            keep = None
            if n_live <= PRUNE_AT * n_model:
                kept = live if rows is None else live[rows]
                keep = kept.nonzero().squeeze(1)
                rows = live.nonzero().squeeze(1)
                n_model = n_live
            last = toks[-1] if rows is None else toks[-1][rows]
            logits = step(last, keep)
        tok_m, lp_m = pick(logits, rows)
        if rows is None:
            tok, lp = tok_m, lp_m
        else:
            tok = torch.full((n,), pad, dtype=tok_m.dtype, device=device).index_copy_(0, rows, tok_m)
            lp = torch.zeros(n, dtype=lp_m.dtype, device=device).index_copy_(0, rows, lp_m)
        tok = torch.where(live, tok, pad)
        toks.append(tok)
        lps.append(torch.where(live, lp, 0.0))
        live &= tok != eos
        n_live = int(live.sum())  # the loop's one device sync per token
        if not n_live:
            break
    return torch.stack(toks, 1), torch.stack(lps, 1)


class _PreallocLayer(DynamicLayer):
    """A DynamicLayer that writes new keys/values into a buffer sized for the whole decode instead of
    concatenating a new tensor at every step (which copies the whole cache each token)."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, capacity: int):
        super().__init__()
        self.lazy_initialization(keys, values)
        self._adopt(keys, values, capacity)

    def _adopt(self, keys: torch.Tensor, values: torch.Tensor, capacity: int) -> None:
        n = keys.shape[-2]
        self._k = keys.new_empty((*keys.shape[:-2], capacity, keys.shape[-1]))
        self._v = values.new_empty((*values.shape[:-2], capacity, values.shape[-1]))
        self._k[..., :n, :] = keys
        self._v[..., :n, :] = values
        self._n = n
        self.keys, self.values = self._k[..., :n, :], self._v[..., :n, :]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        m = key_states.shape[-2]
        if self._n + m > self._k.shape[-2]:  # more tokens than planned: grow
            self._adopt(self.keys, self.values, 2 * (self._n + m))
        self._k[..., self._n : self._n + m, :] = key_states
        self._v[..., self._n : self._n + m, :] = value_states
        self._n += m
        self.keys, self.values = self._k[..., : self._n, :], self._v[..., : self._n, :]
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._k, self._v = self._k[indices], self._v[indices]
        self.keys, self.values = self._k[..., : self._n, :], self._v[..., : self._n, :]

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._k = self._k.repeat_interleave(repeats, dim=0)
        self._v = self._v.repeat_interleave(repeats, dim=0)
        self.keys, self.values = self._k[..., : self._n, :], self._v[..., : self._n, :]

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError("the Grow decode loop never crops its cache")


def _preallocate(cache: object, capacity: int) -> None:
    """Swap each plain DynamicLayer of a (self-attention) cache for a _PreallocLayer of `capacity`
    positions; other layer kinds (sliding window, linear attention) are left as they are."""
    cache = getattr(cache, "self_attention_cache", cache)
    layers = getattr(cache, "layers", None)
    if not isinstance(layers, list):
        return
    for i, layer in enumerate(layers):
        if (
            type(layer) is DynamicLayer
            and layer.is_initialized
            and layer.keys is not None
            and layer.keys.numel()
        ):
            layers[i] = _PreallocLayer(layer.keys, layer.values, max(capacity, layer.keys.shape[-2]))


def _cache_kwarg(model: torch.nn.Module) -> str | None:
    """The forward's name for the KV cache: `cache` (transformers >= 5.2x), `past_key_values` before."""
    for name in ("cache", "past_key_values"):
        if _takes(model, name):
            return name
    return None


def _cache_of(out) -> object:
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def _takes(model: torch.nn.Module, name: str) -> bool:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return name in inspect.signature(base.forward).parameters


def _decoder_loop(
    policy: Policy,
    prompts: list[list[int]],
    k: int,
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    greedy: bool,
    seed: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decoder-only: prefill the B left-padded prompts once, repeat the KV cache K times, decode."""
    model, device, pad = policy.model, policy.device, policy.tokenizer.pad_token_id
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=device)
    attn = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    # Positions count real tokens only, as generate computes them for left padding.
    pos = (attn.cumsum(-1) - 1).masked_fill(attn == 0, 0)
    padded = not bool(attn.all())  # no padding: no mask at all, the model's fastest path
    extra = {"logits_to_keep": 1} if _takes(model, "logits_to_keep") else {}
    pick = _Picker(temperature, top_p, greedy, seed, device, len(prompts) * k)
    cache_kw = _cache_kwarg(model)
    with autocast(device):
        out = model(
            input_ids=ids, attention_mask=attn if padded else None, position_ids=pos, use_cache=True, **extra
        )
    cache, first = _cache_of(out), out.logits[:, -1].float()
    del out
    _preallocate(cache, width + max_new_tokens)
    if k > 1:
        cache.batch_repeat_interleave(k)
        first, attn = first.repeat_interleave(k, 0), attn.repeat_interleave(k, 0)
        pos = pos.repeat_interleave(k, 0)
    # The mask grows by one column per step: written into a buffer rather than concatenated.
    mask_buf = torch.ones((attn.shape[0], width + max_new_tokens), dtype=attn.dtype, device=device)
    mask_buf[:, :width] = attn
    state = {"mask": mask_buf, "pos": pos[:, -1:], "len": width}

    def step(tok: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        if keep is not None:
            cache.batch_select_indices(keep)
            state["mask"], state["pos"] = state["mask"][keep], state["pos"][keep]
        state["pos"] = state["pos"] + 1
        state["len"] += 1
        mask = state["mask"][:, : state["len"]] if padded else None
        with autocast(device):
            o = model(
                input_ids=tok[:, None],
                attention_mask=mask,
                position_ids=state["pos"],
                **{cache_kw: cache},
                use_cache=True,
            )
        return o.logits[:, -1]

    return _run_steps(policy, first, step, pick, max_new_tokens)


def _decoder_start(model: torch.nn.Module) -> int:
    for cfg in (getattr(model, "generation_config", None), model.config):
        for name in ("decoder_start_token_id", "bos_token_id", "pad_token_id"):
            v = getattr(cfg, name, None) if cfg is not None else None
            if v is not None:
                return int(v)
    raise ValueError("encoder-decoder policy has no decoder_start_token_id, bos_token_id or pad_token_id")


def _seq2seq_loop(
    policy: Policy,
    prompts: list[list[int]],
    k: int,
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    greedy: bool,
    seed: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Encoder-decoder: encode the B right-padded prompts and take the first decoder step once, then repeat
    the encoder states and the self/cross-attention cache K times and decode."""
    model, device, pad = policy.model, policy.device, policy.tokenizer.pad_token_id
    width = max(len(p) for p in prompts)
    ids = torch.tensor([p + [pad] * (width - len(p)) for p in prompts], device=device)
    attn = torch.tensor([[1] * len(p) + [0] * (width - len(p)) for p in prompts], device=device)
    start = torch.full((len(prompts), 1), _decoder_start(model), device=device)
    pick = _Picker(temperature, top_p, greedy, seed, device, len(prompts) * k)
    cache_kw = _cache_kwarg(model)
    with autocast(device):
        enc = model.get_encoder()(input_ids=ids, attention_mask=attn, return_dict=True)
        out = model(encoder_outputs=enc, attention_mask=attn, decoder_input_ids=start, use_cache=True)
    cache, first, hidden = _cache_of(out), out.logits[:, -1].float(), enc.last_hidden_state
    del out, enc
    _preallocate(cache, 1 + max_new_tokens)
    if k > 1:
        cache.batch_repeat_interleave(k)
        first, attn = first.repeat_interleave(k, 0), attn.repeat_interleave(k, 0)
        hidden = hidden.repeat_interleave(k, 0)
    state = {"hidden": hidden, "attn": attn}

    def step(tok: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        if keep is not None:
            cache.batch_select_indices(keep)
            state["hidden"], state["attn"] = state["hidden"][keep], state["attn"][keep]
        with autocast(device):
            o = model(
                encoder_outputs=BaseModelOutput(last_hidden_state=state["hidden"]),
                attention_mask=state["attn"],
                decoder_input_ids=tok[:, None],
                **{cache_kw: cache},
                use_cache=True,
            )
        return o.logits[:, -1]

    return _run_steps(policy, first, step, pick, max_new_tokens)


class _ChosenLogprob(LogitsProcessor):
    """The raw log-prob of each token generate draws. A forward hook on the model keeps the log-softmax of
    each step's raw logits (what the model returned, before any logits processor of generate or of the
    checkpoint's generation_config); as a logits processor it learns, at the next step, which token was
    drawn (the last column of input_ids) and keeps that token's log-prob. Holds at most two (rows,
    vocabulary) steps at a time."""

    def __init__(self) -> None:
        self.raw: list[torch.Tensor] = []  # log-softmax of steps whose drawn token is not known yet
        self.lps: list[torch.Tensor] = []

    def hook(self, module: torch.nn.Module, args: tuple, output) -> None:
        logits = output.logits if hasattr(output, "logits") else output[0]
        self.raw.append(torch.log_softmax(logits[:, -1].float(), dim=-1))

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if len(self.raw) > 1:  # the step before this one: its token is input_ids' last column
            self._take(input_ids[:, -1])
        return scores

    def _take(self, chosen: torch.Tensor) -> None:
        self.lps.append(self.raw.pop(0).gather(1, chosen[:, None]).squeeze(1))

    def finish(self, new: torch.Tensor) -> torch.Tensor:
        self._take(new[:, -1])
        return torch.stack(self.lps, 1)


@contextlib.contextmanager
def _removing(handle):
    try:
        yield
    finally:
        handle.remove()


def _generate_batch(
    policy: Policy,
    prompts: list[list[int]],
    k: int,
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    greedy: bool,
    seed: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The same batch through model.generate, for models the own loop cannot drive and checkpoints whose
    generation_config constrains the next token; the recorder takes each drawn token's log-prob from the
    raw logits, whatever processors generate applies."""
    tok, device, model = policy.tokenizer, policy.device, policy.model
    width = max(len(p) for p in prompts)
    pad = tok.pad_token_id
    if policy.is_seq2seq:
        rows = [(p + [pad] * (width - len(p)), [1] * len(p) + [0] * (width - len(p))) for p in prompts]
    else:
        rows = [([pad] * (width - len(p)) + p, [0] * (width - len(p)) + [1] * len(p)) for p in prompts]
    input_ids = torch.tensor([r[0] for r in rows], device=device)
    attn = torch.tensor([r[1] for r in rows], device=device)
    rec = _ChosenLogprob()
    procs = LogitsProcessorList([rec])
    # On the transformers model itself: a peft wrapper's generate calls the wrapped model's forward.
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    handle = inner.register_forward_hook(rec.hook)
    if not greedy and temperature != 1.0:
        procs.append(TemperatureLogitsWarper(temperature))
    if not greedy and top_p < 1.0:
        procs.append(TopPLogitsWarper(top_p))
    # generate samples from the global generator: seed it inside a fork, so the caller's state is kept.
    with torch.random.fork_rng(devices=[] if device == "cpu" else None):
        torch.manual_seed(seed)
        with autocast(device), _removing(handle):
            seq = model.generate(
                input_ids=input_ids,
                attention_mask=attn,
                max_new_tokens=max_new_tokens,
                num_return_sequences=k,
                pad_token_id=pad,
                eos_token_id=tok.eos_token_id,
                do_sample=not greedy,
                temperature=1.0,
                top_p=1.0,
                top_k=0,
                logits_processor=procs,
                use_cache=True,
            )
    new = seq[:, 1:] if policy.is_seq2seq else seq[:, width:]
    return new, rec.finish(new)
