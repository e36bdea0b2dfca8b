"""Drift statistics on a real DuckDB file: the SQL Wasserstein against scipy, alarms on a shifted reward
distribution and silence on a resample, diversity by hand, events, and the KL estimator on tiny GPT-2s.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy import stats as sps

from engine.drift import (
    DriftThresholds,
    default_comparisons,
    drift_report,
    kl_estimate,
    record_alarms,
    resolve_steps,
)
from engine.store.core import CoreStore
from engine.store.drift import DriftMixin
from engine.store.ratings import RatingsMixin
from engine.steps.grow import SAMPLE_SCHEMA

CID = "camp"
WORDS = [f"w{i}" for i in range(40)]


class S(RatingsMixin, DriftMixin, CoreStore):
    pass


def _store(tmp_path: Path, steps: dict[int, dict], n_sources: int = 200) -> S:
    """steps: grow -> {"reward": array, optional "n_tokens", "text", "sum_logprob", "source_id"}."""
    s = S(tmp_path / "d.duckdb")
    s.create_campaign(CID, "drift", "rest", {}, str(tmp_path))
    sids = sorted(
        {sid for st in steps.values() for sid in st.get("source_id", [])} | {str(i) for i in range(n_sources)}
    )
    s.add_prompts(CID, "train", [(sid, f"{sid} + 1", str(sid)) for sid in sids])
    for g, st in steps.items():
        n = len(st["reward"])
        src = st["source_id"] if "source_id" in st else [str(i % n_sources) for i in range(n)]
        idx: dict[str, int] = {}
        rows = []
        for i in range(n):
            k = idx[src[i]] = idx.get(src[i], -1) + 1
            rows.append(
                dict(
                    grow=g,
                    source_id=src[i],
                    sample_idx=k,
                    text=st["text"][i] if "text" in st else f"t{i}",
                    n_tokens=int(st["n_tokens"][i]) if "n_tokens" in st else 5,
                    sum_logprob=float(st["sum_logprob"][i]) if "sum_logprob" in st else -1.0,
                    policy="base" if g == 1 else f"g{g - 1}-i1",
                    reward=float(st["reward"][i]),
                    reward_version="v",
                )
            )
        # An original pair per source, which drift must ignore (it is the same in every step).
        rows += [
            dict(
                grow=g,
                source_id=sid,
                sample_idx=-1,
                text="ref",
                n_tokens=None,
                sum_logprob=None,
                policy="reference",
                reward=1.0,
                reward_version="v",
            )
            for sid in sids
        ]
        pq.write_table(pa.Table.from_pylist(rows, schema=SAMPLE_SCHEMA), tmp_path / f"g{g}.parquet")
        s.ingest_shard(CID, "samples", f"g{g}", tmp_path / f"g{g}.parquet")
    return s


def _step(rng: np.random.Generator, n: int, alpha: float, beta: float) -> dict:
    """Rewards ~ Beta(alpha, beta); lengths and texts from one fixed distribution."""
    lens = rng.poisson(8, n) + 1
    return {
        "reward": rng.beta(alpha, beta, n),
        "n_tokens": lens,
        "text": [" ".join(rng.choice(WORDS, size=m)) for m in lens],
    }


def test_sql_wasserstein_and_ks_match_scipy(tmp_path: Path):
    rng = np.random.default_rng(0)
    a, b = _step(rng, 5000, 2, 5), _step(rng, 5000, 2.5, 4)
    b["n_tokens"] = rng.poisson(9, 5000) + 1
    s = _store(tmp_path, {1: a, 2: b})
    for col in ("reward", "n_tokens"):
        d = s.cdf_distance(CID, 1, 2, col)
        assert d["n_a"] == d["n_b"] == 5000  # the original pairs (sample_idx -1) are not counted
        assert d["wasserstein"] == pytest.approx(sps.wasserstein_distance(a[col], b[col]), abs=1e-3)
        assert d["ks_binned"] == pytest.approx(sps.ks_2samp(a[col], b[col]).statistic, abs=2e-3)
    assert s.cdf_distance(CID, 1, 1)["wasserstein"] == 0.0


def test_alarm_fires_on_a_shifted_reward_distribution_and_is_recorded(tmp_path: Path):
    rng = np.random.default_rng(1)
    s = _store(tmp_path, {1: _step(rng, 20_000, 2, 5), 2: _step(rng, 20_000, 5, 2)})
    rep = drift_report(s, CID)  # defaults: a = BC baseline (first Grow), b = latest
    assert (rep["a"], rep["b"]) == (1, 2)
    assert rep["reward"]["wasserstein_norm"] > 2  # means 2/7 vs 5/7, std of Beta(2,5) = 0.16
    assert rep["reward"]["ks_pvalue"] < 1e-12
    assert [al["metric"] for al in rep["alarms"]] == ["reward_wasserstein"]
    assert record_alarms(s, CID, rep) == 1
    (ev,) = s.events(CID, ["drift_alarm"])
    payload = json.loads(ev["payload"])
    assert payload["metric"] == "reward_wasserstein" and payload["value"] == pytest.approx(
        rep["reward"]["wasserstein_norm"]
    )
    assert (
        payload["threshold"] == 0.1
        and (payload["a"], payload["b"]) == (1, 2)
        and "grow 1 to grow 2" in ev["message"]
    )
    # A threshold above the shift silences it; the KS check is opt-in.
    assert drift_report(s, CID, thresholds=DriftThresholds(reward_wasserstein=5.0))["alarms"] == []
    loud = drift_report(s, CID, thresholds=DriftThresholds(ks_pvalue=0.01))
    assert "reward_ks" in [al["metric"] for al in loud["alarms"]]


def test_quiet_on_a_resample_of_the_same_distribution(tmp_path: Path):
    rng = np.random.default_rng(2)
    s = _store(tmp_path, {1: _step(rng, 20_000, 2, 5), 2: _step(rng, 20_000, 2, 5)})
    rep = drift_report(s, CID, 1, 2)
    assert rep["alarms"] == [], rep["alarms"]
    assert rep["reward"]["wasserstein_norm"] < 0.05 and rep["length"]["wasserstein_norm"] < 0.05
    d = rep["diversity"]
    assert d["n_texts"] == 20_000 and abs(d["a"]["distinct_2"] - d["b"]["distinct_2"]) < 0.01
    assert rep["kl"] is None and rep["human"] == []


def test_diversity_hand_computed(tmp_path: Path):
    # s1: "a b a", "a b c", "a b a" (2 unique of 3); s2: "z", "y z" (2 of 2). Unique share = (2/3 + 1) / 2.
    # Tokens split on runs of whitespace. Unigrams a b a a b c a b a z y z: 5 distinct of 12. Bigrams ab ba ab bc ab ba yz: 4 distinct of 7.
    texts, src = ["a b a", "a b c", "a b a", "z", " y  z "], ["s1", "s1", "s1", "s2", "s2"]
    s = _store(
        tmp_path,
        {
            1: {"reward": [0.1] * 5, "text": texts, "source_id": src},
            2: {"reward": [0.2], "source_id": ["s2"]},
        },
        n_sources=0,
    )
    assert s.unique_share(CID, 1) == pytest.approx(5 / 6)
    d = s.distinct_n(CID, 1, n_texts=100)
    assert d == {"n_texts": 5, "distinct_1": pytest.approx(5 / 12), "distinct_2": pytest.approx(4 / 7)}


def test_collapsed_diversity_raises_its_alarm(tmp_path: Path):
    rng = np.random.default_rng(4)
    a = _step(rng, 2000, 2, 5)
    b = dict(a, text=[a["text"][i % 20] for i in range(2000)])  # the same 20 outputs over and over
    s = _store(tmp_path, {1: a, 2: b})
    metrics = [al["metric"] for al in drift_report(s, CID)["alarms"]]
    assert "distinct_2_drop" in metrics and "unique_share_drop" in metrics


def test_step_resolution(tmp_path: Path):
    rng = np.random.default_rng(5)
    s = _store(tmp_path, {g: _step(rng, 50, 2, 5) for g in (1, 2, 3)})
    assert resolve_steps(s, CID) == (1, 3) and resolve_steps(s, CID, 0, 2) == (1, 2)
    assert default_comparisons(s, CID) == [(1, 3), (2, 3)]
    with pytest.raises(ValueError, match=r"grow 7 .* no samples; sampled steps: \[1, 2, 3\]"):
        resolve_steps(s, CID, 1, 7)
    with pytest.raises(ValueError, match="two different steps"):
        resolve_steps(s, CID, 2, 2)


# ---------------------------------------------------------------- KL on tiny real policies


@pytest.fixture(scope="module")
def policies():
    from engine.config import ScratchModel
    from engine.models import Policy, build_scratch_policy

    spec = ScratchModel(n_layer=1, n_head=2, n_embd=32, vocab_size=300, max_length=32)
    corpus = [f"{x} + {y} => {x + y}" for x in range(30) for y in range(30)]

    def make(seed: int) -> Policy:
        model, tok = build_scratch_policy(spec, corpus, seed)
        return Policy(model.eval(), tok, "cpu", "{source} => ")

    return make(0), make(1)


def test_kl_is_zero_for_the_same_policy_and_positive_for_another(tmp_path: Path, policies):
    from engine.grow import sample

    pol_a, pol_b = policies
    sources = [f"{i} + 1" for i in range(50)]
    cands = sample(pol_a, sources, k=2, temperature=1.0, max_new_tokens=8, seed=0)
    step = {
        "reward": [0.5] * len(cands),
        "text": [c.text for c in cands],
        "source_id": [str(c.source_index) for c in cands],
        "n_tokens": [c.n_tokens for c in cands],
        "sum_logprob": [c.sum_logprob for c in cands],
    }
    s = _store(tmp_path, {1: step, 2: step}, n_sources=50)
    same = kl_estimate(s, CID, 1, base=pol_a, current=pol_a, n=100)
    other = kl_estimate(s, CID, 1, base=pol_b, current=pol_a, n=100)
    assert same["n"] == 100 and abs(same["kl"]) < 1e-5
    assert other["kl"] > 5 * other["stderr"] > 0
    rep = drift_report(s, CID, 1, 2, DriftThresholds(kl=0.1), base=pol_b, current=pol_a, kl_samples=30)
    assert rep["kl"]["n"] == 30 and rep["kl"]["kl"] > 0 and "kl" in [al["metric"] for al in rep["alarms"]]


def test_kl_from_stored_logprobs_drops_incomparable_rows(tmp_path: Path, policies):
    from engine.drift import score_logprobs

    pol_a, pol_b = policies
    src, texts = [f"{i} + 1" for i in range(40)], [str(i + 1) for i in range(40)]
    lp = score_logprobs(pol_a, src, texts)
    n_tok = [len(pol_a.target_ids(t)) - 1 for t in texts]
    # The last 10 rows stand for candidates cut at max_new_tokens (no EOS): their stored sum lacks the EOS
    # term, so they are not comparable with a rescoring that includes it; a wrong figure shows if they leak in.
    n_tok[30:] = [12] * 10
    lp[30:] = 0.0
    step = {
        "reward": [0.5] * 40,
        "text": texts,
        "source_id": [str(i) for i in range(40)],
        "n_tokens": n_tok,
        "sum_logprob": lp,
    }
    s = _store(tmp_path, {1: step, 2: {"reward": [0.5]}}, n_sources=40)
    same = kl_estimate(s, CID, 1, base=pol_a, n=100, max_new_tokens=12)
    assert (same["logp_current"], same["n"], same["dropped"]) == ("stored", 30, 10) and abs(same["kl"]) < 1e-4
    assert kl_estimate(s, CID, 1, base=pol_b, n=100, max_new_tokens=12)["kl"] > 0


def test_cli_drift_exits_1_on_alarm_and_records(tmp_path: Path, monkeypatch, capsys):
    import argparse

    import engine.store
    from engine.cli.governance import register as add_parsers

    monkeypatch.setattr(engine.store, "Store", S)  # the mixins may not be wired into Store yet
    rng = np.random.default_rng(6)
    s = _store(tmp_path, {1: _step(rng, 3000, 2, 5), 2: _step(rng, 3000, 5, 2)})
    db = str(s.path)
    s.close()
    p = argparse.ArgumentParser(prog="restgov")
    add_parsers(p.add_subparsers(dest="cmd", required=True), db)
    a = p.parse_args(["drift", CID, "--a", "0", "--b", "2", "--record"])
    assert a.fn(a) == 1
    out = capsys.readouterr().out
    assert "grow 1 (n 3000) -> grow 2 (n 3000)" in out and "ALARM reward_wasserstein" in out
    a = p.parse_args(["drift", CID, "--json", "--threshold", "100"])
    assert a.fn(a) == 0 and json.loads(capsys.readouterr().out)["alarms"] == []
    s = S(db)
    assert [e["kind"] for e in s.events(CID, ["drift_alarm"])] == ["drift_alarm"]
