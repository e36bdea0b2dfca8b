"""Tests for the filters of engine.store.Store.apply_filter on a real DuckDB file.

Each rule's kept rows are recomputed independently in Python from the same rewards and must match exactly;
the decision recorded in the filters table (kept count, kept mean reward, tau) must match too.
"""

from __future__ import annotations

from collections import defaultdict
from fractions import Fraction
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.steps.grow import SAMPLE_SCHEMA
from engine.store import Store

CID, OTHER = "camp-a", "camp-b"

# Rewards per source id for Grow 1 of CID; sample_idx -1 is the original pair, 0.. are samples.
# Multiples of 1/8 are exact in binary, so ties at a threshold are real ties; a few irrational-looking
# values and an all-equal source (0.1 is not exact: its mean must still keep every row) cover the rest.
REWARDS: dict[str, dict[int, float]] = {
    "0": {-1: 1.0, 0: 0.0, 1: 0.25, 2: 0.5, 3: 0.5},
    "1": {0: 0.125, 1: 0.875, 2: 0.875, 3: 0.375},
    "2": {-1: 1.0, 0: 1.0, 1: 1.0, 2: 0.0, 3: 0.0},
    "3": {0: 0.1, 1: 0.1, 2: 0.1, 3: 0.1},  # all equal
    "10": {0: 0.0, 1: 0.0, 2: 0.0, 3: 0.0},  # all zero: "10" sorts before "2" as a string
    "11": {-1: 1.0, 0: 0.7, 1: 0.7000001, 2: 0.6999999, 3: 0.31415926},
    "4": {0: 0.9},  # a single candidate
    "5": {0: 0.61803398, 1: 0.2718281, 2: 0.95, 3: 0.05, 4: 0.5, 5: 0.75},
}


def _rows(grow: int, rewards: dict[str, dict[int, float]]) -> list[dict]:
    return [
        dict(
            grow=grow,
            source_id=sid,
            sample_idx=idx,
            text=f"answer {sid}/{idx}",
            n_tokens=None if idx < 0 else 3 + idx,
            sum_logprob=None if idx < 0 else -1.5 * (idx + 1),
            policy="reference" if idx < 0 else "base",
            reward=r,
            reward_version="v1",
        )
        for sid, by_idx in rewards.items()
        for idx, r in by_idx.items()
    ]


def _shard(path: Path, rows: list[dict]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows, schema=SAMPLE_SCHEMA), path)
    return path


@pytest.fixture
def store(tmp_path: Path):
    s = Store(tmp_path / "store.duckdb")
    s.add_prompts(CID, "train", [(sid, f"source {sid}", f"ref {sid}") for sid in REWARDS])
    s.add_prompts(OTHER, "train", [(sid, f"other {sid}", f"ref {sid}") for sid in REWARDS])
    # Rows that the filters of (CID, grow 1) must never see: another Grow step and another campaign.
    noise = {sid: {0: 1.0, 1: 0.99} for sid in REWARDS}
    assert (
        s.ingest_shard(
            CID,
            "samples",
            f"{CID}/g1/a",
            _shard(tmp_path / "g1-a.parquet", _rows(1, dict(list(REWARDS.items())[:4]))),
        )
        > 0
    )
    assert (
        s.ingest_shard(
            CID,
            "samples",
            f"{CID}/g1/b",
            _shard(tmp_path / "g1-b.parquet", _rows(1, dict(list(REWARDS.items())[4:]))),
        )
        > 0
    )
    s.ingest_shard(CID, "samples", f"{CID}/g2/a", _shard(tmp_path / "g2.parquet", _rows(2, noise)))
    s.ingest_shard(OTHER, "samples", f"{OTHER}/g1/a", _shard(tmp_path / "other.parquet", _rows(1, noise)))
    yield s
    s.close()


# ---------------------------------------------------------------- the rules, recomputed independently


def _flat() -> list[tuple[str, int, float]]:
    return [(sid, idx, r) for sid, by_idx in REWARDS.items() for idx, r in by_idx.items()]


def _by_source() -> dict[str, list[float]]:
    out = defaultdict(list)
    for sid, _, r in _flat():
        out[sid].append(r)
    return out


