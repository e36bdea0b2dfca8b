"""Navigation in headless Chromium against the real dashboard: the campaign picker on every page that has
one, each role's pages opened by their own URL (signed in, signed out, local mode), and the Rate page's
Enter with one candidate scored.

The store holds two campaigns that differ on every page with a picker (samples per Grow step, reward,
state, rating tasks); they are created and filled with the engine's own calls before the server starts, and
never run. Screenshots of every page visited go to test-artifacts/<test name>/.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
import test_browser
from conftest import write_tiny_campaign
from test_browser import DASHBOARD_CLI, PASSWORDS, _free_port, browser, sync_api  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

USERS = {"olga": "operator", "ann": "annotator", "aud": "auditor"}
PASSWORD = PASSWORDS | {"aud": "auditor-pass"}
COOKIE = "restgov_session"
# Campaign name -> (Grow steps of samples, sources per step, reward kind).
CAMPAIGNS = {"alpha": (1, 40, "numeric"), "beta": (2, 20, "exact_match")}


class Shots(test_browser.Shots):
    """test_browser's numbered screenshots, taken once the run has ended (and a chart has drawn) rather than
    after a fixed half second."""

    def __call__(self, label: str, pause: int = 100) -> None:
        self.n += 1
        settled(self.page)
        self.page.wait_for_timeout(pause)
        self.page.screenshot(path=str(self.dir / f"{self.n:02d}-{label}.png"))


@pytest.fixture
def tab(browser, request):  # noqa: F811
    """A browser tab of its own context (cookies), with numbered screenshots (test_browser.Shots)."""
    ctx = browser.new_context(viewport={"width": 1400, "height": 2200})
    tab = ctx.new_page()
    tab.set_default_timeout(60_000)
    tab.shots = Shots(tab, request.node.name)
    yield tab
    ctx.close()


def _build_store(db: Path, root: Path) -> dict[str, str]:
    """Accounts, the two campaigns with their samples, and one rating task on alpha; returns name -> id."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from engine.campaign import new_campaign
    from engine.config import load_config
    from engine.controller_service import open_store
    from engine.steps.grow import SAMPLE_SCHEMA
    from engine.store import now

    store = open_store(db)
    ids = {}
    try:
        for name, role in USERS.items():
            store.add_user(name, role, PASSWORD[name])
        rng = random.Random(0)
        for name, (grows, n_sources, reward) in CAMPAIGNS.items():
            toml = write_tiny_campaign(root / name, grows=grows, name=name)
            toml.write_text(toml.read_text().replace('kind = "numeric"', f'kind = "{reward}"'))
            cid = ids[name] = new_campaign(store, load_config(toml), db.parent / "runs", actor="olga")
            sids = [
                r[0]
                for r in store.cursor()
                .execute(
                    "SELECT source_id FROM prompts WHERE campaign_id = ? AND split = 'train' "
                    "ORDER BY 1 LIMIT ?",
                    [cid, n_sources],
                )
                .fetchall()
            ]
            for g in range(1, grows + 1):
                rows = [
                    dict(
                        grow=g,
                        source_id=sid,
                        sample_idx=k,
                        text=f"{rng.randint(0, 99)} sample {k} of {sid}",
                        n_tokens=3 + k,
                        sum_logprob=-1.0,
                        policy="base",
                        reward=rng.random(),
                        reward_version=f"v-{reward}",
                    )
                    for sid in sids
                    for k in range(2)
                ]
                path = root / f"{name}-g{g}.parquet"
                pq.write_table(pa.Table.from_pylist(rows, schema=SAMPLE_SCHEMA), path)
                store.ingest_shard(cid, "samples", f"{name}-g{g}", path)
        store.cursor().execute(
            "INSERT INTO rating_tasks (campaign_id, batch, source_id, source, policy_a, text_a, policy_b, "
            "text_b, required_ratings, created_at) VALUES (?, 'b1', 's0', 'What is 4 + 4?', 'pa', "
            "'It is 8.', 'pb', 'It is 9.', 2, ?)",
            [ids["alpha"], now()],
        )
    finally:
        store.close()
    return ids


