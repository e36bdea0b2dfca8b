"""Annotators rating at the same time: the Rate page's store calls under load, and real browsers.

Store load (always): `--annotators` threads (default 20) share one `engine.store.Store` on a fresh DuckDB
file, as the dashboard's sessions do. Each asks for a task (`next_task`, what the Rate page calls to show
one), waits a random `--think-ms` (scoring), and submits it through its view token (`submit_view`, what Submit
calls), `--per-annotator` times (default 50) or until nothing is left for them, over `--tasks` tasks that
each need `--required` ratings (defaults 300 and 3: 1000 requests for 900 slots).

Browser load (`--browser N`): a `restgov dashboard` on a free port of 127.0.0.1 against its own DuckDB file,
N annotator accounts signed in from N contexts of one headless Chromium (asyncio: every annotator clicks as
fast as the server answers, none waits for another), each scoring and submitting until the page says nothing
is left, over `--browser-tasks` tasks needing `--required` ratings.

For each load: ratings/s (rows stored over the wall time; for browsers from the moment all are signed
in), seconds per submit (p50 and p95: the `submit_view` call for threads; for browsers the Submit click
until its "Rating stored." / "Not stored" message shows), outcomes by kind, and the exact-count check read
from the store: no task above its required count, no annotator twice on a task, rows stored == submits
reported stored (for browsers, annotator by annotator), and how many tasks ended complete. The load
average (/proc/loadavg) is printed before and after.

    python bench/bench_annotators.py                       # 20 threads x 50 on 300 tasks x 3
    python bench/bench_annotators.py --browser 8           # and 8 browser annotators on 24 tasks x 3
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

import duckdb

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.store import Store, now  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
PASSWORD = "bench-pass"


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().strip()


def env_line() -> str:
    return (
        f"python {platform.python_version()}, duckdb {duckdb.__version__}, cpus {os.cpu_count()}, "
        f"loadavg {loadavg()}"
    )


def seed_tasks(store: Store, n: int, required: int, cid: str = "load") -> None:
    store.cursor().executemany(
        "INSERT INTO rating_tasks (campaign_id, batch, source_id, source, policy_a, text_a, policy_b, "
        "text_b, required_ratings, created_at) VALUES (?, 'b1', ?, ?, 'p', ?, 'q', ?, ?, ?)",
        [
            (cid, f"s{i}", f"What is {i} times 3?", f"It is {3 * i}.", f"Maybe {3 * i + 1}.", required, now())
            for i in range(n)
        ],
    )


def pct(xs: list[float], q: float) -> float:
    """The q-quantile (0..1) of xs, nearest rank; NaN when empty."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q * len(s) + 0.5) - 1))]


def exact_count(con, required: int) -> dict:
    """The exact-count check from the store: rows per task against `required`, pairs seen twice."""
    rows = con.execute("SELECT task_id, annotator FROM ratings").fetchall()
    (n_tasks,) = con.execute("SELECT count(*) FROM rating_tasks").fetchone()
    per_task = Counter(t for t, _ in rows)
    return {
        "rows": len(rows),
        "tasks": n_tasks,
        "complete": sum(n == required for n in per_task.values()),
        "over": sum(n > required for n in per_task.values()),
        "max_per_task": max(per_task.values(), default=0),
        "unrated": n_tasks - len(per_task),
        "twice": len(rows) - len(set(rows)),
    }


