"""Drift statistics on a real DuckDB file: the SQL Wasserstein against scipy, the hacking checks (silent on a
reward rise alone; length, diversity, KL, ceiling and reference alarms), per-source figures kept at ingest
against SQL over the samples, diversity by hand, events, and the KL estimator on tiny GPT-2s.
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
    HackingThresholds,
    default_comparisons,
    drift_report,
    hacking_report,
    hacking_thresholds,
    kl_estimate,
    record_alarms,
    resolve_steps,
)
from engine.steps.grow import REF_SCHEMA, SAMPLE_SCHEMA
from engine.store.core import CoreStore
from engine.store.drift import DriftMixin
from engine.store.ratings import RatingsMixin

CID = "camp"
WORDS = [f"w{i}" for i in range(40)]


class S(RatingsMixin, DriftMixin, CoreStore):
    pass


def _store(
    tmp_path: Path,
    steps: dict[int, dict],
    n_sources: int = 200,
    refs: dict[int, dict[str, float]] | None = None,
) -> S:
    """steps: grow -> {"reward": array, optional "n_tokens", "text", "sum_logprob", "base_logprob",
    "source_id"}; refs: grow -> {source_id: reward of its reference}, ingested as reference rewards."""
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
                    n_tokens=_val(st, "n_tokens", i, 5, int),
                    sum_logprob=_val(st, "sum_logprob", i, -1.0, float),
                    base_logprob=_val(st, "base_logprob", i, None, float),
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
    for g, by_source in (refs or {}).items():
        _ingest_refs(s, tmp_path, g, by_source)
    return s


def _val(st: dict, key: str, i: int, default, cast):
    """Row i of column `key` of a step, `default` when the step has no such column; None and NaN are NULL."""
    if key not in st:
        return default
    v = st[key][i]
    return None if v is None or (isinstance(v, float) and np.isnan(v)) else cast(v)


def _ingest_refs(s: S, tmp_path: Path, g: int, by_source: dict[str, float], version: str = "v") -> None:
    """The reward of each source's reference at Grow g, as the Grow worker writes it (a refs shard)."""
    rows = [
        dict(grow=g, source_id=sid, reward=float(r), reward_version=version) for sid, r in by_source.items()
    ]
    path = tmp_path / f"refs-g{g}-{version}.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=REF_SCHEMA), path)
    s.ingest_shard(CID, "refs", path.stem, path)


def _reopen(tmp_path: Path) -> S:
    return S(tmp_path / "d.duckdb")


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


def test_a_reward_rise_alone_raises_no_alarm(tmp_path: Path):
    """What ReST is for: the reward distribution moves up, everything else stays as it was."""
    rng = np.random.default_rng(1)
    a, b = _step(rng, 20_000, 2, 5), _step(rng, 20_000, 5, 2)  # mean reward 2/7 -> 5/7
    b["base_logprob"] = np.full(20_000, -3.0)  # sum_logprob -1: 2 nats from the BC policy, within budget
    s = _store(tmp_path, {1: a, 2: b}, refs={g: {str(i): 0.9 for i in range(200)} for g in (1, 2)})
    rep = hacking_report(s, CID)  # defaults: a = the BC policy's Grow (the first), b = the latest
    assert (rep["a"], rep["b"]) == (1, 2)
    assert rep["alarms"] == [] and rep["skipped"] == {}, (rep["alarms"], rep["skipped"])
    f = rep["figures"]
    assert f["mean_reward"]["b"] - f["mean_reward"]["a"] == pytest.approx(3 / 7, abs=0.01)
    assert f["length"]["ratio"] == pytest.approx(1.0, abs=0.02)
    assert f["diversity"]["unique_share_drop"] == pytest.approx(0.0, abs=0.01)
    assert abs(f["diversity"]["distinct_2_drop"]) < 0.05
    assert f["kl"]["nats"] == pytest.approx(2.0) and f["kl"]["coverage"] == 1.0
    assert f["ceiling"]["ceiling"] == 1.0 and f["ceiling"]["rise"] < 0.01
    assert f["references"]["excess"] == pytest.approx(5 / 7 - 0.9, abs=0.01)  # still below the humans
    # drift_report raises the same (no) alarms; the reward distance is there as a figure.
    full = drift_report(s, CID)
    assert full["alarms"] == [] and full["reward"]["wasserstein_norm"] > 2
    assert full["reward"]["ks_pvalue"] < 1e-12


