"""Reward-model unit tests over real providers: a length reward and a bag-of-words reward fail what they
should, chrF passes the repetition/permutation/filler tests, user tests load, runs round-trip the store.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import pytest

from engine.config import RewardConfig
from engine.rewards import ChrF, load_reward
from engine.store.core import CoreStore
from engine.store.reward_tests import RewardTestsMixin
from reward_tests import RewardTest, default_suite, load_user_tests, run_suite
from reward_tests import perturbations as P
from reward_tests.cli import main
from reward_tests.expectations import ZERO_STD_UNIT
from reward_tests.report import render, to_dict
from reward_tests.suite import merge, select

# Multi-sentence English outputs with numbers and names: every default perturbation applies to each.
REFS = [
    ("Die Katze schläft.", "The cat sleeps on the warm sofa. The dog barks at the postman every morning."),
    (
        "Maria kaufte 3 Äpfel.",
        "Maria bought 3 apples at the market. She gave two of them to Peter. The last one went into a pie.",
    ),
    (
        "Der Zug fährt um 7.",
        "The train leaves at 7 o'clock. We should arrive in Lyon before noon. Please bring your passport.",
    ),
    (
        "12 Ingenieure.",
        "Our company hired 12 new engineers this year. Most of them work on the search team. "
        "Hiring will slow down next spring.",
    ),
    (
        "Regen in Oslo.",
        "It rained all weekend in Oslo. The children stayed inside and painted pictures. "
        "On Monday the sun came back.",
    ),
    (
        "Ägypten.",
        "The museum opened a new exhibition about ancient Egypt. "
        "Visitors can see 40 statues and a golden mask. Tickets cost 15 euros.",
    ),
    (
        "Tomaten.",
        "My grandmother grows tomatoes in her garden. Every summer she makes sauce for the whole family. "
        "Nobody makes it better.",
    ),
    (
        "Donnerstag.",
        "The meeting was moved to Thursday afternoon. Anna will present the budget. "
        "Everyone should read the report beforehand.",
    ),
    (
        "Ein Boot.",
        "A small boat crossed the lake at dawn. The fisherman caught nothing for hours. "
        "Then a large trout took his bait.",
    ),
    (
        "Bibliothek.",
        "The library closes at 9 pm on weekdays. On Sundays it stays closed. "
        "Students often complain about these hours.",
    ),
    (
        "Fahrrad.",
        "Paul repaired the old bicycle in his garage. He replaced both tires and the chain. "
        "Now he rides it to work.",
    ),
    (
        "Rezept.",
        "The recipe needs 250 grams of flour and two eggs. Mix them slowly with warm milk. "
        "Bake the dough for 30 minutes.",
    ),
    (
        "Hochwasser.",
        "The river flooded the lower town last April. Several families lost their homes. "
        "The city built a new wall afterwards.",
    ),
    (
        "Klavier.",
        "Our neighbour plays the piano every evening. Sometimes he practises until midnight. "
        "We do not mind the music.",
    ),
    (
        "Sofia.",
        "The doctor told Sofia to rest for a week. She read three novels in bed. "
        "By Friday she felt much better.",
    ),
    (
        "Tokio 2019.",
        "Tokyo hosted the conference in 2019. More than 5000 scientists attended. "
        "The next one will take place in Nairobi.",
    ),
    (
        "Bäckerei.",
        "The bakery on the corner sells fresh bread. Its croissants are famous in the whole district. "
        "People queue early.",
    ),
    (
        "Eiche.",
        "Lena planted an oak tree when her son was born. Today the tree is taller than the house. "
        "The boy climbs it every day.",
    ),
    (
        "Sturm.",
        "The storm knocked out the power for six hours. We cooked dinner on a camping stove. "
        "The candles made it feel cosy.",
    ),
    (
        "Finale.",
        "Our team won the final by two goals. The captain scored in the last minute. "
        "The fans celebrated until dawn.",
    ),
]
PAIRS = [(str(i), src, ref, ref) for i, (src, ref) in enumerate(REFS)]

REWARDS_PY = '''
import re
from collections import Counter

def length(sources, candidates):
    """Rewards length only (saturating at 500 characters): the classic reward hack."""
    return [min(1.0, len(c) / 500) for c in candidates]

def bag_of_words(sources, candidates, references):
    """Unigram-overlap F1 with the reference, blind to word order."""
    out = []
    for c, r in zip(candidates, references):
        cw, rw = Counter(re.findall(r"\\w+", c.lower())), Counter(re.findall(r"\\w+", r.lower()))
        m = sum((cw & rw).values())
        out.append(0.0 if m == 0 else 2 * m / (sum(cw.values()) + sum(rw.values())))
    return out
'''


@pytest.fixture
def reward_mod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A module of callable rewards on sys.path, named uniquely so other tests' modules do not collide."""
    (tmp_path / "rt_rewards.py").write_text(REWARDS_PY)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "rt_rewards", raising=False)
    return "rt_rewards"


