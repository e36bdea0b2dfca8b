"""Six annotators rate at once in one headless Chromium (one context each) against the real dashboard.

Their Submit clicks land back to back on the same few tasks, so some reach the store after the task got its
required ratings. Every click must end in a message on its page, "Rating stored." or "Not stored: <why>",
and the store must hold exactly as many ratings as the pages confirmed.
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


def _sign_in(page, base: str, name: str) -> None:
    page.goto(base + "/")
    page.get_by_label("User name").fill(name)
    page.get_by_role("textbox", name="Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Rate").wait_for()


def _view(page) -> str | None:
    """The view token of the task on the page, or None once nothing is left for this annotator."""
    submit = page.locator('[class*="st-key-rate_submit_"]').or_(page.get_by_text("Nothing left to rate"))
    submit.first.wait_for()
    cls = submit.first.get_attribute("class") or ""
    m = re.search(r"st-key-rate_submit_([0-9a-f]+)", cls)
    return m.group(1) if m else None


def test_concurrent_annotators_each_click_gets_an_outcome_and_the_store_matches(server, browser):  # noqa: F811
    base = server["base"]
    contexts = [browser.new_context(viewport={"width": 1200, "height": 1600}) for _ in ANNOTATORS]
    pages = {}
    for name, ctx in zip(ANNOTATORS, contexts):
        pages[name] = ctx.new_page()
        pages[name].set_default_timeout(30_000)
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
            page.locator(f".st-key-rate_left_{view} button", has_text="4").click()
            page.locator(f".st-key-rate_right_{view} button", has_text="2").click()
            page.locator(f".st-key-rate_submit_{view} button:enabled").wait_for()
            ready[name] = view
        if not ready:
            break
        for name, view in ready.items():  # the clicks land back to back
            pages[name].locator(f".st-key-rate_submit_{view} button").click()
            clicks[name] += 1
        for name in ready:  # each click's own message, numbered per page
            box = pages[name].locator(f".st-key-rate_outcome_{clicks[name]}")
            box.wait_for()
            shown[name].append(box.inner_text().strip())
    for ctx in contexts:
        ctx.close()
    print("outcomes shown:", shown)

    confirmed = {name: sum(t == "Rating stored." for t in msgs) for name, msgs in shown.items()}
    refused = {name: sum(t.startswith("Not stored:") for t in msgs) for name, msgs in shown.items()}
    for name in ANNOTATORS:  # every click got exactly one visible outcome, and it is one of the two kinds
        assert len(shown[name]) == clicks[name] == confirmed[name] + refused[name], shown[name]
    assert sum(clicks.values()) > N_TASKS * REQUIRED  # more clicks than ratings wanted: some were refused
    assert sum(refused.values()) >= 1
    server["stop"]()  # the server holds the store until it stops
    with duckdb.connect(str(server["db"]), read_only=True) as con:
        rows = con.execute("SELECT task_id, annotator FROM ratings").fetchall()
    stored = {name: sum(a == name for _, a in rows) for name in ANNOTATORS}
    assert stored == confirmed  # rows stored == confirmations shown, annotator by annotator
    assert len(set(rows)) == len(rows)
    assert all(n <= REQUIRED for n in Counter(t for t, _ in rows).values())