@contextmanager
def _serve(db: Path, log_path: Path, *extra: str):
    """`restgov dashboard --db DB` on a free port (started at once; `wait()` blocks until it answers)."""
    port = _free_port()
    env = os.environ | {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    log = open(log_path, "w")
    proc = subprocess.Popen(
        [*DASHBOARD_CLI, "dashboard", "--db", str(db), "--port", str(port), *extra],
        cwd=log_path.parent,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"

    def wait() -> str:
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(base + "/_stcore/health", timeout=2)
                return base
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"dashboard did not start:\n{log_path.read_text()[-3000:]}") from None
                time.sleep(0.3)

    try:
        yield wait
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The team server on the two-campaign store and a local-mode server on an empty one, started together;
    checks in `after` read the team store once its server has let go of it."""
    root = tmp_path_factory.mktemp("nav")
    db = root / "db" / "restgov.duckdb"
    db.parent.mkdir()
    ids = _build_store(db, root)
    after: list = []
    with (
        _serve(db, root / "server.log") as team,
        _serve(root / "local" / "restgov.duckdb", root / "local.log", "--local") as local,
    ):
        yield {"base": team(), "local": local(), "ids": ids, "after": after}
    import duckdb

    with duckdb.connect(str(db), read_only=True) as con:
        for check in after:
            check(con)


def sign_in(tab, base: str, name: str, path: str = "") -> None:
    """Sign in on the form that `base/path` shows while signed out; the page that URL names opens after."""
    tab.goto(f"{base}/{path}")
    tab.get_by_label("User name").fill(name)
    tab.get_by_role("textbox", name="Password").fill(PASSWORD[name])
    tab.get_by_role("button", name="Sign in").click()
    tab.get_by_text(f"Signed in as {name}").wait_for()
    deadline = time.time() + 20  # the page hands the session cookie to the browser just after
    while not any(c["name"] == COOKIE for c in tab.context.cookies()) and time.time() < deadline:
        tab.wait_for_timeout(100)


def choose(tab, key: str, name: str, cid: str, by_keyboard: bool) -> None:
    """Pick campaign `name` in the picker keyed `key`: with the mouse, or from the keyboard (type in the
    combo box, Enter on the option it highlights)."""
    box = tab.locator(f".st-key-{key} input[role=combobox]")
    option = f"{name} · {cid}"
    if by_keyboard:
        box.focus()
        tab.keyboard.press("ControlOrMeta+A")
        tab.keyboard.type(option)
        tab.locator("[role=option][data-focused=true]", has_text=option).wait_for()
        tab.keyboard.press("Enter")
    else:
        # A click that lands while the page is being redrawn can be lost: open the list again until it shows.
        item = tab.get_by_role("option", name=option)
        for _ in range(5):
            tab.locator(f".st-key-{key} button[aria-label=Open]").click()
            try:
                item.wait_for(timeout=10_000)
                break
            except sync_api.Error:
                settled(tab)
        item.click()
    shows(tab, key, name, cid)
    settled(tab)


def settled(tab) -> None:
    """Wait for the end of the app's script run (the page drawn in full, the previous run's elements gone)."""
    tab.locator("[data-testid=stApp][data-test-script-state=notRunning]").wait_for()


def shows(tab, key: str, name: str, cid: str) -> None:
    """The picker keyed `key` shows campaign `name`."""
    sync_api.expect(tab.locator(f".st-key-{key} input[role=combobox]")).to_have_value(f"{name} · {cid}")


def chosen(tab, key: str) -> str:
    return tab.locator(f".st-key-{key} input[role=combobox]").input_value()


# URL path, link, heading, picker key, and what differs between alpha and beta there (a regex for each).
PICKER_PAGES = [
    ("campaigns", "Campaigns", "Campaigns", "campaigns_pick", (r"State: STOPPED", r"State: CREATED")),
    ("stopping", "Stopping criteria", "Stopping criteria", "stop_pick", (r"state STOPPED", r"state CREATED")),
    ("rate", "Rate", "Rate", "rate_pick", (r"^Campaign · STOPPED$", r"^Campaign · CREATED$")),
    (
        "distributions",
        "Reward distributions",
        "Reward distributions",
        "dist_pick",
        (r"Grow 1: 80 scored pairs", r"Grow 1: 40 scored pairs.* Grow 2: 40 scored pairs"),
    ),
    ("governance", "Governance", "Governance", "gov_pick", (r"· state STOPPED$", r"· state CREATED$")),
    (
        "reward-tests",
        "Reward tests",
        "Reward tests",
        "rt_campaign",
        (r"^Reward of this campaign: numeric$", r"^Reward of this campaign: exact_match$"),
    ),
    (
        "agreement",
        "Agreement",
        "Agreement and human vs reward",
        "agree_pick",
        # alpha has one rating task (it needs two ratings: the operator's visit to Rate holds one place), beta
        # none
        (r"\(1 rating tasks wait for annotators", r"No ratings yet\. To get some"),
    ),
    (
        "drift",
        "Drift audit",
        "Drift audit",
        "drift_pick",
        (r"this campaign has 1 with generated samples", r"^Reference step a$"),
    ),
]


def opened_by_url(tab, path: str, heading: str) -> None:
    """The page at /`path` is on the screen under its own URL, without a "Page not found" pop-up."""
    tab.get_by_role("heading", name=heading, exact=True).wait_for()
    assert tab.url.endswith(f"/{path}"), tab.url
    tab.wait_for_timeout(300)  # the pop-up would come with the page's navigation message
    assert tab.get_by_text("Page not found").count() == 0, tab.url


def test_operator_switches_campaigns_on_every_page_with_a_picker(server, tab):
    """Opened by its URL while signed out, Campaigns shows the sign-in form, then itself. On each page with a
    picker: it opens on the campaign chosen on the page before, and choosing the other one (mouse on one
    page, keyboard on the next) redraws the page's figures for it and stays chosen."""
    base, ids = server["base"], server["ids"]
    sign_in(tab, base, "olga", "campaigns")
    opened_by_url(tab, "campaigns", "Campaigns")
    # Stop alpha: its state then differs from beta's on every page that shows one, and the picker's label
    # says so in the same run.
    choose(tab, "campaigns_pick", "alpha", ids["alpha"], by_keyboard=False)
    tab.locator(".st-key-ctl_stop button:visible").click()  # a button with help has a hidden twin
    tab.locator(".st-key-campaigns_pick").get_by_text("Campaign · STOPPED", exact=True).wait_for()
    now = "alpha"
    for n, (path, link, heading, key, wants) in enumerate(PICKER_PAGES):
        if path != "campaigns":
            tab.get_by_role("link", name=link, exact=True).click()
            tab.get_by_role("heading", name=heading, exact=True).wait_for()
            assert tab.url.endswith(f"/{path}")
        if path == "rate":
            tab.get_by_text("Create rating tasks (operators)").click()
        shows(tab, key, now, ids[now])  # the campaign chosen on the page before
        seen = {}
        for name in (now, "beta" if now == "alpha" else "alpha"):
            if name != now:
                choose(tab, key, name, ids[name], by_keyboard=n % 2 == 1)
            want, other = (re.compile(w, re.M) for w in (wants if name == "alpha" else wants[::-1]))
            tab.get_by_text(want).first.wait_for()
            assert tab.get_by_text(other).count() == 0, (path, name)
            tab.shots(f"{path}-{name}", 500 if path == "distributions" else 100)
            assert chosen(tab, key) == f"{name} · {ids[name]}", (path, name)  # not snapped back
            seen[name] = tab.get_by_text(want).first.inner_text()
            now = name
        assert seen["alpha"] != seen["beta"], (path, seen)
    tab.goto(f"{base}/campaigns")  # a new browser session: the cookie keeps the sign-in
    opened_by_url(tab, "campaigns", "Campaigns")