def expected_keep(rule: str, param: float | None) -> tuple[set[tuple[str, int]], float | None]:
    """(kept (source_id, sample_idx) keys, tau) by the rule's definition, without SQL."""
    rows, per = _flat(), _by_source()
    tau = None
    if rule == "thresholds":  # F(x, y; tau) = 1[R > tau]
        tau = param
        keep = {(s, i) for s, i, r in rows if r > param}
    elif rule == "percentile":  # per source: R >= the source's p-th percentile (linear interpolation)
        cut = {s: np.quantile(rs, param / 100.0, method="linear") for s, rs in per.items()}
        keep = {(s, i) for s, i, r in rows if r >= cut[s]}
    elif rule == "interpolation":  # per source: R >= g * max + (1 - g) * mean, in exact arithmetic
        g = Fraction(param)
        cut = {s: g * Fraction(max(rs)) + (1 - g) * sum(map(Fraction, rs)) / len(rs) for s, rs in per.items()}
        keep = {(s, i) for s, i, r in rows if Fraction(r) >= cut[s]}
    elif rule == "quantile":  # RAFT: one global quantile of the step's rewards
        tau = float(np.quantile([r for _, _, r in rows], param, method="linear"))
        keep = {(s, i) for s, i, r in rows if r >= tau}
    elif rule == "binary":
        keep = {(s, i) for s, i, r in rows if r == 1.0}
    else:  # pragma: no cover
        raise ValueError(rule)
    return keep, tau


CASES = [
    ("thresholds", 0.0),
    ("thresholds", 0.5),
    ("thresholds", 0.7),
    ("thresholds", 0.99),
    ("percentile", 0.0),
    ("percentile", 50.0),
    ("percentile", 70.0),
    ("percentile", 90.0),
    ("interpolation", 0.0),
    ("interpolation", 0.5),
    ("interpolation", 0.8),
    ("interpolation", 1.0),
    ("quantile", 0.0),
    ("quantile", 0.5),
    ("quantile", 0.8),
    ("binary", None),
]


@pytest.mark.parametrize("rule, param", CASES)
def test_filter_keeps_exactly_the_rule(store: Store, tmp_path: Path, rule: str, param: float | None):
    out = tmp_path / "kept.parquet"
    stats = store.apply_filter(CID, 1, 3, rule, param, out)
    want, tau = expected_keep(rule, param)
    assert want, "every case keeps something (else the test proves little)"

    got = pq.read_table(out).to_pylist()
    keys = [(r["source_id"], r["sample_idx"]) for r in got]
    assert set(keys) == want
    assert len(keys) == len(want)  # no duplicates
    assert keys == sorted(keys)  # ordered by (source_id, sample_idx)
    for r in got:  # each kept row carries its source (from the prompts), its text as target and its reward
        assert r["source"] == f"source {r['source_id']}"
        assert r["target"] == f"answer {r['source_id']}/{r['sample_idx']}"
        assert r["reward"] == REWARDS[r["source_id"]][r["sample_idx"]]

    kept_rewards = [REWARDS[s][i] for s, i in want]
    n_total = len(_flat())
    assert stats["kept"] == len(want) and stats["n_total"] == n_total
    assert stats["kept_mean_reward"] == pytest.approx(np.mean(kept_rewards), abs=1e-12)
    assert stats["kept_sources"] == len({s for s, _ in want})

    (row,) = store.filters(CID)
    assert (row["grow"], row["improve"], row["rule"]) == (1, 3, rule)
    assert row["param"] == param
    assert row["n_total"] == n_total and row["kept"] == len(want)
    assert row["kept_mean_reward"] == pytest.approx(np.mean(kept_rewards), abs=1e-12)
    if tau is None:
        assert row["tau"] is None
    else:
        assert row["tau"] == pytest.approx(tau, abs=1e-12)
    assert store.filters(OTHER) == []


def test_filter_decision_is_replaced_not_duplicated(store: Store, tmp_path: Path):
    """Re-running an Improve step (after a crash) re-applies its filter: one filters row per (grow,
    improve)."""
    store.apply_filter(CID, 1, 1, "thresholds", 0.0, tmp_path / "a.parquet")
    store.apply_filter(CID, 1, 1, "thresholds", 0.5, tmp_path / "a.parquet")
    store.apply_filter(CID, 1, 2, "thresholds", 0.7, tmp_path / "b.parquet")
    rows = store.filters(CID)
    assert [(r["improve"], r["param"]) for r in rows] == [(1, 0.5), (2, 0.7)]
    assert rows[0]["kept"] == len(expected_keep("thresholds", 0.5)[0])


