"""Human ratings on a real DuckDB file: task building, serving, submission rules, and the statistics
(human eval diff, Krippendorff's alpha, reward-human correlation) against hand-computed and scipy values.
Blinding (random sides and display orders), gate tasks and the simulated annotator: tests/test_blinding.py.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy import stats as sps

import engine.store
from engine import ratings as hr
from engine.cli.governance import register as add_parsers
from engine.steps.grow import SAMPLE_SCHEMA
from engine.store.core import CoreStore
from engine.store.drift import DriftMixin
from engine.store.ratings import RatingsMixin

CID = "camp"
SOURCES = [f"s{i}" for i in range(12)]
POLICY = {1: "base", 2: "g1-i1"}


class S(RatingsMixin, DriftMixin, CoreStore):
    pass


def _reward(g: int, i: int, k: int) -> float:
    return round(0.1 * g + 0.05 * k + 0.01 * i, 4)


def _side(task: dict, policy: str) -> str:
    """'a' or 'b': the stored side of `policy` in a task (drawn at random when the task was made)."""
    assert policy in (task["policy_a"], task["policy_b"])
    return "a" if task["policy_a"] == policy else "b"


def _by_policy(task: dict) -> dict[str, tuple]:
    """policy -> (text, grow, sample_idx) of its side of the task."""
    return {
        task["policy_a"]: (task["text_a"], task["grow_a"], task["sample_idx_a"]),
        task["policy_b"]: (task["text_b"], task["grow"], task["sample_idx_b"]),
    }


@pytest.fixture
def store(tmp_path: Path) -> S:
    s = S(tmp_path / "r.duckdb")
    s.create_campaign(CID, "ratings", "rest", {}, str(tmp_path))
    s.add_prompts(CID, "train", [(sid, f"source {sid}", f"reference {sid}") for sid in SOURCES])
    for g, pol in POLICY.items():
        rows = [
            dict(
                grow=g,
                source_id=sid,
                sample_idx=k,
                text=f"{pol} says {sid}/{k}",
                n_tokens=4,
                sum_logprob=-3.0,
                policy=pol,
                reward=_reward(g, i, k),
                reward_version="v",
            )
            for i, sid in enumerate(SOURCES)
            for k in range(3)
        ]
        rows += [
            dict(
                grow=g,
                source_id=sid,
                sample_idx=-1,
                text=f"reference {sid}",
                n_tokens=None,
                sum_logprob=None,
                policy="reference",
                reward=1.0,
                reward_version="v",
            )
            for sid in SOURCES
        ]
        pq.write_table(pa.Table.from_pylist(rows, schema=SAMPLE_SCHEMA), tmp_path / f"g{g}.parquet")
        s.ingest_shard(CID, "samples", f"g{g}", tmp_path / f"g{g}.parquet")
    return s


# ---------------------------------------------------------------- tasks


def test_tasks_pair_samples_of_the_same_source_and_are_seeded(store: S):
    out = store.create_rating_tasks(CID, "base", "g1-i1", n=5, required_ratings=2, seed=7)
    assert out["n_tasks"] == 5 and out["batch"] == "b1"
    tasks = store.rating_tasks(CID)
    for t in tasks:
        side = _by_policy(t)
        assert set(side) == {"base", "g1-i1"} and t["baseline"] == "base" and t["split"] == "train"
        assert side["base"][0].startswith(f"base says {t['source_id']}/") and side["g1-i1"][0].startswith(
            f"g1-i1 says {t['source_id']}/"
        )
        assert t["source"] == f"source {t['source_id']}" and side["base"][1] == 1 and side["g1-i1"][1] == 2
    # The same seed on the same data picks the same sources and samples (whichever side each lands on).
    first = [(t["source_id"], _by_policy(t)) for t in tasks]
    store.cursor().execute("DELETE FROM rating_tasks")
    store.create_rating_tasks(CID, "base", "g1-i1", n=5, required_ratings=2, seed=7)
    assert [(t["source_id"], _by_policy(t)) for t in store.rating_tasks(CID)] == first
    # A second batch takes only new sources, and stops when none are left (the pair named either way round).
    more = store.create_rating_tasks(CID, "base", "g1-i1", n=100, required_ratings=2, seed=1)
    assert more["n_tasks"] == len(SOURCES) - 5 and more["batch"] == "b2"
    assert len({t["source_id"] for t in store.rating_tasks(CID)}) == len(SOURCES)
    assert store.create_rating_tasks(CID, "base", "g1-i1", n=3, seed=2)["n_tasks"] == 0
    assert store.create_rating_tasks(CID, "g1-i1", "base", n=3, seed=2)["n_tasks"] == 0


def test_reference_side_and_unknown_policy(store: S):
    store.create_rating_tasks(CID, "reference", "g1-i1", n=3, seed=0)
    for t in store.rating_tasks(CID):
        # The reference takes the Grow step of the sample it is paired with (its row mixed into D_g).
        assert _by_policy(t)["reference"] == (f"reference {t['source_id']}", 2, -1)
    with pytest.raises(ValueError, match=r"policy 'g9-i9' has no samples.*\['base', 'g1-i1'\]"):
        store.create_rating_tasks(CID, "base", "g9-i9", n=3)
    with pytest.raises(ValueError, match="compares two policies"):
        store.create_rating_tasks(CID, "base", "base", n=3)


def test_annotator_never_gets_a_task_twice_and_complete_tasks_are_not_served(store: S):
    store.create_rating_tasks(CID, "base", "g1-i1", n=3, required_ratings=2, seed=0)
    seen: dict[str, list[int]] = {}
    for ann in ("ann", "bob"):
        while (t := store.next_task(ann, CID)) is not None:
            seen.setdefault(ann, []).append(t["task_id"])
            store.submit_rating(t["task_id"], ann, 3, 4, t["shown_order"])
            assert len(seen[ann]) <= 3, "served a task twice"
    assert sorted(seen["ann"]) == sorted(seen["bob"]) and len(set(seen["ann"])) == 3
    assert store.next_task("carol", CID) is None  # every task has its 2 distinct annotators
    assert store.next_task("carol") is None  # across campaigns too
    assert store.progress(CID) == {
        "tasks": 3,
        "complete": 3,
        "partial": 0,
        "unrated": 0,
        "ratings": 6,
        "annotators": 2,
        "simulated": 0,
    }


def test_shown_order_is_per_annotator_and_stored(store: S):
    store.create_rating_tasks(CID, "base", "g1-i1", n=1, required_ratings=50, seed=0)
    (task,) = store.rating_tasks(CID)
    served = {f"a{i}": store.next_task(f"a{i}", CID) for i in range(40)}
    orders = {a: t["shown_order"] for a, t in served.items()}
    assert set(orders.values()) == {"ab", "ba"}  # a coin per annotator, not one order for all
    ann = next(a for a, o in orders.items() if o == "ba")
    t = store.next_task(ann, CID)
    assert t["shown_order"] == "ba" == store.next_task(ann, CID)["shown_order"]  # stable across reloads
    assert t["view"] == served[ann]["view"] and len({s["view"] for s in served.values()}) == 40
    assert store.rating_view(t["view"]) | {"served_at": None} == {
        "task_id": task["task_id"],
        "annotator": ann,
        "shown_order": "ba",
        "token": t["view"],
        "served_at": None,
    }
    assert (t["text_left"], t["text_right"]) == (task["text_b"], task["text_a"])
    assert "policy_a" not in t and "policy_b" not in t and "baseline" not in t  # blind
    # The order comes from the store: a page claiming the other order is refused; none given, the stored one.
    with pytest.raises(ValueError, match=f"shown to '{ann}' in order 'ba', not 'ab'"):
        store.submit_rating(t["task_id"], ann, 6, 1, "ab")
    store.submit_rating(t["task_id"], ann, score_left=6, score_right=1)
    (r,) = store.ratings(CID)
    assert (r["score_a"], r["score_b"], r["shown_order"], r["annotator"]) == (1, 6, "ba", ann) and r[
        "ts"
    ] is not None
    with pytest.raises(ValueError, match="never served to 'nobody'"):
        store.submit_rating(t["task_id"], "nobody", 3, 3)


def test_ratings_are_append_only_and_bad_input_is_refused(store: S):
    store.create_rating_tasks(CID, "base", "g1-i1", n=2, required_ratings=3, seed=0)
    tid = store.rating_tasks(CID)[0]["task_id"]
    store.submit_rating(tid, "ann", 2, 5, "ab")
    with pytest.raises(ValueError, match="'ann' already rated task .*append-only"):
        store.submit_rating(tid, "ann", 6, 6, "ab")
    for bad in (7, -1, 3.5, "3", True, None):
        with pytest.raises(ValueError, match=r"score_left must be an integer from 0 to 6, got"):
            store.submit_rating(tid, "bob", bad, 3, "ab")
    with pytest.raises(ValueError, match="score_right must be an integer from 0 to 6, got 9"):
        store.submit_rating(tid, "bob", 3, 9, "ab")
    with pytest.raises(ValueError, match="shown_order must be 'ab' or 'ba'"):
        store.submit_rating(tid, "bob", 3, 3, "left")
    with pytest.raises(KeyError, match="no rating task 999"):
        store.submit_rating(999, "bob", 3, 3, "ab")
    assert [(r["annotator"], r["score_a"], r["score_b"]) for r in store.ratings(CID)] == [("ann", 2, 5)]
    assert store.submit_rating(tid, "bob", np.int64(0), 6, "ab") > 0  # numpy integers are integers


# ---------------------------------------------------------------- statistics


def _r(task: int, ann: str, a: int, b: int, pa: str = "base", pb: str = "g1-i1") -> dict:
    return {"task_id": task, "annotator": ann, "score_a": a, "score_b": b, "policy_a": pa, "policy_b": pb}


def test_human_eval_diff_hand_computed():
    # Task means (a, b): t1 (2, 4) -> +2; t2 (3, 3.5) -> +0.5; t3 (4, 3) -> -1; t4 (1, 5) -> +4.
    rows = [
        _r(1, "x", 2, 4),
        _r(1, "y", 2, 4),
        _r(2, "x", 3, 3),
        _r(2, "y", 3, 4),
        _r(3, "x", 4, 3),
        _r(4, "y", 1, 5),
    ]
    res = hr.human_eval_diff(rows, seed=0)
    assert res["mean"] == {"base": pytest.approx(2.5), "g1-i1": pytest.approx(3.875)}
    assert res["diff"] == pytest.approx(1.375) and res["n_tasks"] == 4 and res["n_ratings"] == 6
    assert (res["win"], res["tie"], res["loss"]) == pytest.approx((4 / 6, 1 / 6, 1 / 6))
    # The percentile interval of 9,999 resampled means of [2, .5, -1, 4] brackets the diff and stays within
    # the range of the data; a plain numpy bootstrap lands on about the same bounds.
    boot = np.random.default_rng(1).choice([2, 0.5, -1, 4], size=(20000, 4)).mean(1)
    assert (res["ci_low"], res["ci_high"]) == pytest.approx(tuple(np.percentile(boot, [2.5, 97.5])), abs=0.15)
    assert -1 <= res["ci_low"] < 1.375 < res["ci_high"] <= 4
    assert hr.human_eval_diff(rows, baseline="g1-i1")["diff"] == pytest.approx(-1.375)  # baseline by name
    clear = hr.human_eval_diff([_r(t, "x", 1, 5) for t in range(5)] + [_r(9, "x", 2, 5)])
    assert clear["preferred"] == "g1-i1" and clear["ci_low"] > 0
    with pytest.raises(ValueError, match="exactly one policy pair"):
        hr.human_eval_diff(rows + [_r(7, "x", 1, 1, pb="g2-i1")])


def test_krippendorff_alpha_textbook_and_hand_computed():
    # Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", 4 observers x 12 units with missing
    # values; the paper gives alpha_interval = 0.849.
    n = np.nan
    k2011 = [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, n, n, n],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, n, 3],
        [n, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, n],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, n],
    ]
    assert hr.krippendorff_alpha_interval(k2011) == pytest.approx(0.849, abs=5e-4)
    # By hand: coders A = (1, 2, 3), B = (1, 2, 4). Pairable values {1,1,2,2,3,4}, n = 6.
    # D_o = (1/6) * [0 + 0 + ((3-4)^2 + (4-3)^2) / (2-1)] = 2/6.
    # D_e: unordered pairs of the six values sum (v-v')^2 = 4*1 + 2*4 + 2*9 + 2*1 + 2*4 + 1 = 41,
    # ordered 82, so D_e = 82 / (6*5) = 41/15. alpha = 1 - (1/3) / (41/15) = 36/41.
    assert hr.krippendorff_alpha_interval([[1, 2, 3], [1, 2, 4]]) == pytest.approx(36 / 41)
    # A unit rated once carries no pairable value; perfect agreement is 1; no variation is undefined.
    assert hr.krippendorff_alpha_interval([[1, 2, 3, 5], [1, 2, 4, n]]) == pytest.approx(36 / 41)
    assert hr.krippendorff_alpha_interval([[0, 3, 6], [0, 3, 6]]) == 1.0
    assert np.isnan(hr.krippendorff_alpha_interval([[2, 2], [2, 2]]))
    assert [hr.reliability_label(x) for x in (0.85, 0.8, 0.7, 0.667, 0.5, float("nan"))] == [
        "reliable",
        "reliable",
        "tentative",
        "tentative",
        "unreliable",
        "undefined",
    ]


def test_krippendorff_alpha_matches_the_package_when_installed():
    kr = pytest.importorskip("krippendorff")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 7, size=(5, 60)).astype(float)
    x[rng.random(x.shape) < 0.3] = np.nan
    assert hr.krippendorff_alpha_interval(x) == pytest.approx(
        kr.alpha(reliability_data=x, level_of_measurement="interval")
    )


def test_agreement_builds_units_from_both_sides():
    rows = [_r(1, "x", 1, 2), _r(1, "y", 1, 2), _r(2, "x", 3, 4), _r(2, "y", 3, 6)]
    # units (t1,a)=(1,1) (t1,b)=(2,2) (t2,a)=(3,3) (t2,b)=(4,6): coders x=(1,2,3,4), y=(1,2,3,6)
    res = hr.agreement(rows)
    assert res["alpha"] == pytest.approx(hr.krippendorff_alpha_interval([[1, 2, 3, 4], [1, 2, 3, 6]]))
    assert (res["annotators"], res["units"], res["pairable_units"]) == (2, 4, 4)


def test_reward_human_correlation_hand_computed_and_scipy():
    # Ranks differ by d = (-1, 1, -1, 1, 0): rho = 1 - 6*4 / (5*24) = 0.8;
    # 2 discordant pairs of 10: tau = 0.6.
    res = hr.reward_human_correlation(zip([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]))
    assert res["spearman_rho"] == pytest.approx(0.8) and res["kendall_tau"] == pytest.approx(0.6)
    rng = np.random.default_rng(3)
    x = rng.random(40)
    y = np.round(6 * x + rng.normal(0, 1.5, 40)).clip(0, 6)  # tied integer scores, like real ratings
    res = hr.reward_human_correlation(zip(x, y))
    rho, tau = sps.spearmanr(x, y), sps.kendalltau(x, y)
    assert (res["spearman_rho"], res["spearman_p"]) == pytest.approx((rho.statistic, rho.pvalue))
    assert (res["kendall_tau"], res["kendall_p"]) == pytest.approx((tau.statistic, tau.pvalue))
    for few in ([(0.1, 3), (0.2, 3), (0.3, 3)], [(0.1, 1), (0.2, 2)]):  # constant scores; fewer than 3 points
        assert np.isnan(hr.reward_human_correlation(few)["spearman_rho"])


def test_correlation_per_grow_from_the_store(store: S):
    store.create_rating_tasks(CID, "base", "g1-i1", n=12, required_ratings=1, seed=0)
    for t in store.rating_tasks(CID):
        i = SOURCES.index(t["source_id"])
        # People agree with the reward on grow 1's texts and disagree on grow 2's: it stopped tracking them.
        human = {
            g: round((_reward(g, i, k) - 0.1) * 20) if g == 1 else 6 - round((_reward(g, i, k) - 0.2) * 20)
            for g, k in ((t["grow_a"], t["sample_idx_a"]), (t["grow"], t["sample_idx_b"]))
        }
        store.submit_rating(t["task_id"], "ann", human[t["grow_a"]], human[t["grow"]], "ab")
    rows = store.rated_rewards(CID)
    assert len(rows) == 24
    assert all(
        r["reward"] == _reward(r["grow"], SOURCES.index(r["source_id"]), r["sample_idx"]) for r in rows
    )
    by = {c["grow"]: c for c in hr.correlation_by_grow(rows)}
    assert by[1]["spearman_rho"] > 0.9 and by[2]["spearman_rho"] < -0.9 and by[1]["n"] == by[2]["n"] == 12
    st = hr.rating_stats(store, CID)
    assert (
        st["progress"]["complete"] == 12
        and st["pairs"][0]["n_tasks"] == 12
        and st["agreement"]["annotators"] == 1
    )


def _cli(args: list[str]) -> int:
    p = argparse.ArgumentParser(prog="restgov")
    add_parsers(p.add_subparsers(dest="cmd", required=True), "unused.duckdb")
    a = p.parse_args(args)
    return a.fn(a)


def test_cli_ratings_create_and_stats(store: S, monkeypatch, capsys):
    monkeypatch.setattr(engine.store, "Store", S)  # the mixins may not be wired into Store yet
    db = str(store.path)
    store.close()
    assert (
        _cli(
            [
                "ratings",
                "create",
                CID,
                "--a",
                "base",
                "--b",
                "g1-i1",
                "--n",
                "4",
                "--required",
                "1",
                "--db",
                db,
            ]
        )
        == 0
    )
    assert "created 4 rating tasks in batch b1 (base vs g1-i1, 1 ratings each)" in capsys.readouterr().out
    s = S(db)
    for t in s.rating_tasks(CID):  # base 2, g1-i1 5, whichever side each was stored on
        s.submit_rating(t["task_id"], "ann", *((2, 5) if t["policy_a"] == "base" else (5, 2)), "ab")
    s.close()
    assert _cli(["ratings", "stats", CID, "--db", db]) == 0
    out = capsys.readouterr().out
    assert (
        "tasks 4: complete 4" in out
        and "human eval diff +3.000 [3.000, 3.000]" in out
        and "preferred: g1-i1" in out
    )
    assert _cli(["ratings", "stats", CID, "--db", db, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["pairs"][0]["diff"] == 3.0
    with pytest.raises(SystemExit, match="policy 'nope' has no samples"):
        _cli(["ratings", "create", CID, "--a", "base", "--b", "nope", "--db", db])