def test_auditor_opens_distributions_by_url_and_the_choice_follows_to_every_page(server, tab):
    base, ids = server["base"], server["ids"]
    sign_in(tab, base, "aud", "distributions")
    opened_by_url(tab, "distributions", "Reward distributions")
    tab.goto(f"{base}/distributions")  # a new browser session: the cookie keeps the sign-in
    opened_by_url(tab, "distributions", "Reward distributions")
    shows(tab, "dist_pick", "beta", ids["beta"])  # the newest campaign
    choose(tab, "dist_pick", "alpha", ids["alpha"], by_keyboard=True)
    tab.get_by_text(re.compile(PICKER_PAGES[3][4][0])).wait_for()
    tab.shots("distributions-alpha", 500)
    for path, link, heading, key, (want_alpha, _) in PICKER_PAGES[4:]:
        tab.get_by_role("link", name=link, exact=True).click()
        tab.get_by_role("heading", name=heading, exact=True).wait_for()
        shows(tab, key, "alpha", ids["alpha"])
        if path != "reward-tests":  # the run form, which names the reward, is for operators
            tab.get_by_text(re.compile(want_alpha, re.M)).first.wait_for()
        tab.shots(path)


def test_annotator_opens_rate_by_url_and_enter_with_one_candidate_scored_names_the_other(server, tab):
    """Enter right after opening Rate by its URL reaches the page. With only Candidate A scored, Enter stores
    nothing, names Candidate B, moves the highlight to it and keeps A's score; B is then scored, not A."""
    base = server["base"]
    sign_in(tab, base, "ann", "rate")
    opened_by_url(tab, "rate", "Rate")
    tab.wait_for_function("() => window.__restgovRateKeys === true")
    submit = tab.locator('[class*="st-key-rate_submit_"]').first
    view = re.search(r"st-key-rate_submit_([0-9a-f]+)", submit.get_attribute("class")).group(1)
    left, right = (tab.locator(f".st-key-rate_side_{s} code").first.inner_text() for s in ("left", "right"))

    def score(side: str, n: int) -> None:
        tab.locator(f".st-key-rate_{side}_{view} button[aria-checked=true]", has_text=str(n)).wait_for()

    tab.keyboard.press("5")  # Candidate A; the highlight moves to B
    score("left", 5)
    tab.keyboard.press("ArrowLeft")  # back on A, which is scored
    tab.keyboard.press("Enter")
    tab.get_by_text("Not stored: Candidate B has no score yet").wait_for()
    assert tab.evaluate("document.body.dataset.rgSide") == "right"  # the highlight went to B
    score("left", 5)  # A's score is kept
    tab.shots("rate-one-side-enter")
    tab.keyboard.press("2")  # scores B, not A
    score("right", 2)
    tab.locator(".st-key-rate_missing").wait_for(state="detached")  # the note goes once B is scored
    score("left", 5)
    tab.shots("rate-both-scored")
    tab.keyboard.press("Enter")
    tab.get_by_text("Rating stored.").wait_for()
    tab.shots("rate-stored")
    tab.goto(f"{base}/rate")  # a new browser session: the cookie keeps the sign-in
    opened_by_url(tab, "rate", "Rate")

    def stored(con) -> None:
        (row,) = con.execute(
            "SELECT r.score_a, r.score_b, r.shown_order, t.text_a, t.text_b FROM ratings r "
            "JOIN rating_tasks t USING (task_id) JOIN rating_views v ON v.task_id = r.task_id "
            "AND v.annotator = r.annotator WHERE r.annotator = 'ann' AND v.token = ?",
            [view],
        ).fetchall()
        score_a, score_b, order, text_a, text_b = row
        assert (left, right) == ((text_a, text_b) if order == "ab" else (text_b, text_a))
        assert (score_a, score_b) == ((5, 2) if order == "ab" else (2, 5))

    server["after"].append(stored)


def test_local_mode_opens_every_page_by_url(server, tab):
    for path, heading in (
        ("campaigns", "Campaigns"),
        ("rate", "Rate"),
        ("distributions", "Reward distributions"),
    ):
        tab.goto(f"{server['local']}/{path}")
        opened_by_url(tab, path, heading)
        tab.shots(f"local-{path}")
