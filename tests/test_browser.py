"""The real dashboard in headless Debian Chromium (Playwright): `restgov dashboard` on a free port of 127.0.0.1
against a DuckDB file in a temp folder, accounts made with `restgov users add`.

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
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
# `restgov dashboard` and `restgov users` (dashboard/cli.py, also reachable as `python -m dashboard.cli`).
DASHBOARD_CLI = [sys.executable, "-m", "dashboard.cli"]
PASSWORDS = {"olga": "operator-pass", "ann": "annotator-pass"}

if not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium) to run browser tests",
                allow_module_level=True)
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
    env = os.environ | {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    for name, role in (("olga", "operator"), ("ann", "annotator")):
        subprocess.run([*DASHBOARD_CLI, "users", "add", name, "--role", role, "--password-stdin", "--db", str(db)],
                       input=PASSWORDS[name] + "\n", text=True, check=True, cwd=ROOT, env=env, timeout=120)
    port = _free_port()
    log = open(root / "server.log", "w")
    proc = subprocess.Popen([*DASHBOARD_CLI, "dashboard", "--db", str(db), "--port", str(port)], cwd=root, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            urllib.request.urlopen(base + "/_stcore/health", timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"dashboard did not start:\n{(root / 'server.log').read_text()[-3000:]}") from None
            time.sleep(0.5)
    yield {"base": base, "root": root}
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

    with duckdb.connect(str(db), read_only=True) as con:  # the server let go of the file and left nothing running
        states = dict(con.execute("SELECT id, state FROM campaigns").fetchall())
    assert all(s in ("CREATED", "PAUSED", "DONE", "STOPPED", "FAILED") for s in states.values()), states


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
    pg.set_default_timeout(30_000)
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
    # Every training source gets K candidates (ReST-EM mixes in no original pairs): read the recipe the server wrote.
    train = server["root"] / "db" / "recipes" / "tiny" / "arith" / "train.jsonl"
    want = f"Grow 1: {sum(1 for _ in train.open()) * TINY_OVERRIDES['grow']['samples_per_source']:,} scored pairs"
    deadline = time.time() + 120
    while want not in seen[-1] and time.time() < deadline:
        page.wait_for_timeout(1000)
        seen.append(caption.inner_text())
    print("histogram captions seen without reloading:", seen)
    assert want in seen[-1], (want, seen)  # refreshed by the page's fragment, without a reload
    page.shots("distributions-grow-complete")

    for link, heading in (("Campaigns", "Campaigns"), ("Stopping criteria", "Stopping criteria"), ("Rate", "Rate"),
                          ("Reward tests", "Reward tests"), ("Agreement", "Agreement and human vs reward"),
                          ("Drift audit", "Drift audit"), ("Users", "Users")):
        page.get_by_role("link", name=link, exact=True).click()
        page.get_by_role("heading", name=heading).wait_for()
        page.shots(heading.lower().replace(" ", "-"))


def test_annotator_opening_operator_pages_by_url_is_refused(server, page):
    base = server["base"]
    sign_in(page, base, "ann")
    page.get_by_role("heading", name="Rate").wait_for()
    page.shots("rate")
    assert page.get_by_role("link", name="Campaigns").count() == 0
    for path, title in (("campaigns", "Campaigns"), ("stopping", "Stopping criteria"), ("distributions", "Reward distributions")):
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
        files=[{"name": "bad.toml", "mimeType": "application/toml", "buffer": bad.encode()}])
    page.get_by_role("button", name="Validate and create").click()
    err = page.get_by_text(re.compile(r"grow\.temperature \(line \d+\) = -1\.0: must be > 0"))
    err.wait_for()
    page.shots("upload-bad-toml")