def test_the_undirected_reward_distance_alarms_only_when_its_limit_is_set(tmp_path: Path):
    rng = np.random.default_rng(1)
    s = _store(tmp_path, {1: _step(rng, 20_000, 2, 5), 2: _step(rng, 20_000, 5, 2)})
    assert drift_report(s, CID)["alarms"] == []
    rep = drift_report(s, CID, thresholds=DriftThresholds(reward_wasserstein=0.1))
    assert rep["reward"]["wasserstein_norm"] > 2  # means 2/7 vs 5/7, std of Beta(2,5) = 0.16
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
    # A limit above the shift silences it; the KS check is opt-in.
    assert drift_report(s, CID, thresholds=DriftThresholds(reward_wasserstein=5.0))["alarms"] == []
    loud = drift_report(s, CID, thresholds=DriftThresholds(ks_pvalue=0.01))
    assert "reward_ks" in [al["metric"] for al in loud["alarms"]]


@pytest.mark.parametrize(("factor", "alarm"), [(1.5, True), (1 / 1.5, True), (1.2, False)])
def test_length_shift(tmp_path: Path, factor: float, alarm: bool):
    rng = np.random.default_rng(3)
    a, b = _step(rng, 4000, 2, 5), _step(rng, 4000, 2.5, 4)
    b["n_tokens"] = np.round(b["n_tokens"] * factor)
    rep = hacking_report(_store(tmp_path, {1: a, 2: b}), CID)
    ratio = rep["figures"]["length"]["ratio"]
    assert ratio == pytest.approx(factor, rel=0.05)
    assert ratio == pytest.approx(b["n_tokens"].mean() / a["n_tokens"].mean())
    assert [al["check"] for al in rep["alarms"]] == (["length_shift"] if alarm else [])
    if alarm:
        (al,) = rep["alarms"]
        assert al["value"] == ratio and al["threshold"] == 1.3 and "grow 1 to grow 2" in al["message"]


def test_identical_candidates_per_source_raise_the_diversity_alarms(tmp_path: Path):
    rng = np.random.default_rng(4)
    a, b = _step(rng, 4000, 2, 5), _step(rng, 4000, 2, 5)
    b["text"] = [b["text"][i % 200] for i in range(4000)]  # row i belongs to source i % 200: one text each
    s = _store(tmp_path, {1: a, 2: b})
    rep = hacking_report(s, CID)
    d = rep["figures"]["diversity"]
    assert d["a"]["unique_share"] == 1.0 and d["b"]["unique_share"] == pytest.approx(1 / 20)
    assert d["n_texts"] == 4000 and d["a"]["n_texts"] == d["b"]["n_texts"] == 4000
    assert d["distinct_2_drop"] > 0.2
    # The unique share fell 95%, past the default 80%; distinct-2 fell less, an alarm at a tighter limit.
    assert [al["check"] for al in rep["alarms"]] == ["unique_share_drop"]
    tight = hacking_report(s, CID, th=HackingThresholds(distinct_drop=0.2))
    assert sorted(al["check"] for al in tight["alarms"]) == ["distinct_2_drop", "unique_share_drop"]
    quiet = HackingThresholds(unique_share_drop=None, distinct_drop=None)
    assert hacking_report(s, CID, th=quiet)["alarms"] == []


def test_kl_from_base_logprob(tmp_path: Path):
    rng = np.random.default_rng(5)
    a, b = _step(rng, 4000, 2, 5), _step(rng, 4000, 2, 5)
    b["sum_logprob"] = -rng.gamma(4.0, 5.0, 4000)
    b["base_logprob"] = b["sum_logprob"] - rng.gamma(12.0, 1.0, 4000)  # 12 nats per sample on average
    b["base_logprob"][::4] = np.nan  # not computed for a quarter of the samples
    s = _store(tmp_path, {1: a, 2: b})
    rep = hacking_report(s, CID)
    kl = rep["figures"]["kl"]
    have = ~np.isnan(b["base_logprob"])
    assert kl["n"] == 3000 and kl["coverage"] == 0.75
    assert kl["nats"] == pytest.approx(np.mean(b["sum_logprob"][have] - b["base_logprob"][have]))
    assert kl["nats_per_token"] == pytest.approx(kl["nats"] / b["n_tokens"].mean())
    (al,) = rep["alarms"]
    assert al["check"] == "kl_budget" and al["value"] == kl["nats"] and al["threshold"] == 10.0
    assert hacking_report(s, CID, th=HackingThresholds(kl_budget=15.0))["alarms"] == []
    # Grow 1 has no base_logprob (its policy is the BC policy): the check is skipped, not failed.
    rev = hacking_report(s, CID, 2, 1)
    assert rev["figures"]["kl"] is None and "base_logprob" in rev["skipped"]["kl_budget"]
    assert "kl_budget" not in [al["check"] for al in rev["alarms"]]


