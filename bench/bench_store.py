"""Store at the paper's scale: ingest two Grow steps of synthetic samples (default 16M each = 160k sources x
K=100) through engine.store.Store; time the reward histogram, grow_stats and apply_filter (percentile,
thresholds) on the first, and the hacking check (engine.drift.hacking_report) and drift_report between them.

Grow 2 is an honest improvement of Grow 1: rewards a little higher, lengths and texts drawn alike, 2 nats
from the BC policy, still below the references' reward; the hacking check must raise no alarm on it.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from engine.drift import drift_report, hacking_report
from engine.steps.grow import REF_SCHEMA, SAMPLE_SCHEMA
from engine.store import Store

CID, GROW, LATEST = "bench", 1, 2  # GROW: the BC policy's step; LATEST: the step under review
# The dashboard's per-step reward histogram (its query is not written yet): one row per non-empty bin.
HIST_SQL = """
SELECT least(CAST(floor(reward * $bins) AS INTEGER), $bins - 1) AS bin, count(*) AS n
FROM samples WHERE campaign_id = $cid AND grow = $grow
GROUP BY bin ORDER BY bin
"""


def vocabulary(rng: np.random.Generator, n: int = 512) -> pa.Array:
    """n distinct pseudo-words of 2-7 letters."""
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words: set[str] = set()
    while len(words) < n:
        words.add("".join(rng.choice(letters, rng.integers(2, 8))))
    return pa.array(sorted(words))


def sentences(rng: np.random.Generator, vocab: pa.Array, n: int, n_words: int) -> pa.Array:
    """n strings of n_words words drawn uniformly from vocab, built column-wise (no Python loop over rows)."""
    cols = [vocab.take(pa.array(rng.integers(0, len(vocab), n))) for _ in range(n_words)]
    return pc.binary_join_element_wise(*cols, " ")


def const(value: str, n: int) -> pa.Array:
    return pa.array([value]).take(pa.array(np.zeros(n, dtype=np.int32)))


def make_shard(rng, vocab, first: int, n_sources: int, k: int, grow: int) -> pa.Table:
    n = n_sources * k
    src = np.repeat(np.arange(first, first + n_sources), k)
    lp = -rng.gamma(4.0, 5.0, n)
    return pa.table(
        {
            "grow": np.full(n, grow, dtype=np.int32),
            "source_id": pc.cast(pa.array(src), pa.string()),
            "sample_idx": np.tile(np.arange(k, dtype=np.int32), n_sources),
            "text": sentences(rng, vocab, n, 7),  # ~40 characters
            "n_tokens": rng.integers(6, 30, n).astype(np.int32),
            "sum_logprob": lp,
            "policy": const("base" if grow == 1 else f"g{grow - 1}-final", n),
            # Mean 0.71, like the paper's BC reward; 0.75 at the next step.
            "reward": rng.beta(5.0, 2.0, n) if grow == 1 else rng.beta(6.0, 2.0, n),
            "reward_version": const("bench-reward-v1", n),
            # Not computed for the BC policy's own samples; 2 nats per sample from it afterwards.
            "base_logprob": pa.nulls(n, pa.float64()) if grow == 1 else pa.array(lp - rng.gamma(2.0, 1.0, n)),
        },
        schema=SAMPLE_SCHEMA,
    )


def make_refs(rng, first: int, n_sources: int, grow: int) -> pa.Table:
    """The reward of each source's reference at a Grow step (mean 0.8)."""
    return pa.table(
        {
            "grow": np.full(n_sources, grow, dtype=np.int32),
            "source_id": pc.cast(pa.array(np.arange(first, first + n_sources)), pa.string()),
            "reward": rng.beta(8.0, 2.0, n_sources),
            "reward_version": const("bench-reward-v1", n_sources),
        },
        schema=REF_SCHEMA,
    )