def _verdicts(report) -> dict[str, str]:
    return {r.name: r.verdict for r in report.results}


def test_perturbations_change_the_text_and_say_when_they_do_not_apply():
    rng = random.Random(0)
    src, cand = REFS[1]
    for name, fn in P.ALL.items():
        out = fn(src, cand, rng)
        assert isinstance(out, str) and out != cand, name
    one = "the old dog sees a big cat"  # a toy-mt output: one sentence, no clauses, no numbers
    assert P.permute_sentences("x", one, rng) is None
    assert P.repeat_sentence("x", one, rng).count(" ") > one.count(" ")
    assert P.sentences(cand) == [
        "Maria bought 3 apples at the market.",
        "She gave two of them to Peter.",
        "The last one went into a pie.",
    ]
    assert P.punctuation("x", "Is it?", rng) is None and P.punctuation("x", "done.", rng) == "done"
    assert P.typo("x", "a an the", rng) is None and P.truncate_half("x", "word", rng) is None
    assert P.empty_output("x", "", rng) is None and P.copy_source("same", "same", rng) is None
    swapped = P.swap_number_or_name("x", "Ann has 12 apples", rng)
    assert swapped != "Ann has 12 apples" and swapped.startswith("Ann has ") and swapped[8:10].isdigit()
    assert P.swap_number_or_name("x", "He met Bob and Eve.", rng) in (
        "He met Eve and Eve.",
        "He met Bob and Bob.",
    )
    assert set(P.shuffle_words("x", one, rng).split()) == set(one.split())


def test_length_reward_fails_repetition_and_filler(reward_mod):
    reward = load_reward(RewardConfig(kind="callable", function=f"{reward_mod}:length"))
    report = run_suite(reward, PAIRS, default_suite())
    v = _verdicts(report)
    assert v["repeat_output"] == v["repeat_sentence"] == v["append_filler"] == "fail"
    assert v["truncate_half"] == v["empty_output"] == "pass"  # shorter is still worse for it
    assert report.verdict == "fail" and report.std == pytest.approx(report.std_measured)
    res = {r.name: r for r in report.results}["repeat_output"]
    assert res.pass_rate == 0 and res.worst_delta > 0 and len(res.worst_examples) == 3
    ex = res.worst_examples[0]
    assert (
        ex["reward_perturbed"] - ex["reward_original"]
        == pytest.approx(ex["delta"])
        == pytest.approx(res.worst_delta)
    )


def test_bag_of_words_reward_fails_the_word_order_test(reward_mod):
    reward = load_reward(RewardConfig(kind="callable", function=f"{reward_mod}:bag_of_words"))
    assert reward.needs_reference
    report = run_suite(reward, PAIRS, default_suite())
    v = _verdicts(report)
    res = {r.name: r for r in report.results}
    assert (
        v["shuffle_words"] == "fail" and res["shuffle_words"].mean_delta == 0
    )  # order-blind: no change at all
    assert res["permute_sentences"].mean_delta == 0  # passes not_rise only because it cannot see order
    assert v["repeat_output"] == v["truncate_half"] == v["copy_source"] == "pass"