def test_rewards_piling_at_the_ceiling(tmp_path: Path):
    rng = np.random.default_rng(6)
    a, b = _step(rng, 10_000, 2, 5), _step(rng, 10_000, 2, 5)
    b["reward"][:3000] = 1.0
    b["reward"][3000:3100] = 0.995  # within eps = 1% of the ceiling
    s = _store(tmp_path, {1: a, 2: b})
    rep = hacking_report(s, CID)
    c = rep["figures"]["ceiling"]
    assert (c["ceiling"], c["floor"]) == (1.0, pytest.approx(0.99))
    assert c["share_a"] == pytest.approx(np.mean(a["reward"] >= 0.99))
    assert c["share_b"] == pytest.approx(np.mean(b["reward"] >= 0.99)) and c["share_b"] >= 0.31
    (al,) = rep["alarms"]
    assert (
        al["check"] == "reward_ceiling" and al["value"] == pytest.approx(c["rise"]) and al["threshold"] == 0.1
    )
    assert hacking_report(s, CID, th=HackingThresholds(ceiling_margin=0.5))["alarms"] == []


def test_ceiling_of_an_unbounded_reward_is_its_largest_value(tmp_path: Path):
    rng = np.random.default_rng(7)
    a, b = _step(rng, 4000, 2, 5), _step(rng, 4000, 2, 5)
    a["reward"], b["reward"] = a["reward"] * 100 - 20, b["reward"] * 100 - 20
    b["reward"][:1000] = 95.0
    rep = hacking_report(_store(tmp_path, {1: a, 2: b}), CID)
    c = rep["figures"]["ceiling"]
    span = 95.0 - min(a["reward"].min(), b["reward"].min())
    assert c["ceiling"] == 95.0 and c["floor"] == pytest.approx(95.0 - 0.01 * span)
    assert c["share_b"] == pytest.approx(np.mean(b["reward"] >= c["floor"])) and c["rise"] > 0.2
    assert [al["check"] for al in rep["alarms"]] == ["reward_ceiling"]


def test_a_binary_reward_at_its_ceiling_is_accuracy_not_hacking(tmp_path: Path):
    rng = np.random.default_rng(8)
    a, b = _step(rng, 4000, 2, 5), _step(rng, 4000, 2, 5)
    a["reward"], b["reward"] = (rng.random(4000) < 0.2) * 1.0, (rng.random(4000) < 0.7) * 1.0
    rep = hacking_report(_store(tmp_path, {1: a, 2: b}), CID)
    assert rep["alarms"] == [] and rep["figures"]["ceiling"] is None
    assert "binary" in rep["skipped"]["reward_ceiling"]


def test_generated_samples_outscoring_the_references(tmp_path: Path):
    rng = np.random.default_rng(9)
    a, b = _step(rng, 4000, 2, 5), _step(rng, 4000, 5, 2)  # generated mean 2/7 -> 5/7
    refs = {g: {str(i): 0.5 + 0.001 * i for i in range(200)} for g in (1, 2)}  # mean 0.5995
    s = _store(tmp_path, {1: a, 2: b}, refs=refs)
    rep = hacking_report(s, CID)
    r = rep["figures"]["references"]
    assert r["b"]["n_sources"] == 200 and r["b"]["mean_reference"] == pytest.approx(0.5995)
    assert r["b"]["mean_generated"] == pytest.approx(b["reward"].mean())
    assert r["excess"] == pytest.approx(b["reward"].mean() - 0.5995)
    assert r["a"]["mean_generated"] == pytest.approx(a["reward"].mean()) and r["b"]["share_beaten"] > 0.5
    (al,) = rep["alarms"]
    assert al["check"] == "beats_references" and al["threshold"] == 0.05 and "200 sources" in al["message"]
    assert hacking_report(s, CID, th=HackingThresholds(reference_margin=0.2))["alarms"] == []


