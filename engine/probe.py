"""Check a campaign's models before anything trains: the policy directory, the reward and each audit metric.

`check_models(cfg, pairs)` raises ConfigError naming the field (`policy.path`, `policy.chat_template`,
`reward.function`, `audit[0].path`, ...) when the policy directory is missing, its config.json is unreadable
by transformers' AutoConfig or names no causal or encoder-decoder language model, policy.chat_template is on
and its tokenizer has no chat template, or a reward does not load, or does not return one finite score in
[0, 1] per candidate on a probe batch of validation (source, reference, reference) triples.

Loading a reward imports user code or model weights, so the probe runs in a short child process
(`python -m engine.probe`, config and pairs as JSON on stdin, one JSON line on stdout on failure), from the
folder the worker runs in so a module imports the same way there as in training. Only the built-in verifiers
with no policy directory, which import nothing and load nothing, are checked in the calling process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from .config import CampaignConfig, ConfigError, RewardConfig, config_to_dict

PROBE_PAIRS = 8  # validation triples each reward scores
PROBE_TIMEOUT_S = 600  # a large reward model on a slow disk; a longer probe is reported, not waited on
VERIFIER_KINDS = ("exact_match", "numeric", "chrf")


class ProbeFailed(Exception):
    """A model check failed: `field` and `value` for ConfigError, `why` the one-line reason."""

    def __init__(self, field: str, value: Any, why: str):
        self.field, self.value, self.why = field, value, why
        super().__init__(f"{field} = {value!r}: {why}")


def _reason(e: BaseException) -> str:
    """One line: the error text without the spec prefix a RewardError carries, and the cause's type."""
    text = " ".join(str(e).split()) or type(e).__name__
    if text.startswith("reward function ") and "': " in text:
        text = text.split("': ", 1)[1]
    cause = e.__cause__ or e.__context__
    kind = type(cause if cause is not None else e).__name__
    if kind in ("RewardError", "ConfigError"):
        return text
    return f"{text} ({kind})"


def _provider_field(table: str, rc: RewardConfig) -> tuple[str, Any]:
    """The field a provider's load failure is about: the function of a callable, the directory of a model,
    else the kind."""
    if rc.kind == "callable":
        return f"{table}.function", rc.function
    if rc.kind in ("hf", "minilm"):
        return f"{table}.path", rc.path
    return f"{table}.kind", rc.kind


def check_policy(path: str, chat_template: bool = False) -> None:
    """ProbeFailed unless `path` is a directory with a config.json that AutoConfig reads, of a model
    load_policy loads (a causal LM, or an encoder-decoder LM when is_encoder_decoder), and, with
    `chat_template`, a tokenizer that has a chat template."""
    p = Path(path)
    if not p.is_dir():
        why = "not a directory" if p.exists() else "no such directory"
        raise ProbeFailed("policy.path", path, why)
    if not (p / "config.json").is_file():
        raise ProbeFailed("policy.path", path, "no config.json in it (not a transformers model directory)")
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(str(p), local_files_only=True)
    except Exception as e:  # anything transformers raises on a bad config.json is this field's fault
        raise ProbeFailed("policy.path", path, f"AutoConfig cannot read its config.json: {_reason(e)}") from e
    from transformers import MODEL_FOR_CAUSAL_LM_MAPPING, MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING

    seq2seq = bool(getattr(config, "is_encoder_decoder", False))
    mapping = MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING if seq2seq else MODEL_FOR_CAUSAL_LM_MAPPING
    if type(config) not in mapping:
        kind = "encoder-decoder" if seq2seq else "causal"
        raise ProbeFailed(
            "policy.path",
            path,
            f"its config ({type(config).__name__}) names no {kind} language model transformers can load",
        )
    if chat_template:
        from transformers import AutoTokenizer

        try:
            tok = AutoTokenizer.from_pretrained(str(p), local_files_only=True, trust_remote_code=False)
        except Exception as e:
            raise ProbeFailed("policy.path", path, f"its tokenizer does not load: {_reason(e)}") from e
        if not getattr(tok, "chat_template", None):
            raise ProbeFailed(
                "policy.chat_template", True, f"the tokenizer in {path} has no chat template (turn it off)"
            )


def check_reward(table: str, rc: RewardConfig, pairs: list[tuple[str, str]]) -> None:
    """ProbeFailed unless the reward loads and scores `pairs` as (source, reference, reference)."""
    from .rewards import checked_scores, load_reward

    field, value = _provider_field(table, rc)
    try:
        reward = load_reward(rc)
    except Exception as e:  # user code and model loading fail with anything; all of it is the field's fault
        why = _reason(e)
        raise ProbeFailed(field, value, why if why.startswith("cannot") else f"cannot load: {why}") from e
    if not pairs:
        return
    sources = [s for s, _ in pairs]
    refs = [r for _, r in pairs]
    try:
        scores = checked_scores(reward, sources, refs, refs)
    except Exception as e:
        raise ProbeFailed(
            field, value, f"fails on {len(pairs)} validation (source, reference) pairs: {_reason(e)}"
        ) from e
    if len(scores) != len(pairs):  # checked_scores already refuses this; kept as the contract's statement
        raise ProbeFailed(field, value, f"returned {len(scores)} scores for {len(pairs)} candidates")


def run_checks(cfg: CampaignConfig, pairs: list[tuple[str, str]]) -> None:
    """All checks in this process (the child's body); ProbeFailed on the first failure."""
    if cfg.policy.path:
        check_policy(cfg.policy.path, cfg.policy.chat_template)
    check_reward("reward", cfg.reward, pairs)
    for i, a in enumerate(cfg.audit):
        check_reward(f"audit[{i}]", a.reward_config(), pairs)


def _needs_child(cfg: CampaignConfig) -> bool:
    kinds = [cfg.reward.kind, *(a.kind for a in cfg.audit)]
    return bool(cfg.policy.path) or any(k not in VERIFIER_KINDS for k in kinds)


def check_models(cfg: CampaignConfig, pairs: list[tuple[str, str]], timeout: float = PROBE_TIMEOUT_S) -> None:
    """Raise ConfigError naming the field when the policy, the reward or an audit metric would fail the
    campaign; `pairs` are up to PROBE_PAIRS validation (source, reference) pairs."""
    pairs = [(str(s), str(r)) for s, r in pairs[:PROBE_PAIRS]]
    if not _needs_child(cfg):
        try:
            run_checks(cfg, pairs)
        except ProbeFailed as e:
            raise ConfigError(e.field, e.value, e.why) from None
        return
    import os

    payload = json.dumps({"config": config_to_dict(cfg), "pairs": pairs})
    env = os.environ | {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "engine.probe"],
            input=payload,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd=str(Path(__file__).resolve().parent.parent),  # where the worker runs
        )
    except subprocess.TimeoutExpired:
        field, value = _provider_field("reward", cfg.reward)
        raise ConfigError(field, value, f"the model check did not finish in {timeout:.0f} s") from None
    if proc.returncode == 0:
        return
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if lines:
        r = json.loads(lines[-1])
        raise ConfigError(r["field"], r["value"], r["why"])
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    field, value = _provider_field("reward", cfg.reward)
    raise ConfigError(field, value, f"the model check exited {proc.returncode}: {tail}")


def main() -> int:
    from .config import config_from_dict

    req = json.loads(sys.stdin.read())
    try:
        run_checks(config_from_dict(req["config"]), [tuple(p) for p in req["pairs"]])
    except ProbeFailed as e:
        print(json.dumps({"field": e.field, "value": e.value, "why": e.why}), flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