# ---------------------------------------------------------------- threads against the store
def store_load(db: Path, annotators: int, per: int, tasks: int, required: int, think_ms: float) -> dict:
    store = Store(db)
    seed_tasks(store, tasks, required)
    outcomes: list = []  # (annotator, code)
    submit_s: list[float] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(annotators)

    def annotator(k: int) -> None:
        who, rng = f"ann{k:02d}", random.Random(k)
        try:
            start.wait()
            for _ in range(per):
                task = store.next_task(who)
                if task is None:
                    break
                time.sleep(rng.uniform(0, think_ms / 1000))
                t0 = time.perf_counter()
                out = store.submit_view(task["view"], who, rng.randrange(7), rng.randrange(7))
                dt = time.perf_counter() - t0
                with lock:
                    outcomes.append((who, out.code))
                    submit_s.append(dt)
        except BaseException as e:  # noqa: BLE001 - reported with the table
            errors.append(e)

    threads = [threading.Thread(target=annotator, args=(k,)) for k in range(annotators)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise errors[0]
    check = exact_count(store.cursor(), required)
    store.close()
    codes = Counter(c for _, c in outcomes)
    return {
        "load": f"{annotators} threads x {per}, {tasks} tasks x {required}",
        "wall": wall,
        "submits": len(outcomes),
        "codes": codes,
        "p50": pct(submit_s, 0.5),
        "p95": pct(submit_s, 0.95),
        "check": check,
        "consistent": check["rows"] == codes["stored"],
    }


# ---------------------------------------------------------------- browsers against a dashboard
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_dashboard(db: Path, names: list[str], tasks: int, required: int, log_path: Path):
    store = Store(db)
    for name in names:
        store.add_user(name, "annotator", PASSWORD)
    seed_tasks(store, tasks, required)
    store.close()
    port = _free_port()
    log = open(log_path, "w")
    env = os.environ | {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "dashboard.cli", "dashboard", "--db", str(db), "--port", str(port)],
        cwd=db.parent,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while True:
        try:
            urllib.request.urlopen(base + "/_stcore/health", timeout=2)
            return proc, log, base
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                stop_dashboard(proc, log)
                sys.exit(f"error: the dashboard did not start; its log: {log_path}")
            time.sleep(0.5)


def stop_dashboard(proc, log) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    log.close()


async def _idle(page) -> None:
    """Wait for the page's script run to end (while it runs, the previous run's elements may still show)."""
    await page.locator("[data-testid=stApp][data-test-script-state=notRunning]").wait_for()


async def _score(page, view: str, side: str, score: int) -> None:
    await page.locator(f".st-key-rate_{side}_{view} button", has_text=str(score)).first.click()
    chosen = f'.st-key-rate_{side}_{view} button[aria-checked="true"]'
    await page.locator(chosen, has_text=str(score)).first.wait_for()
    await _idle(page)


async def _annotate(browser, base, name, limit, start, submit_s, shown) -> None:
    """One annotator: sign in, wait for everyone (`start`), then score and submit each task the page shows
    until nothing is left; returns when done."""
    ctx = await browser.new_context(viewport={"width": 1200, "height": 1600})
    page = await ctx.new_page()
    page.set_default_timeout(120_000)
    await page.goto(base + "/")
    await page.get_by_label("User name").fill(name)
    await page.get_by_role("textbox", name="Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_role("heading", name="Rate").wait_for()
    await start.wait()
    rng = random.Random(name)
    for k in range(1, limit + 1):
        await _idle(page)
        box = page.locator('[class*="st-key-rate_submit_"]').or_(page.get_by_text("Nothing left to rate"))
        await box.first.wait_for()
        m = re.search(r"st-key-rate_submit_([0-9a-f]+)", await box.first.get_attribute("class") or "")
        if m is None:
            break
        view = m.group(1)
        await _score(page, view, "left", rng.randrange(7))
        await _score(page, view, "right", rng.randrange(7))
        button = page.locator(f".st-key-rate_submit_{view} button:enabled").first
        await button.wait_for()
        t0 = time.perf_counter()
        await button.click()
        msg = page.locator(f".st-key-rate_outcome_{k}")
        await msg.wait_for()
        submit_s.append(time.perf_counter() - t0)
        shown.append((name, (await msg.inner_text()).strip()))
    await ctx.close()


async def _browsers(base: str, names: list[str], limit: int) -> tuple[list, list, float]:
    from playwright.async_api import async_playwright

    submit_s: list[float] = []
    shown: list[tuple[str, str]] = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-quic"]
        )
        start = asyncio.Barrier(len(names) + 1)  # timing starts once every annotator is signed in
        runs = asyncio.gather(*(_annotate(browser, base, n, limit, start, submit_s, shown) for n in names))
        await start.wait()
        t0 = time.perf_counter()
        await runs
        wall = time.perf_counter() - t0
        await browser.close()
    return submit_s, shown, wall


def browser_load(db: Path, n: int, tasks: int, required: int) -> dict:
    names = [f"rater{k:02d}" for k in range(n)]
    proc, log, base = start_dashboard(db, names, tasks, required, db.parent / "server.log")
    try:
        submit_s, shown, wall = asyncio.run(_browsers(base, names, tasks))
    finally:
        stop_dashboard(proc, log)  # the server holds the file until it stops
    with duckdb.connect(str(db), read_only=True) as con:
        check = exact_count(con, required)
        stored = Counter(a for (a,) in con.execute("SELECT annotator FROM ratings").fetchall())
    codes = Counter("stored" if t == "Rating stored." else "refused" for _, t in shown)
    confirmed = Counter(a for a, t in shown if t == "Rating stored.")
    return {
        "load": f"{n} browser contexts, {tasks} tasks x {required}",
        "wall": wall,
        "submits": len(shown),
        "codes": codes,
        "p50": pct(submit_s, 0.5),
        "p95": pct(submit_s, 0.95),
        "check": check,
        "consistent": check["rows"] == codes["stored"] and stored == confirmed,
    }


def row(r: dict) -> str:
    c = r["check"]
    codes = ", ".join(f"{k} {v}" for k, v in sorted(r["codes"].items()))
    ok = c["over"] == 0 and c["twice"] == 0 and r["consistent"]
    return (
        f"| {r['load']} | {r['submits']} | {codes} | {c['rows']} | {r['wall']:.1f} | "
        f"{c['rows'] / r['wall']:.1f} | {r['p50']:.3f} | {r['p95']:.3f} | "
        f"{c['complete']} / {c['tasks']} | {c['over']} (max {c['max_per_task']}) | {c['unrated']} | "
        f"{c['twice']} | {'yes' if ok else 'NO'} |"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--annotators", type=int, default=20, help="annotator threads (default 20)")
    p.add_argument("--per-annotator", type=int, default=50, help="requests per thread (default 50)")
    p.add_argument("--tasks", type=int, default=300, help="tasks for the threads (default 300)")
    p.add_argument("--required", type=int, default=3, help="ratings each task needs (default 3)")
    p.add_argument("--think-ms", type=float, default=5.0, help="max scoring pause per task (default 5)")
    p.add_argument("--browser", type=int, default=0, metavar="N", help="N browser annotators (default 0)")
    p.add_argument("--browser-tasks", type=int, default=0, help="tasks for them (default 3 per browser)")
    p.add_argument("--out", default=str(ROOT / "bench" / "out"), help="work folder (default bench/out)")
    a = p.parse_args(argv)
    work = Path(a.out) / f"annotators-{os.getpid()}"
    work.mkdir(parents=True, exist_ok=True)
    print(f"before: {env_line()}")
    results = [
        store_load(work / "threads.duckdb", a.annotators, a.per_annotator, a.tasks, a.required, a.think_ms)
    ]
    print(f"threads done in {results[0]['wall']:.1f} s", file=sys.stderr)
    if a.browser:
        if not Path(CHROMIUM).exists():
            sys.exit(f"error: {CHROMIUM} is missing (apt-get install chromium) for --browser")
        (work / "dash").mkdir(exist_ok=True)
        results.append(
            browser_load(
                work / "dash" / "restgov.duckdb", a.browser, a.browser_tasks or 3 * a.browser, a.required
            )
        )
    print(f"after: loadavg {loadavg()}")
    print()
    print(
        "| load | submits | outcomes | rows | wall s | ratings/s | p50 s/submit | p95 s/submit | complete "
        "| tasks over | unrated | pairs twice | exact count |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in results:
        print(row(r))
    bad = [r for r in results if r["check"]["over"] or r["check"]["twice"] or not r["consistent"]]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