def test_reference_check_is_skipped_without_comparable_reference_rewards(tmp_path: Path):
    rng = np.random.default_rng(10)
    s = _store(tmp_path, {1: _step(rng, 2000, 2, 5), 2: _step(rng, 2000, 5, 2)}, refs={1: {"0": 0.1}})
    rep = hacking_report(s, CID)
    assert rep["figures"]["references"] is None and rep["alarms"] == []
    assert rep["skipped"]["beats_references"] == "no reference rewards at grow 2"
    _ingest_refs(s, tmp_path, 2, {str(i): 0.1 for i in range(200)}, version="another-reward")
    rep = hacking_report(s, CID)
    assert rep["alarms"] == [] and "reward version" in rep["skipped"]["beats_references"]


def test_hacking_thresholds_from_the_gates_config():
    from engine.config import GatesConfig

    th = hacking_thresholds(GatesConfig(drift_length_ratio=1.5, drift_kl_budget=None))
    assert th.length_ratio == 1.5 and th.kl_budget is None
    assert (th.distinct_drop, th.unique_share_drop, th.ceiling_margin) == (0.8, 0.8, 0.1)
    assert hacking_thresholds(GatesConfig(drift_distinct_drop=0.3)).distinct_drop == 0.3
    with pytest.raises(ValueError, match="length_ratio"):
        HackingThresholds(length_ratio=0.8)


# ---------------------------------------------------------------- per-source figures kept at ingest

_DIRECT = """
SELECT grow, source_id, count(*) AS n, count(DISTINCT text) AS n_unique, avg(reward) AS mean_reward,
       stddev_pop(reward) AS std_reward, min(reward) AS min_reward, max(reward) AS max_reward,
       count(n_tokens) AS n_with_tokens, avg(n_tokens) AS mean_tokens, stddev_pop(n_tokens) AS std_tokens,
       count(sum_logprob - base_logprob) AS kl_n, sum(sum_logprob - base_logprob) AS kl_sum,
       min(policy) AS policy, min(reward_version) AS reward_version
FROM samples WHERE campaign_id = ? AND sample_idx >= 0 GROUP BY grow, source_id ORDER BY grow, source_id"""


def _uneven(rng: np.random.Generator, n: int) -> dict:
    """Sources of uneven size, repeated texts, some missing token counts and base log-probabilities."""
    st = _step(rng, n, 2, 5)
    st["source_id"] = [f"s{j}" for j in rng.integers(0, 50, n)]
    st["text"] = [t if rng.random() < 0.6 else "the same answer" for t in st["text"]]
    st["n_tokens"] = [None if rng.random() < 0.1 else int(x) for x in st["n_tokens"]]
    st["sum_logprob"] = -rng.gamma(4.0, 5.0, n)
    st["base_logprob"] = np.where(rng.random(n) < 0.3, np.nan, st["sum_logprob"] - rng.gamma(2.0, 1.0, n))
    return st


def test_source_stats_equal_sql_over_the_samples(tmp_path: Path):
    rng = np.random.default_rng(11)
    s = _store(tmp_path, {1: _uneven(rng, 3000), 2: _uneven(rng, 2000)}, n_sources=0)
    direct = s._rows(_DIRECT, [CID])
    stored = s._rows(
        f"SELECT {', '.join(direct[0])} FROM source_stats WHERE campaign_id = ? ORDER BY grow, source_id",
        [CID],
    )
    assert (
        len(stored) == len(direct) == 100
    )  # 50 sources x 2 steps; the original pairs (sample_idx -1) left out
    for got, want in zip(stored, direct, strict=True):
        assert got == {k: pytest.approx(v) if isinstance(v, float) else v for k, v in want.items()}
    for g in (1, 2):
        step = s._rows(
            "SELECT count(*) AS n, avg(reward) AS mean_reward, stddev_pop(reward) AS std_reward, "
            "min(reward) AS min_reward, max(reward) AS max_reward, avg(n_tokens) AS mean_tokens, "
            "stddev_pop(n_tokens) AS std_tokens, count(sum_logprob - base_logprob) AS kl_n, "
            "avg(sum_logprob - base_logprob) AS kl_mean FROM samples "
            "WHERE campaign_id = ? AND grow = ? AND sample_idx >= 0",
            [CID, g],
        )[0]
        (share,) = (
            s.cursor()
            .execute(
                "SELECT avg(k) FROM (SELECT count(DISTINCT text) / count(*) AS k FROM samples "
                "WHERE campaign_id = ? AND grow = ? AND sample_idx >= 0 GROUP BY source_id)",
                [CID, g],
            )
            .fetchone()
        )
        summary = s.step_summary(CID, g)
        assert {k: summary[k] for k in step} == {k: pytest.approx(v) for k, v in step.items()}
        assert summary["unique_share"] == pytest.approx(share) and summary["n_sources"] == 50
        assert summary["policies"] == (["base"] if g == 1 else ["g1-i1"]) and summary["reward_versions"] == [
            "v"
        ]


