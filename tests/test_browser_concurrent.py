"""Six annotators rate at once in one headless Chromium (one context each) against the real dashboard.

Four tasks need two ratings each: eight places for six annotators, whose Submit clicks land back to back.
Each task served is held for the annotator it was served to, so every click ends in "Rating stored.", the
annotators left over are told nothing is left, and the store ends with every task at exactly its required
count: as many ratings as the pages confirmed, none twice by one annotator.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import urllib.request
from collections import Counter

import duckdb
import pytest
from test_browser import CHROMIUM_ARGS, DASHBOARD_CLI, ROOT, _free_port, browser  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

ANNOTATORS = [f"rater{k}" for k in range(6)]
PASSWORD = "rater-pass"
N_TASKS, REQUIRED, ROUNDS = 4, 2, 3


@pytest.fixture
def server(tmp_path):
    """A dashboard server on a free port with six annotator accounts and four tasks needing two ratings each;
    `stop()` ends it so that the test can read the store."""
    from engine.controller_service import open_store
    from engine.store import now

    db = tmp_path / "db" / "restgov.duckdb"
    store = open_store(db)
    try:
        for name in ANNOTATORS:
            store.add_user(name, "annotator", PASSWORD)
        for i in range(N_TASKS):
            store.cursor().execute(
                "INSERT INTO rating_tasks (campaign_id, batch, source_id, source, policy_a, text_a, "
                "policy_b, text_b, required_ratings, created_at) "
                "VALUES ('crowd', 'b1', ?, ?, 'pa', ?, 'pb', ?, ?, ?)",
                [f"s{i}", f"What is {i} times 3?", f"It is {3 * i}.", f"Maybe {3 * i + 1}.", REQUIRED, now()],
            )
    finally:
        store.close()
    port = _free_port()
    log = open(tmp_path / "server.log", "w")
    env = os.environ | {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [*DASHBOARD_CLI, "dashboard", "--db", str(db), "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )

    def stop() -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()

    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            urllib.request.urlopen(base + "/_stcore/health", timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                stop()
                tail = (tmp_path / "server.log").read_text()[-3000:]
                raise RuntimeError(f"dashboard did not start:\n{tail}") from None
            time.sleep(0.5)
    yield {"base": base, "db": db, "stop": stop}
    stop()


def _idle(page) -> None:
    """Wait for the page's script run to end: while it runs, the elements of the previous run (another task,
    or the same one at another place) can still be on the page beside the new ones."""
    page.locator("[data-testid=stApp][data-test-script-state=notRunning]").wait_for()


def _score(page, view: str, side: str, score: int) -> None:
    """Choose `score` for one candidate and wait for the run that records it to end (`first`: the previous
    run's copy of the control may still be on the page while it runs)."""
    page.locator(f".st-key-rate_{side}_{view} button", has_text=str(score)).first.click()
    chosen = f'.st-key-rate_{side}_{view} button[aria-checked="true"]'
    page.locator(chosen, has_text=str(score)).first.wait_for()
    _idle(page)


def _sign_in(page, base: str, name: str) -> None:
    page.goto(base + "/")
    page.get_by_label("User name").fill(name)
    page.get_by_role("textbox", name="Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Rate").wait_for()


def _view(page) -> str | None:
    """The view token of the task on the page, or None once nothing is left for this annotator."""
    _idle(page)
    submit = page.locator('[class*="st-key-rate_submit_"]').or_(page.get_by_text("Nothing left to rate"))
    submit.first.wait_for()
    cls = submit.first.get_attribute("class") or ""
    m = re.search(r"st-key-rate_submit_([0-9a-f]+)", cls)
    return m.group(1) if m else None


def test_concurrent_annotators_fill_every_task_exactly_and_each_click_is_stored(server, browser):  # noqa: F811
    base = server["base"]
    contexts = [browser.new_context(viewport={"width": 1200, "height": 1600}) for _ in ANNOTATORS]
    pages = {}
    for name, ctx in zip(ANNOTATORS, contexts):
        pages[name] = ctx.new_page()
        pages[name].set_default_timeout(60_000)
        _sign_in(pages[name], base, name)
    clicks = {name: 0 for name in ANNOTATORS}
    shown: dict[str, list[str]] = {name: [] for name in ANNOTATORS}
    for _ in range(ROUNDS):
        # Everyone scores the task on their screen; nobody submits yet, so no page changes task meanwhile.
        ready = {}
        for name, page in pages.items():
            view = _view(page)
            if view is None:
                continue
            _score(page, view, "left", 4)
            _score(page, view, "right", 2)
            page.locator(f".st-key-rate_submit_{view} button:enabled").first.wait_for()
            _idle(page)
            ready[name] = view
        if not ready:
            break
        for name, view in ready.items():  # the clicks land back to back
            pages[name].locator(f".st-key-rate_submit_{view} button").first.click()
            clicks[name] += 1
        for name in ready:  # each click's own message, numbered per page
            box = pages[name].locator(f".st-key-rate_outcome_{clicks[name]}")
            box.wait_for()
            shown[name].append(box.inner_text().strip())
    done = [name for name, page in pages.items() if _view(page) is None]
    for ctx in contexts:
        ctx.close()
    print("outcomes shown:", shown)

    confirmed = {name: sum(t == "Rating stored." for t in msgs) for name, msgs in shown.items()}
    for name in ANNOTATORS:  # every click got exactly one visible outcome, and it was stored
        assert len(shown[name]) == clicks[name] == confirmed[name], shown[name]
    assert sum(clicks.values()) == N_TASKS * REQUIRED  # one click per place: none wasted on a full task
    assert done == ANNOTATORS  # and then every page says nothing is left
    server["stop"]()  # the server holds the store until it stops
    with duckdb.connect(str(server["db"]), read_only=True) as con:
        rows = con.execute("SELECT task_id, annotator FROM ratings").fetchall()
        (held,) = con.execute("SELECT count(*) FROM rating_views WHERE leased_until IS NOT NULL").fetchone()
    stored = {name: sum(a == name for _, a in rows) for name in ANNOTATORS}
    assert stored == confirmed  # rows stored == confirmations shown, annotator by annotator
    assert len(set(rows)) == len(rows)  # no annotator rated a task twice
    assert Counter(t for t, _ in rows) == {t: REQUIRED for t in range(1, N_TASKS + 1)}  # exactly, each task
    assert held == 0  # every place served was completed