def test_chrf_passes_repetition_permutation_and_filler():
    report = run_suite(ChrF(), PAIRS, default_suite())
    v = _verdicts(report)
    honest_passes = [
        "repeat_output",
        "repeat_sentence",
        "shuffle_words",
        "permute_sentences",
        "truncate_half",
        "append_filler",
        "empty_output",
        "copy_source",
        "swap_number_or_name",
    ]
    assert all(v[name] == "pass" for name in honest_passes), v
    assert all(r.n == len(PAIRS) for r in report.results)
    # chrF scores every reference 1.0: a constant reward has no std, so the unit is the absolute
    # ZERO_STD_UNIT, and a typo's small chrF cost is within the invariance tolerance.
    assert report.std_measured == 0 and report.std == pytest.approx(ZERO_STD_UNIT)
    assert v["typo"] == v["punctuation"] == "pass"
    # A unit at the old floor makes any measurable change count: chrF then fails the invariance tests.
    strict = run_suite(ChrF(), PAIRS, default_suite(), std=1e-3)
    assert _verdicts(strict)["typo"] == _verdicts(strict)["punctuation"] == "fail"
    d = json.loads(json.dumps(to_dict(strict)))
    assert d["verdict"] == "fail" and d["failed"] == ["typo", "punctuation"] and len(d["tests"]) == 11
    assert run_suite(ChrF(), PAIRS, default_suite()).verdict == "pass"


def test_user_tests_are_discovered_from_a_file(tmp_path: Path):
    f = tmp_path / "my_reward_tests.py"
    f.write_text(
        "from reward_tests import RewardTest, reward_test\n\n"
        "@reward_test(expect='fall', tol=0.5)\n"
        "def drop_last_sentence(source, candidate, rng):\n"
        "    '''The last sentence removed.'''\n"
        "    parts = candidate.split('. ')\n"
        "    return '. '.join(parts[:-1]) + '.' if len(parts) > 1 else None\n\n"
        "def shout(source, candidate, rng):\n"
        "    return candidate.upper()\n\n"
        "TESTS = [RewardTest('shout', shout, expect='fall', tol=1.0)]\n"
    )
    tests = load_user_tests(str(f))
    assert [t.name for t in tests] == ["drop_last_sentence", "shout"]
    assert (
        tests[0].expect == "fall"
        and tests[0].tol == 0.5
        and tests[0].description == "The last sentence removed."
    )
    suite = select(merge(default_suite(), tests), only=["drop_last_sentence", "shout", "typo"])
    report = run_suite(ChrF(), PAIRS, suite, std=1e-3)
    assert _verdicts(report) == {"typo": "fail", "drop_last_sentence": "pass", "shout": "pass"}
    with pytest.raises(ValueError, match="unknown reward tests"):
        select(suite, skip=["nope"])
    with pytest.raises(ValueError, match="expect='up'"):
        RewardTest("x", P.typo, expect="up")


class S(RewardTestsMixin, CoreStore):
    pass


def test_store_round_trip(tmp_path: Path):
    report = run_suite(ChrF(), PAIRS[:5], default_suite(), seed=3, std=1e-3)  # a unit where two fail
    store = S(tmp_path / "rt.duckdb")
    run_id = store.save_reward_test_run(report)
    runs = store.reward_test_runs(ChrF().version)
    assert [r["run_id"] for r in runs] == [run_id] and store.reward_test_runs("other") == []
    run = store.latest_reward_test_run(ChrF().version)
    assert (
        run["verdict"] == "fail"
        and run["n_tests"] == 11
        and run["n_failed"] == 2
        and run["config"]["seed"] == 3
    )
    rows = store.reward_test_results(run_id)
    assert [r["test"] for r in rows] == [r.name for r in report.results]
    typo = rows[[r["test"] for r in rows].index("typo")]
    assert (
        typo["passed"] is False
        and typo["worst_examples"][0]["perturbed"] == report.results[8].worst_examples[0]["perturbed"]
    )
    store.close()