def test_filter_on_the_other_grow_sees_only_its_rows(store: Store, tmp_path: Path):
    stats = store.apply_filter(CID, 2, 1, "thresholds", 0.995, tmp_path / "g2.parquet")
    assert stats["n_total"] == 2 * len(REWARDS)
    assert stats["kept"] == len(REWARDS)  # only the 1.0 of each source
    assert {r["sample_idx"] for r in pq.read_table(tmp_path / "g2.parquet").to_pylist()} == {0}


def test_ingesting_a_shard_twice_adds_its_rows_once(tmp_path: Path):
    s = Store(tmp_path / "once.duckdb")
    try:
        rows = _rows(1, REWARDS)
        path = _shard(tmp_path / "shard.parquet", rows)
        assert s.ingest_shard(CID, "samples", "shard-1", path) == len(rows)
        assert s.ingest_shard(CID, "samples", "shard-1", path) == 0
        assert s.shard_ids(CID) == {"shard-1"}
        n = s.query_value("SELECT count(*) FROM samples WHERE campaign_id = ?", [CID])
        assert n == len(rows)
        dup = s.query_value(
            "SELECT count(*) FROM "
            "(SELECT grow, source_id, sample_idx FROM samples GROUP BY ALL HAVING count(*) > 1)",
            [],
        )
        assert dup == 0
        # The columns land as written, with the campaign and shard ids filled in by the store.
        got = s.query_value(
            "SELECT list(struct_pack(s := source_id, i := sample_idx, r := reward, sh := shard_id) "
            "ORDER BY source_id, sample_idx) "
            "FROM samples WHERE campaign_id = ?",
            [CID],
        )
        assert {(g["s"], g["i"]): g["r"] for g in got} == {
            (r["source_id"], r["sample_idx"]): r["reward"] for r in rows
        }
        assert {g["sh"] for g in got} == {"shard-1"}
        assert s.samples_generated(CID) == sum(1 for r in rows if r["sample_idx"] >= 0)
    finally:
        s.close()


def test_ingest_survives_reopening_the_file(tmp_path: Path):
    """The shard record is durable: a new process (a resumed controller) still skips the shard."""
    db, path = tmp_path / "re.duckdb", _shard(tmp_path / "shard.parquet", _rows(1, REWARDS))
    s = Store(db)
    s.ingest_shard(CID, "samples", "shard-1", path)
    s.close()
    s = Store(db)
    try:
        assert s.ingest_shard(CID, "samples", "shard-1", path) == 0
        assert s.query_value("SELECT count(*) FROM samples", []) == len(_flat())
    finally:
        s.close()


def test_grow_stats_match_python(store: Store):
    rs = [r for _, _, r in _flat()]
    st = store.grow_stats(CID, 1)
    assert st["n"] == len(rs)
    assert st["n_generated"] == sum(1 for _, i, _ in _flat() if i >= 0)
    assert st["mean"] == pytest.approx(np.mean(rs), abs=1e-12)
    assert st["std"] == pytest.approx(np.std(rs), abs=1e-12)
    assert (st["min"], st["max"]) == (min(rs), max(rs))


@pytest.mark.parametrize("gamma", [0.0, 0.5, 0.8])
def test_interpolation_keeps_the_best_candidate_of_every_source(tmp_path: Path, gamma: float):
    """tau(x) <= max_reward(x) for every gamma in [0, 1], so each source keeps at least its best candidate.

    Identical candidates (a peaked policy often samples the same text K times) get identical rewards.
    """
    rng = np.random.default_rng(1)
    rewards = {
        str(i): {j: float(x) for j in range(n)} for i, (x, n) in enumerate(zip(rng.random(40), [3, 8] * 20))
    }
    s = Store(tmp_path / "ties.duckdb")
    try:
        s.add_prompts(CID, "train", [(sid, f"source {sid}", "r") for sid in rewards])
        s.ingest_shard(CID, "samples", "ties", _shard(tmp_path / "ties.parquet", _rows(1, rewards)))
        stats = s.apply_filter(CID, 1, 1, "interpolation", gamma, tmp_path / "kept.parquet")
        kept = {r["source_id"] for r in pq.read_table(tmp_path / "kept.parquet").to_pylist()}
        assert sorted(set(rewards) - kept, key=int) == []
        assert stats["kept"] == sum(len(v) for v in rewards.values())  # all tie with the max: all are kept
    finally:
        s.close()
