"""The real dashboard in headless Debian Chromium (Playwright): `restgov dashboard` on a free port of
127.0.0.1 against a DuckDB file in a temp folder, accounts made with `restgov users add`.

Each test saves a screenshot of every page it visits under test-artifacts/<test name>/.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import write_tiny_campaign

from engine.controller_service import TINY_OVERRIDES

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
# `restgov dashboard` and `restgov users` (dashboard/cli.py, also reachable as `python -m dashboard.cli`).
DASHBOARD_CLI = [sys.executable, "-m", "dashboard.cli"]
PASSWORDS = {"olga": "operator-pass", "ann": "annotator-pass"}
# Rating tasks seeded before the server starts; their policy names must never reach the annotator's screen.
SEEDED_TASKS = [
    (f"What is {i} + {i}?", f"The answer is {2 * i}.", f"It makes {2 * i + 1}.") for i in range(3)
]

if not Path(CHROMIUM).exists():
    pytest.skip(
        f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium) to run browser tests",
        allow_module_level=True,
    )
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (Python) is not installed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A dashboard server process on a free port; yields its base URL. Its log is kept with the artifacts."""
    root = tmp_path_factory.mktemp("browser")
    db = root / "db" / "restgov.duckdb"
    db.parent.mkdir()  # `users add` creates the file, never its folder
    env = os.environ | {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    for name, role in (("olga", "operator"), ("ann", "annotator")):
        subprocess.run(
            [*DASHBOARD_CLI, "users", "add", name, "--role", role, "--password-stdin", "--db", str(db)],
            input=PASSWORDS[name] + "\n",
            text=True,
            check=True,
            cwd=ROOT,
            env=env,
            timeout=120,
        )
    _seed_rating_tasks(db)
    port = _free_port()
    log = open(root / "server.log", "w")
    proc = subprocess.Popen(
        [*DASHBOARD_CLI, "dashboard", "--db", str(db), "--port", str(port)],
        cwd=root,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            urllib.request.urlopen(base + "/_stcore/health", timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(
                    f"dashboard did not start:\n{(root / 'server.log').read_text()[-3000:]}"
                ) from None
            time.sleep(0.5)
    after: list = []  # checks that read the database, which the server holds until it stops
    yield {"base": base, "root": root, "after": after}
    os.killpg(proc.pid, signal.SIGTERM)  # the server pauses running campaigns on exit, then stops its workers
    try:
        proc.wait(timeout=40)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    log.close()
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "server.log").write_text((root / "server.log").read_text())
    import duckdb

    with duckdb.connect(
        str(db), read_only=True
    ) as con:  # the server let go of the file and left nothing running
        states = dict(con.execute("SELECT id, state FROM campaigns").fetchall())
        for check in after:
            check(con)
    assert all(s in ("CREATED", "PAUSED", "DONE", "STOPPED", "FAILED") for s in states.values()), states


def _seed_rating_tasks(db: Path) -> None:
    """Three side-by-side tasks written before the server opens the file (they need no campaign run)."""
    from engine.controller_service import open_store
    from engine.store import now

    store = open_store(db)
    try:
        for i, (source, text_a, text_b) in enumerate(SEEDED_TASKS):
            store.cursor().execute(
                "INSERT INTO rating_tasks (campaign_id, batch, source_id, source, policy_a, text_a, "
                "policy_b, text_b, required_ratings, created_at) "
                "VALUES ('seeded', 'b1', ?, ?, 'policy-a-secret', ?, 'policy-b-secret', ?, 1, ?)",
                [f"s{i}", source, text_a, text_b, now()],
            )
    finally:
        store.close()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


class Shots:
    """Numbered full-window screenshots under test-artifacts/<test name>/."""

    def __init__(self, page, name: str):
        self.page, self.dir, self.n = page, ARTIFACTS / name, 0
        self.dir.mkdir(parents=True, exist_ok=True)
        for old in self.dir.glob("*.png"):
            old.unlink()

    def __call__(self, label: str) -> None:
        self.n += 1
        self.page.wait_for_timeout(500)  # let charts finish drawing
        self.page.screenshot(path=str(self.dir / f"{self.n:02d}-{label}.png"))


@pytest.fixture
def page(browser, request):
    ctx = browser.new_context(viewport={"width": 1400, "height": 2200})
    pg = ctx.new_page()
    pg.set_default_timeout(60_000)
    pg.shots = Shots(pg, request.node.name)
    yield pg
    ctx.close()


def sign_in(page, base: str, name: str) -> None:
    page.goto(base + "/")
    page.get_by_label("User name").fill(name)
    page.get_by_role("textbox", name="Password").fill(PASSWORDS[name])
    page.shots("sign-in")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_text(f"Signed in as {name}").wait_for()


def open_new_campaign(page, tab: str) -> None:
    tab_el = page.get_by_role("tab", name=tab)
    if not tab_el.is_visible():
        page.get_by_text("New campaign").click()
    tab_el.click()


def test_operator_runs_the_arith_demo_and_sees_the_histogram_fill(server, page):
    base = server["base"]
    sign_in(page, base, "olga")
    page.get_by_role("heading", name="Campaigns").wait_for()
    open_new_campaign(page, "Demo recipe")
    page.get_by_text("tiny: a smoke test").click()
    page.shots("campaigns-new-recipe")
    page.get_by_role("button", name="Launch recipe").click()
    page.get_by_text(re.compile(r"State:.*(BOOTSTRAP|GROW)")).wait_for(timeout=90_000)
    page.shots("campaigns-running")

    page.get_by_role("link", name="Reward distributions").click()
    page.get_by_role("heading", name="Reward distributions").wait_for()
    page.shots("distributions-waiting")
    caption = page.get_by_text(re.compile(r"Grow 1: [\d,]+ scored pairs"))
    caption.wait_for(timeout=150_000)
    seen = [caption.inner_text()]
    page.locator("[data-testid=stPlotlyChart] .main-svg").first.wait_for()
    page.shots("distributions-first-shards")
    # K candidates per training source (ReST-EM mixes in no original pairs), counted in the server's recipe.
    train = server["root"] / "db" / "recipes" / "tiny" / "arith" / "train.jsonl"
    k = TINY_OVERRIDES["grow"]["samples_per_source"]
    want = f"Grow 1: {sum(1 for _ in train.open()) * k:,} scored pairs"
    deadline = time.time() + 120
    while want not in seen[-1] and time.time() < deadline:
        page.wait_for_timeout(1000)
        seen.append(caption.inner_text())
    print("histogram captions seen without reloading:", seen)
    assert want in seen[-1], (want, seen)  # refreshed by the page's fragment, without a reload
    page.shots("distributions-grow-complete")

    for link, heading in (
        ("Campaigns", "Campaigns"),
        ("Stopping criteria", "Stopping criteria"),
        ("Rate", "Rate"),
        ("Reward tests", "Reward tests"),
        ("Agreement", "Agreement and human vs reward"),
        ("Drift audit", "Drift audit"),
        ("Users", "Users"),
    ):
        page.get_by_role("link", name=link, exact=True).click()
        page.get_by_role("heading", name=heading).wait_for()
        page.shots(heading.lower().replace(" ", "-"))
        if link == "Campaigns":  # Grow 1 is complete: where its shards ran is listed under the campaign
            page.get_by_text("Where Grow runs").wait_for(timeout=60_000)
        if link == "Reward tests":  # run the suite in the background; the page polls until the verdict is in
            page.get_by_role("button", name="Run the suite").click()
            page.get_by_text(re.compile(r"\(olga\): (pass|fail); failed tests:")).wait_for(timeout=120_000)
            page.get_by_text("History across reward-model versions").wait_for()
            page.shots("reward-tests-run")
        if (
            link == "Drift audit"
        ):  # the audit report: one HTML file, figures inline, nothing fetched from the network
            with page.expect_download(timeout=120_000) as dl:
                page.get_by_role("button", name="Download the audit report (HTML)").click()
            report = dl.value.path().read_text(encoding="utf-8")
            (page.shots.dir / "audit-report.html").write_text(report, encoding="utf-8")
            assert report.count('class="plotly-graph-div"') >= 3 and not re.search(
                r"<script[^>]*\bsrc=", report
            )


def _shown(page) -> dict:
    """The task on the Rate page as the annotator sees it: the opaque token of this view (the page shows no
    task id) and the two candidates in their screen order."""
    submit = page.locator('[class*="st-key-rate_submit_"]').first
    submit.wait_for()  # drawn after both candidates: the run is complete
    view = re.search(r"st-key-rate_submit_([0-9a-f]+)", submit.get_attribute("class")).group(1)
    return {
        "view": view,
        "left": page.locator(".st-key-rate_side_left code").first.inner_text(),
        "right": page.locator(".st-key-rate_side_right code").first.inner_text(),
    }


def _wait_score(page, side: str, score: int) -> None:
    page.locator(
        f'[class*="st-key-rate_{side}_"] button[aria-checked="true"]', has_text=str(score)
    ).first.wait_for()


def _next_task(page, task: dict) -> None:
    page.locator(f".st-key-rate_submit_{task['view']}").wait_for(state="detached")


def test_annotator_rates_three_pairs_one_by_keyboard_and_is_refused_operator_pages(server, page):
    base = server["base"]
    sign_in(page, base, "ann")
    page.get_by_role("heading", name="Rate").wait_for()
    page.wait_for_function("() => window.__restgovRateKeys === true")  # the shortcuts are installed
    rated = []
    # Pair 1, keyboard only: a digit scores the highlighted (left) candidate and moves on, Enter submits.
    task = _shown(page)
    page.shots("rate-keyboard-start")
    content = page.content()
    assert "secret" not in content and "reward" not in content.lower()  # blind: no policy names, no rewards
    page.keyboard.press("5")
    _wait_score(page, "left", 5)
    page.keyboard.press("2")
    _wait_score(page, "right", 2)
    page.shots("rate-keyboard-scored")
    page.keyboard.press("Enter")
    rated.append(task | {"score_left": 5, "score_right": 2})
    _next_task(page, task)
    # Pair 2, keyboard with the arrows: the right candidate first, then back to the left one.
    task = _shown(page)
    page.keyboard.press("ArrowRight")
    page.keyboard.press("6")
    _wait_score(page, "right", 6)
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("0")
    _wait_score(page, "left", 0)
    page.keyboard.press("Enter")
    rated.append(task | {"score_left": 0, "score_right": 6})
    _next_task(page, task)
    # Pair 3, with the mouse.
    task = _shown(page)
    page.locator('[class*="st-key-rate_left_"] button', has_text="3").click()
    _wait_score(page, "left", 3)
    page.locator('[class*="st-key-rate_right_"] button', has_text="4").click()
    _wait_score(page, "right", 4)
    page.get_by_role("button", name="Submit").click()
    rated.append(task | {"score_left": 3, "score_right": 4})
    page.get_by_text("Nothing left to rate for you").wait_for()
    page.shots("rate-done")

    def ratings_landed(con) -> None:  # exactly these ratings, with the order shown
        rows = con.execute(
            "SELECT v.token, r.score_a, r.score_b, r.shown_order, t.text_a, t.text_b FROM ratings r "
            "JOIN rating_tasks t USING (task_id) JOIN rating_views v ON v.task_id = r.task_id "
            "AND v.annotator = r.annotator WHERE r.annotator = 'ann' ORDER BY r.rating_id"
        ).fetchall()
        assert [r[0] for r in rows] == [t["view"] for t in rated], rows
        for (_, score_a, score_b, order, text_a, text_b), t in zip(rows, rated):
            assert (t["left"], t["right"]) == ((text_a, text_b) if order == "ab" else (text_b, text_a))
            assert (score_a, score_b) == (
                (t["score_left"], t["score_right"]) if order == "ab" else (t["score_right"], t["score_left"])
            )

    server["after"].append(ratings_landed)  # the server holds the database until the module's end

    assert page.get_by_role("link", name="Campaigns").count() == 0
    for path, title in (
        ("campaigns", "Campaigns"),
        ("stopping", "Stopping criteria"),
        ("distributions", "Reward distributions"),
    ):
        page.goto(f"{base}/{path}")  # a fresh browser session: the session cookie keeps the sign-in
        page.get_by_text(f"Access refused: {title} is for").wait_for()
        assert page.get_by_role("heading", name=title, exact=True).count() == 0
        assert page.get_by_test_id("stSidebarUserContent").get_by_text("Signed in as ann").is_visible()
        page.shots(f"refused-{path}")


def test_bad_toml_upload_shows_the_field_error(server, page, tmp_path):
    base = server["base"]
    good = write_tiny_campaign(tmp_path / "up", grows=1, name="uploaded")
    bad = good.read_text().replace("temperature = 0.8", "temperature = -1.0")
    sign_in(page, base, "olga")
    page.get_by_role("heading", name="Campaigns").wait_for()
    open_new_campaign(page, "Upload TOML")
    page.locator("input[type=file]").set_input_files(
        files=[{"name": "bad.toml", "mimeType": "application/toml", "buffer": bad.encode()}]
    )
    page.get_by_role("button", name="Validate and create").click()
    err = page.get_by_text(re.compile(r"grow\.temperature \(line \d+\) = -1\.0: must be > 0"))
    err.wait_for()
    page.shots("upload-bad-toml")