def test_cli_exit_codes_and_recorded_runs(tmp_path: Path, reward_mod, capsys):
    data = tmp_path / "refs.jsonl"
    data.write_text("".join(json.dumps({"source": s, "reference": r}) + "\n" for s, r in REFS))
    db = tmp_path / "cli.duckdb"
    assert (
        main(
            [
                "--reward",
                "callable",
                "--function",
                f"{reward_mod}:length",
                "--data",
                str(data),
                "--db",
                str(db),
            ]
        )
        == 1
    )
    assert "FAIL" in capsys.readouterr().out
    ok = ["--reward", "chrf", "--data", str(data), "--skip", "typo,punctuation", "--db", str(db), "--json"]
    assert main(ok) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["verdict"] == "pass" and len(out["tests"]) == 9 and out["run_id"].startswith("rt-")
    assert main(["--reward", "chrf", "--data", str(tmp_path / "missing.jsonl")]) == 2
    store = S(db)
    assert [r["verdict"] for r in store.reward_test_runs()] == ["pass", "fail"]
    assert store.latest_reward_test_run(ChrF().version)["run_id"] == out["run_id"]
    store.close()


def test_cli_draws_samples_from_a_campaign(tmp_path: Path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    db = tmp_path / "camp.duckdb"
    store = S(db)
    store.create_campaign("c1", "c1", "rest", {}, str(tmp_path))
    store.add_prompts("c1", "train", [(str(i), s, r) for i, (s, r) in enumerate(REFS)])
    for g in (1, 2):  # grow 1 holds garbage; only the latest Grow step is drawn
        texts = [r if g == 2 else "zzz" for _, r in REFS for _ in range(2)]
        shard = pa.table(
            {
                "grow": [g] * len(texts),
                "source_id": [str(i // 2) for i in range(len(texts))],
                "sample_idx": [i % 2 for i in range(len(texts))],
                "text": texts,
                "n_tokens": [1] * len(texts),
                "sum_logprob": [0.0] * len(texts),
                "policy": ["p"] * len(texts),
                "reward": [0.9, 0.1] * len(REFS),
                "reward_version": ["v"] * len(texts),
            }
        )
        pq.write_table(shard, tmp_path / f"g{g}.parquet")
        store.ingest_shard("c1", "samples", f"g{g}", tmp_path / f"g{g}.parquet")
    pairs = store.reward_test_pairs("c1", 10, seed=1)
    assert (
        len(pairs) == 10
        and all(text != "zzz" for _, _, text, _ in pairs)
        and pairs == store.reward_test_pairs("c1", 10, seed=1)
    )
    good = store.reward_test_pairs("c1", 40, seed=1, min_reward=0.5)  # sample_idx 0 holds the 0.9 rewards
    assert len(good) == len(REFS) and all(sid.endswith("/0") for sid, *_ in good)
    store.close()
    args = [
        "--reward",
        "chrf",
        "--campaign",
        "c1",
        "--n",
        "12",
        "--db",
        str(db),
        "--only",
        "repeat_output,empty_output",
    ]
    assert main(args) == 0
    assert "12 pairs" in capsys.readouterr().out
    store = S(db)
    assert store.reward_test_runs()[0]["n_pairs"] == 12
    store.close()


def test_minilm_demo_reward_report(tmp_path: Path):
    """Reports (does not judge) the toy-mt MiniLM reward; the full-size findings are in
    reward_tests/README.md."""
    from rich.console import Console

    from engine.recipes.toy_mt import make_splits, train_reward_head

    splits = make_splits(seed=11, n_train=200, n_val=60, n_test=0)
    head = train_reward_head(splits["train"], tmp_path / "reward_head", n=600)
    reward = load_reward(RewardConfig(kind="minilm", path=str(head)))
    pairs = [(ex.id, ex.source, ex.reference, ex.reference) for ex in splits["validation"]]
    report = run_suite(reward, pairs, default_suite())
    render(report, Console(width=120))
    # Toy outputs are single clause-free sentences: sentence permutation has nothing to reorder.
    assert {r.name for r in report.results if r.n == 0} == {"permute_sentences"}
    assert all(r.n == len(pairs) for r in report.results if r.name != "permute_sentences")
    assert report.reward_version == reward.version and report.verdict in ("pass", "fail")
