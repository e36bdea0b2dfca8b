"""The dashboard at the paper's scale: time each SQL aggregation of engine/store/views.py and the whole Reward
distributions page (streamlit AppTest: with empty and with warm st.cache_data) on a Grow step of 16M samples.

Reuses the store written by bench/bench_store.py (only reads it: a copy is made under
bench/out/dashboard-<rows>/).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

import duckdb
import streamlit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.config import CampaignConfig, DataConfig, config_to_dict  # noqa: E402

CID, GROW = "bench", 1  # what bench_store.py writes
TAUS = [0.0, 0.7, 0.8, 0.9, 0.95, 0.99]
NS = [1, 2, 4, 8, 16, 32, 64, 100]


def env_line() -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"python {platform.python_version()}, duckdb {duckdb.__version__}, "
        f"streamlit {streamlit.__version__}, "
        f"cpus {os.cpu_count()}, load avg (1/5/15 min) {load}"
    )


def prepare(rows: int, out: Path) -> Path:
    src = ROOT / "bench" / "out" / f"store-{rows}" / "bench.duckdb"
    db = out / f"dashboard-{rows}" / "bench.duckdb"
    if not db.exists():
        if not src.exists():
            sys.exit(f"error: {src} is missing; run `python bench/bench_store.py --rows {rows}` first")
        db.parent.mkdir(parents=True, exist_ok=True)
        print(f"copying {src} -> {db}", file=sys.stderr)
        shutil.copyfile(src, db)
    return db


def timed(fn, repeats: int) -> tuple[float, float, object]:
    """(first call, median of the next `repeats`, the last result)."""
    t0 = time.perf_counter()
    out = fn()
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return first, statistics.median(times) if times else first, out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--rows", type=int, default=16_000_000, help="which bench_store.py output to use (default 16M)"
    )
    p.add_argument("--repeats", type=int, default=3, help="timed repeats after the first call (default 3)")
    p.add_argument("--out", default=str(ROOT / "bench" / "out"), help="work folder (default bench/out)")
    a = p.parse_args(argv)
    db = prepare(a.rows, Path(a.out))
    os.environ["RESTGOV_DB"] = str(db)
    from dashboard import service  # noqa: E402  (after RESTGOV_DB: the page reads it)

    store = service._service(str(db)).store
    if store.campaign(CID) is None:  # bench_store.py writes samples only; the pages need the campaign row
        cfg = config_to_dict(
            CampaignConfig(name="bench", data=DataConfig(train="train.jsonl", validation="val.jsonl"))
        )
        store.create_campaign(CID, "bench", "rest", cfg, str(db.parent), actor="bench")
    (n,) = (
        store.cursor()
        .execute("SELECT count(*) FROM samples WHERE campaign_id = ? AND grow = ?", [CID, GROW])
        .fetchone()
    )
    print(f"store {db}: {n:,} samples in grow {GROW}", file=sys.stderr)

    cases = [
        ("reward_grows", lambda: store.reward_grows(CID), lambda r: f"{r}"),
        (
            "reward_histogram (50 bins, all steps, with ECDF)",
            lambda: store.reward_histogram(CID, 50),
            lambda r: f"{len(r)} bins",
        ),
        (
            "kept_shares (6 thresholds)",
            lambda: store.kept_shares(CID, GROW, TAUS),
            lambda r: ", ".join(f"{k['tau']}: {k['share']:.1%}" for k in r),
        ),
        (
            "source_percentiles (50 bands, 2 taus)",
            lambda: store.source_percentiles(CID, GROW, 50, [0.8, 0.9]),
            lambda r: f"{r['n_sources']:,} of {r['n_sources_total']:,} sources",
        ),
        (
            "reward_vs_length (20 x 24 bins)",
            lambda: store.reward_vs_length(CID, GROW),
            lambda r: f"{len(r['cells'])} cells",
        ),
        (
            "grow_best_of_n (N = 1..100)",
            lambda: store.grow_best_of_n(CID, GROW, NS),
            lambda r: (
                f"N=1 {r[0]['best_of_n']:.4f}, N=100 {r[-1]['best_of_n']:.4f}, {r[0]['sources']:,} sources"
            ),
        ),
        (
            "samples_between (reward 0.9..1.0, top 20, with sources)",
            lambda: store.samples_between(CID, GROW, 0.9, 1.0),
            lambda r: f"{len(r)} rows",
        ),
        ("campaign_list", lambda: store.campaign_list(), lambda r: f"{len(r)} campaigns"),
    ]
    results = []
    for name, fn, note in cases:
        first, med, out = timed(fn, a.repeats)
        results.append((name, first, med, note(out)))
        print(f"{name}: {first:.2f} s", file=sys.stderr)

    from streamlit.testing.v1 import AppTest

    def render() -> int:
        at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=120)
        at.session_state["user"] = {"name": "bench", "role": "auditor"}
        at.session_state["cid"] = CID
        at.run()
        assert not at.exception, at.exception
        return sum(1 for e in at.get("plotly_chart"))

    def cold_render() -> int:
        streamlit.cache_data.clear()  # what a new shard or a state change does: every query runs again
        return render()

    first, warm, charts = timed(render, a.repeats)  # the first render also imports plotly and warms DuckDB
    _, cold, _ = timed(cold_render, a.repeats)
    results.append(
        (
            "Reward distributions page, first render of the process",
            first,
            first,
            f"{charts} Plotly charts (histogram, ECDF, the open tab)",
        )
    )
    results.append(
        (
            "Reward distributions page, render with empty st.cache_data",
            cold,
            cold,
            "every query of the view runs",
        )
    )
    results.append(("Reward distributions page, render with cached queries", warm, warm, "a widget click"))

    def open_tab(tab: str):
        def run() -> None:
            streamlit.cache_data.clear()
            at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=120)
            at.session_state["user"] = {"name": "bench", "role": "auditor"}
            at.session_state["cid"] = CID
            at.session_state["dist_tabs"] = tab
            at.run()
            assert not at.exception, at.exception

        return run

    for tab in ("Reward vs length", "Best-of-N"):
        _, t, _ = timed(open_tab(tab), a.repeats)
        results.append((f"Reward distributions page with the {tab} tab open, empty st.cache_data", t, t, ""))

    print(f"\n{env_line()}\n")
    print(f"| query ({n:,} samples in the step) | first call (s) | median of {a.repeats} (s) | result |")
    print("|---|---:|---:|---|")
    for name, first, med, note in results:
        print(f"| {name} | {first:.2f} | {med:.2f} | {note} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