def generate(shard_dir: Path, n_sources: int, k: int, sources_per_shard: int, seed: int) -> None:
    """Runs in a child process, so the parent's peak RSS measures the store alone."""
    rng = np.random.default_rng(seed)
    vocab = vocabulary(rng)
    shard_dir.mkdir(parents=True, exist_ok=True)
    for g in (GROW, LATEST):
        for j, first in enumerate(range(0, n_sources, sources_per_shard)):
            m = min(sources_per_shard, n_sources - first)
            pq.write_table(
                make_shard(rng, vocab, first, m, k, g), shard_dir / f"samples-g{g}-{j:05d}.parquet"
            )
            pq.write_table(make_refs(rng, first, m, g), shard_dir / f"refs-g{g}-{j:05d}.parquet")
    n = np.arange(n_sources)
    prompts = pa.table(
        {
            "source_id": pc.cast(pa.array(n), pa.string()),
            "source": sentences(rng, vocab, n_sources, 8),
            "reference": sentences(rng, vocab, n_sources, 7),
        }
    )
    pq.write_table(prompts, shard_dir / "prompts.parquet")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def timed(fn, repeats: int):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times, out


def size_mib(*paths: Path) -> float:
    return sum(p.stat().st_size for p in paths if p.exists()) / 2**20


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--rows", type=int, default=16_000_000, help="samples in the Grow step (sources = rows / K)"
    )
    ap.add_argument("--k", type=int, default=100, help="samples per source")
    ap.add_argument("--shard-rows", type=int, default=1_000_000, help="rows per Parquet shard")
    ap.add_argument(
        "--workdir",
        type=Path,
        default=Path(__file__).parent / "out",
        help="shards, DuckDB file, filter output",
    )
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats of each query (median reported)")
    ap.add_argument(
        "--reuse-shards", action="store_true", help="keep shards from an earlier run with the same sizes"
    )
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    load0 = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    n_sources, per_shard = args.rows // args.k, max(1, args.shard_rows // args.k)
    rows = n_sources * args.k
    work = args.workdir / f"store-{rows}"
    shard_dir, db = work / "shards", work / "bench.duckdb"
    manifest = {"rows": rows, "k": args.k, "sources_per_shard": per_shard, "seed": args.seed, "grows": 2}
    marker = shard_dir / "manifest.json"
    results = []
    if args.reuse_shards and marker.exists() and json.loads(marker.read_text()) == manifest:
        print(f"reusing shards in {shard_dir}", file=sys.stderr)
    else:
        shutil.rmtree(shard_dir, ignore_errors=True)
        t0 = time.perf_counter()
        p = mp.get_context("spawn").Process(
            target=generate, args=(shard_dir, n_sources, args.k, per_shard, args.seed)
        )
        p.start()
        p.join()
        if p.exitcode != 0:
            raise SystemExit(f"shard generation failed (exit {p.exitcode})")
        marker.write_text(json.dumps(manifest))
        child_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        results.append(
            (
                "generate shards, both steps (pyarrow/numpy, child process)",
                2 * rows,
                time.perf_counter() - t0,
                None,
                f"child peak RSS {child_rss:.0f} MiB (not counted in the next rows)",
            )
        )
    shards = {g: sorted(shard_dir.glob(f"samples-g{g}-*.parquet")) for g in (GROW, LATEST)}
    refs = {g: sorted(shard_dir.glob(f"refs-g{g}-*.parquet")) for g in (GROW, LATEST)}
    print(
        f"{len(shards[GROW])} shards per step, {size_mib(*shards[GROW], *shards[LATEST]):.0f} MiB of Parquet",
        file=sys.stderr,
    )

    for f in (db, db.with_name(db.name + ".wal")):
        f.unlink(missing_ok=True)
    store = Store(db)
    cur = store.cursor()
    threads, mem = cur.execute(
        "SELECT current_setting('threads'), current_setting('memory_limit')"
    ).fetchone()
    rss0 = peak_rss_mib()

    t0 = time.perf_counter()
    store.add_prompts(
        CID, "train", [tuple(r.values()) for r in pq.read_table(shard_dir / "prompts.parquet").to_pylist()]
    )
    results.append(
        ("Store.add_prompts (train split)", n_sources, time.perf_counter() - t0, peak_rss_mib(), "")
    )

    # The per-source figures are computed inside ingest_shard; time that part of it.
    stats_s: list[float] = []
    record = store.record_source_stats

    def record_timed(cur, cid: str, shard_id: str) -> int:
        t0 = time.perf_counter()
        try:
            return record(cur, cid, shard_id)
        finally:
            stats_s.append(time.perf_counter() - t0)

    store.record_source_stats = record_timed

    def ingest(g: int) -> None:
        stats_s.clear()
        t0 = time.perf_counter()
        per = []
        for j, path in enumerate(shards[g]):
            t1 = time.perf_counter()
            n = store.ingest_shard(CID, "samples", f"{CID}-g{g}-{j:05d}", path)
            assert n == pq.ParquetFile(path).metadata.num_rows
            per.append(time.perf_counter() - t1)
        results.append(
            (
                f"Store.ingest_shard, grow {g} (samples and their source_stats)",
                rows,
                time.perf_counter() - t0,
                peak_rss_mib(),
                f"{len(shards[g])} shards, per shard median {statistics.median(per):.2f} s, "
                f"max {max(per):.2f} s; source_stats {sum(stats_s):.2f} s of it",
            )
        )

    def checkpoint() -> None:
        t0 = time.perf_counter()
        cur.execute("CHECKPOINT")
        results.append(
            (
                "CHECKPOINT (WAL into the file)",
                rows,
                time.perf_counter() - t0,
                peak_rss_mib(),
                f"DB file {size_mib(db, db.with_name(db.name + '.wal')):.0f} MiB",
            )
        )

    ingest(GROW)
    checkpoint()
    assert store.ingest_shard(CID, "samples", f"{CID}-g{GROW}-00000", shards[GROW][0]) == 0  # idempotent

    params = {"bins": 50, "cid": CID, "grow": GROW}
    med, ts, hist = timed(lambda: cur.execute(HIST_SQL, params).fetchall(), args.repeats)
    assert sum(n for _, n in hist) == rows
    results.append(("reward histogram (50 bins, GROUP BY)", rows, med, peak_rss_mib(), f"{len(hist)} bins"))
    med, ts, stats = timed(lambda: store.grow_stats(CID, GROW), args.repeats)
    results.append(("Store.grow_stats", rows, med, peak_rss_mib(), f"mean reward {stats['mean']:.3f}"))
    for improve, (rule, param) in enumerate((("percentile", 90.0), ("thresholds", 0.9)), start=1):
        out = work / f"kept-{rule}.parquet"
        med, ts, st = timed(
            lambda rule=rule, param=param, improve=improve, out=out: store.apply_filter(
                CID, GROW, improve, rule, param, out
            ),
            args.repeats,
        )
        results.append(
            (
                f"Store.apply_filter {rule} {param:g}",
                rows,
                med,
                peak_rss_mib(),
                f"kept {st['kept']:,} ({st['kept'] / rows:.1%}), {st['kept_sources']:,} sources, "
                f"output {size_mib(out):.0f} MiB",
            )
        )

    ingest(LATEST)
    t0 = time.perf_counter()
    for g in (GROW, LATEST):
        for j, path in enumerate(refs[g]):
            store.ingest_shard(CID, "refs", f"{CID}-refs-g{g}-{j:05d}", path)
    results.append(
        (
            "Store.ingest_shard, reference rewards of both steps",
            2 * n_sources,
            time.perf_counter() - t0,
            peak_rss_mib(),
            f"{len(refs[GROW]) + len(refs[LATEST])} shards",
        )
    )
    checkpoint()

    # The hacking check between the two steps: the first call also checks, once per process, that every
    # samples shard has its source_stats; the median is of the calls after it.
    t0 = time.perf_counter()
    hacking_report(store, CID, GROW, LATEST)
    first = time.perf_counter() - t0
    med, ts, rep = timed(lambda: hacking_report(store, CID, GROW, LATEST), args.repeats)
    assert rep["alarms"] == [], rep["alarms"]
    f = rep["figures"]
    results.append(
        (
            f"hacking_report grow {GROW} vs grow {LATEST}",
            2 * rows,
            med,
            peak_rss_mib(),
            f"runs {', '.join(f'{t:.2f}' for t in ts)} s, first call {first:.2f} s; no alarm; "
            f"mean reward {f['mean_reward']['a']:.3f} -> {f['mean_reward']['b']:.3f}, "
            f"length ratio {f['length']['ratio']:.3f}, "
            f"unique share drop {f['diversity']['unique_share_drop']:.4f}, "
            f"distinct-2 drop {f['diversity']['distinct_2_drop']:.4f} ({f['diversity']['n_texts']:,} texts), "
            f"KL {f['kl']['nats']:.2f} nats, ceiling share rise {f['ceiling']['rise']:.4f}, "
            f"generated - references {f['references']['excess']:.3f}",
        )
    )
    parts = (
        ("step_summary (source_stats)", lambda g: store.step_summary(CID, g)),
        ("distinct_n (20,000 texts, up to 10 per source)", lambda g: store.distinct_n(CID, g, 20_000)),
        ("reward_at_least (scan of reward)", lambda g: store.reward_at_least(CID, g, 0.99)),
        (
            "reference_comparison (source_stats x reference_rewards)",
            lambda g: store.reference_comparison(CID, g),
        ),
    )
    for name, fn in parts:
        med, ts, _ = timed(lambda fn=fn: [fn(g) for g in (GROW, LATEST)], args.repeats)
        results.append((f"  of which {name}, both steps", 2 * rows, med, peak_rss_mib(), ""))
    former = (
        "SELECT avg(k) FROM (SELECT count(DISTINCT hash(text)) / count(*) AS k FROM samples "
        "WHERE campaign_id = ? AND grow = ? AND sample_idx >= 0 GROUP BY source_id)"
    )
    med, ts, _ = timed(lambda: [cur.execute(former, [CID, g]).fetchone() for g in (GROW, LATEST)], 1)
    results.append(
        (
            "unique share by GROUP BY over samples (before source_stats), both steps",
            2 * rows,
            med,
            peak_rss_mib(),
            "for comparison, one run",
        )
    )
    med, ts, drep = timed(lambda: drift_report(store, CID, GROW, LATEST), args.repeats)
    results.append(
        (
            "drift_report (hacking_report + W1/KS of reward and length)",
            2 * rows,
            med,
            peak_rss_mib(),
            f"runs {', '.join(f'{t:.2f}' for t in ts)} s; alarms {[al['check'] for al in drep['alarms']]}",
        )
    )
    store.close()
    db_mib = size_mib(db, db.with_name(db.name + ".wal"))

    print(
        f"\nStore: 2 Grow steps of {rows:,} samples = {n_sources:,} sources x K={args.k}, "
        f"{len(shards[GROW])} Parquet shards each; "
        f"DuckDB threads={threads}, memory_limit={mem}; query times are the median of {args.repeats}\n"
    )
    print("| operation | rows | seconds | rows/s | peak RSS MiB (cumulative) | notes |")
    print("|---|---:|---:|---:|---:|---|")
    for name, n, s, rss, note in results:
        rss_s = f"{rss:.0f}" if rss is not None else "n/a"
        rate = "" if name.startswith("CHECKPOINT") else f"{n / s:,.0f}"
        print(f"| {name} | {n:,} | {s:.2f} | {rate} | {rss_s} | {note} |")
    print(
        f"\nDuckDB file after all steps: {db_mib:.0f} MiB ({db_mib * 2**20 / (2 * rows):.0f} bytes/sample); "
        f"peak RSS before opening the store {rss0:.0f} MiB, at the end {peak_rss_mib():.0f} MiB"
    )
    print(
        f"load avg (1/5/15 min) at start: {load0}; at end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