def test_source_stats_survive_re_ingesting_a_shard(tmp_path: Path):
    rng = np.random.default_rng(12)
    s = _store(tmp_path, {1: _step(rng, 2000, 2, 5)})
    before = s.source_stats(CID, 1)
    path = tmp_path / "g1.parquet"
    assert s.ingest_shard(CID, "samples", "g1", path) == 0  # the same shard again: nothing added
    assert s.source_stats(CID, 1) == before and len(before) == 200
    # The same sources under another shard id would count them twice: refused, and nothing of it lands.
    with pytest.raises(ValueError, match="whole sources"):
        s.ingest_shard(CID, "samples", "g1-copy", path)
    assert s.shard_ids(CID) == {"g1"} and s.step_summary(CID, 1)["n"] == 2000
    assert s.query_value("SELECT count(*) FROM samples WHERE campaign_id = ?", [CID]) == 2000 + 200
    s.close()
    s = _reopen(tmp_path)
    assert s.ingest_shard(CID, "samples", "g1", path) == 0 and s.source_stats(CID, 1) == before
    dup = s.query_value(
        "SELECT count(*) FROM (SELECT grow, source_id FROM source_stats GROUP BY ALL HAVING count(*) > 1)", []
    )
    assert dup == 0
    s.close()


def test_source_stats_are_filled_for_shards_ingested_without_them(tmp_path: Path):
    """A store file whose samples came in before source_stats existed gets them on first use."""
    rng = np.random.default_rng(13)
    core = CoreStore(tmp_path / "old.duckdb")  # the core alone: samples, no per-source figures
    core.create_campaign(CID, "old", "rest", {}, str(tmp_path))
    for g, st in ((1, _uneven(rng, 1000)), (2, _uneven(rng, 1000))):
        rows = [
            dict(
                grow=g,
                source_id=st["source_id"][i],
                sample_idx=i,
                text=st["text"][i],
                n_tokens=st["n_tokens"][i],
                sum_logprob=float(st["sum_logprob"][i]),
                base_logprob=_val(st, "base_logprob", i, None, float),
                policy="p",
                reward=float(st["reward"][i]),
                reward_version="v",
            )
            for i in range(1000)
        ]
        pq.write_table(pa.Table.from_pylist(rows, schema=SAMPLE_SCHEMA), tmp_path / f"old{g}.parquet")
        core.ingest_shard(CID, "samples", f"old{g}", tmp_path / f"old{g}.parquet")
    core.close()
    s = S(tmp_path / "old.duckdb")
    assert [(r["grow"], r["n"]) for r in s.drift_grows(CID)] == [(1, 1000), (2, 1000)]
    direct = s._rows(_DIRECT, [CID])
    stored = s._rows(
        f"SELECT {', '.join(direct[0])} FROM source_stats WHERE campaign_id = ? ORDER BY grow, source_id",
        [CID],
    )
    assert [(r["grow"], r["source_id"], r["n"], r["n_unique"]) for r in stored] == [
        (r["grow"], r["source_id"], r["n"], r["n_unique"]) for r in direct
    ]
    s.close()


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
    # Tokens split on runs of whitespace. Unigrams a b a a b c a b a z y z: 5 distinct of 12.
    # Bigrams ab ba ab bc ab ba yz: 4 distinct of 7.
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
    # Fewer texts than the step has: exactly that many, the same ones on every call.
    assert s.distinct_n(CID, 1, n_texts=4)["n_texts"] == 4
    assert s.distinct_n(CID, 1, n_texts=4) == s.distinct_n(CID, 1, n_texts=4)


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
    # term, so they are not comparable with a rescoring that includes it; a wrong figure shows if they
    # leak in.
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
    a = p.parse_args(["drift", CID, "--a", "0", "--b", "2", "--record", "--threshold", "0.1"])
    assert a.fn(a) == 1
    out = capsys.readouterr().out
    assert "grow 1 (n 3000) -> grow 2 (n 3000)" in out and "ALARM reward_wasserstein" in out
    a = p.parse_args(["drift", CID, "--json", "--threshold", "100"])
    assert a.fn(a) == 0 and json.loads(capsys.readouterr().out)["alarms"] == []
    s = S(db)
    assert [e["kind"] for e in s.events(CID, ["drift_alarm"])] == ["drift_alarm"]
