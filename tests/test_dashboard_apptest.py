"""The dashboard's page logic through streamlit.testing.v1.AppTest, over real DuckDB files in tmp_path.

Fast tests (empty store): sign-in, role gating of the navigation and of each page, accounts. Slow tests share
one tiny ReST-EM campaign run to DONE by engine.controller_service (the dashboard's own controller, in
this process): the Campaigns, Reward distributions and Stopping criteria pages, and the SQL views checked
against plain Python over the same samples.
"""

from __future__ import annotations

import hashlib
import math
import os
import subprocess
import sys
import time
from itertools import combinations
from pathlib import Path

import pytest
from conftest import write_tiny_campaign
from streamlit.testing.v1 import AppTest

from dashboard import auth
from engine.config import load_config

APP = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")
ROOT = Path(APP).parent.parent


_OPENED: set[str] = set()


def _service(db: Path):
    """The dashboard's cached ControllerService for this file (what every page of the app gets)."""
    _OPENED.add(str(db))
    return auth._service(str(db))


@pytest.fixture(scope="module", autouse=True)
def _close_services():
    """Let go of every store this module opened (the server process would hold them until it exits)."""
    yield
    for db in _OPENED:
        svc = auth._service(db)
        svc.shutdown()
        svc.store.close()
    auth._service.clear()


def app(db: Path, user: dict | None = None, cid: str | None = None) -> AppTest:
    """The app on `db`, signed in as `user` (or at the sign-in page) with campaign `cid` chosen, after its first run."""
    os.environ["RESTGOV_DB"] = str(db)
    at = AppTest.from_file(APP, default_timeout=60)
    if user is not None:
        at.session_state["user"] = user
    if cid is not None:
        at.session_state["cid"] = cid
    return at.run()


def frame(at: AppTest, column: str):
    """The first dataframe drawn with `column` (AppTest does not expose a dataframe's key)."""
    return next(d.value for d in at.dataframe if column in d.value.columns)


def texts(at: AppTest, kind: str = "error") -> str:
    return "\n".join(str(e.value) for e in getattr(at, kind))


def button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


def task_id(at: AppTest) -> int:
    """The task on the Rate page, from its caption "Task N · ..."."""
    return int(next(c.value for c in at.caption if c.value.startswith("Task ")).split()[1])


OPERATOR = {"name": "olga", "role": "operator"}
ANNOTATOR = {"name": "ann", "role": "annotator"}
AUDITOR = {"name": "aud", "role": "auditor"}


@pytest.fixture(autouse=True)
def _restore_db_env():
    old = os.environ.get("RESTGOV_DB")
    yield
    if old is None:
        os.environ.pop("RESTGOV_DB", None)
    else:
        os.environ["RESTGOV_DB"] = old


@pytest.fixture
def empty_db(tmp_path: Path) -> Path:
    db = tmp_path / "db" / "restgov.duckdb"
    store = _service(db).store
    store.add_user("olga", "operator", "operator-pass")
    store.add_user("ann", "annotator", "annotator-pass")
    return db


# ---------------------------------------------------------------- sign-in and roles


def test_sign_in_page_is_the_only_page_before_sign_in(empty_db):
    at = app(empty_db)
    assert not at.exception
    assert [t.value for t in at.title] == ["restgov"]
    assert {t.label for t in at.text_input} == {"User name", "Password"}
    with pytest.raises(ValueError, match="Could not find a navigation page"):
        at.switch_page("app_pages/campaigns.py")  # not registered at all: no URL reaches it


def test_wrong_password_is_refused_and_right_one_signs_in(empty_db):
    at = app(empty_db)
    at.text_input(key="login_name").input("olga")
    at.text_input(key="login_password").input("not-the-password")
    at = button(at, "Sign in").click().run()
    assert "Wrong user name or password" in texts(at)
    assert at.session_state["user"] is None
    at.text_input(key="login_password").input("operator-pass")
    at = button(at, "Sign in").click().run()
    assert not at.exception
    assert at.session_state["user"] == {"name": "olga", "role": "operator"}
    assert [t.value for t in at.title] == ["Campaigns"]
    events = _service(empty_db).store.recent_events(None, 10, kinds=["login"])
    assert [e["message"] for e in events[:2]] == ["olga signed in as operator", "failed sign-in for 'olga'"]


def test_annotator_navigation_has_only_rate(empty_db):
    at = app(empty_db, ANNOTATOR)
    assert [t.value for t in at.title] == ["Rate"]
    for page in ("campaigns", "stopping", "distributions", "drift", "users"):
        with pytest.raises(ValueError, match="Could not find a navigation page"):
            at.switch_page(f"app_pages/{page}.py")


def test_each_page_checks_the_role_itself(empty_db):
    """Run an operator page file directly (as if the navigation had been bypassed): it refuses an annotator."""
    os.environ["RESTGOV_DB"] = str(empty_db)
    for page, user in (
        ("campaigns", ANNOTATOR),
        ("stopping", AUDITOR),
        ("distributions", ANNOTATOR),
        ("users", AUDITOR),
    ):
        at = AppTest.from_file(str(ROOT / "dashboard" / "app_pages" / f"{page}.py"), default_timeout=30)
        at.session_state["user"] = user
        at.run()
        assert "Access refused" in texts(at), page
        assert not at.title, f"{page} drew its content for {user['role']}"


def test_local_mode_skips_sign_in_only_on_loopback(empty_db, monkeypatch):
    from streamlit import config

    monkeypatch.setenv("RESTGOV_LOCAL", "1")
    old = config.get_option("server.address")
    try:
        config.set_option("server.address", "0.0.0.0")
        assert [t.value for t in app(empty_db).title] == [
            "restgov"
        ]  # listening beyond this machine: sign-in stays
        config.set_option("server.address", "127.0.0.1")
        at = app(empty_db)
        assert at.session_state["user"] == {"name": "local", "role": "operator", "local": True}
        assert [t.value for t in at.title] == ["Campaigns"] and not at.exception
    finally:
        config.set_option("server.address", old)


def test_auditor_sees_audit_pages_only(empty_db):
    at = app(empty_db, AUDITOR)
    assert [t.value for t in at.title] == ["Reward distributions"]
    for page in ("drift", "agreement", "reward_tests"):
        at.switch_page(f"app_pages/{page}.py").run()
        assert not at.exception, page
    with pytest.raises(ValueError):
        at.switch_page("app_pages/campaigns.py")


def test_users_cli_stores_salted_scrypt_hashes(tmp_path):
    db = tmp_path / "u.duckdb"
    cmd = [
        sys.executable,
        "-m",
        "dashboard.cli",
        "users",
        "add",
        "bob",
        "--role",
        "auditor",
        "--password-stdin",
        "--db",
        str(db),
    ]
    run = subprocess.run(cmd, input="bob-secret-1\n", capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert run.returncode == 0, run.stderr
    bad = subprocess.run(
        cmd[:5] + ["carl", "--role", "boss", "--password-stdin", "--db", str(db)],
        input="x" * 10 + "\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert bad.returncode != 0 and "invalid choice" in bad.stderr
    store = _service(db).store
    store.add_user("dan", "annotator", "bob-secret-1")  # same password, different salt
    assert store.verify_user("bob", "bob-secret-1") == {"name": "bob", "role": "auditor"}
    assert store.verify_user("bob", "wrong-password") is None and store.verify_user("nobody", "x" * 8) is None
    rows = store.cursor().execute("SELECT name, kdf, salt, pw_hash FROM users ORDER BY name").fetchall()
    (_, kdf, salt_b, hash_b), (_, _, salt_d, hash_d) = rows
    assert kdf.startswith("scrypt$") and bytes(salt_b) != bytes(salt_d) and bytes(hash_b) != bytes(hash_d)
    assert bytes(hash_b) == hashlib.scrypt(b"bob-secret-1", salt=bytes(salt_b), n=2**14, r=8, p=1, dklen=32)
    token = store.create_session("bob")
    assert store.session_user(token) == {"name": "bob", "role": "auditor"}
    store.end_session(token)
    assert store.session_user(token) is None
    with pytest.raises(ValueError, match="at least 8"):
        store.add_user("eve", "operator", "short")


# ---------------------------------------------------------------- a real tiny campaign


@pytest.fixture(scope="module")
def campaign(tmp_path_factory) -> tuple[Path, str, dict]:
    """A tiny ReST-EM campaign (1 Grow, 1 Improve) run to DONE by the dashboard's controller service.

    Returns (db, campaign id, the live progress snapshots seen while it ran).
    """
    root = tmp_path_factory.mktemp("dash")
    db = root / "db" / "restgov.duckdb"
    svc = _service(db)
    svc.store.add_user("olga", "operator", "operator-pass")
    cid = svc.create(load_config(write_tiny_campaign(root / "arith", grows=1)), "olga")
    assert svc.start(cid, "olga") and not svc.start(cid, "olga")  # a second start is refused while it runs
    seen: dict = {"descs": set(), "losses": 0, "eta": False, "sps": False}
    t0 = time.time()
    while svc.running(cid) and time.time() - t0 < 600:
        lv = svc.live(cid)
        seen["descs"].add(lv.get("desc"))
        seen["losses"] = max(seen["losses"], len(lv["losses"]))
        seen["eta"] |= lv.get("eta_s") is not None
        seen["sps"] |= bool(lv.get("samples_per_s"))
        time.sleep(0.2)
    assert svc.wait(cid, 5)
    assert svc.store.campaign(cid)["state"] == "DONE", svc.store.recent_events(cid, 5)
    return db, cid, seen


@pytest.mark.slow
def test_controller_service_reports_live_progress(campaign):
    _, _, seen = campaign
    assert "grow 1" in seen["descs"] and seen["eta"]
    assert seen["losses"] >= 1 and seen["sps"]


@pytest.mark.slow
def test_campaigns_page_lists_and_shows_the_step_table(campaign):
    db, cid, _ = campaign
    at = app(db, OPERATOR, cid)
    assert not at.exception
    assert [t.value for t in at.title] == ["Campaigns"]
    table = frame(at, "stop reason")
    assert cid in list(table["id"]) and "DONE" in list(table["state"])
    steps = frame(at, "kept_mean_reward")
    assert list(steps["policy"]) == ["base", "g1-i1"] and steps["kept"].iloc[1] > 0
    assert "`DONE`" in texts(at, "markdown")
    assert at.button(key="ctl_start").disabled and at.button(key="ctl_pause").disabled
    assert at.button(key="ctl_stop").disabled  # DONE is final


@pytest.mark.slow
def test_form_shows_the_config_error_next_to_the_field(campaign):
    db, _, _ = campaign
    at = app(db, OPERATOR)
    at.number_input(key="form_grow.temperature").set_value(-1.0)
    at = button(at, "Create campaign").click().run()
    elements = list(_walk(at.main))
    i = next(k for k, e in enumerate(elements) if getattr(e, "label", None) == "Temperature")
    # The error is the element drawn right under the temperature field, inside the form.
    assert elements[i + 1].type == "error" and "grow.temperature = -1.0: must be > 0" in elements[i + 1].value


def _walk(node):
    for child in getattr(node, "children", {}).values():
        if getattr(child, "children", None):
            yield from _walk(child)
        else:
            yield child


@pytest.mark.slow
def test_uploaded_toml_errors_name_the_field_and_line_and_a_good_one_is_created(campaign, tmp_path):
    db, _, _ = campaign
    good = write_tiny_campaign(tmp_path / "up", grows=1, name="uploaded")
    bad = good.read_text().replace("temperature = 0.8", "temperature = -2.0")
    at = app(db, OPERATOR)
    at.text_input(key="new_toml_base").input(str(good.parent))
    at.file_uploader(key="new_toml").set_value(("bad.toml", bad.encode(), "application/toml"))
    at = at.run()
    at = at.button(key="new_toml_go").click().run()
    line = bad.splitlines().index("temperature = -2.0") + 1
    assert f"**grow.temperature** (line {line}) = `-2.0`: must be > 0" in texts(at)
    n_before = len(_service(db).store.campaigns())
    at.file_uploader(key="new_toml").set_value(("good.toml", good.read_bytes(), "application/toml"))
    at = at.run()
    at = at.button(key="new_toml_go").click().run()
    assert not at.exception and not texts(at)
    rows = _service(db).store.campaigns()
    assert len(rows) == n_before + 1 and rows[-1]["name"] == "uploaded" and rows[-1]["state"] == "CREATED"


@pytest.mark.slow
def test_distributions_page_draws_every_chart_from_sql(campaign):
    db, cid, _ = campaign
    at = app(db, AUDITOR, cid)
    assert not at.exception and [t.value for t in at.title] == ["Reward distributions"]
    # Histogram, ECDF and the open tab (per-source bands); the other tabs run their query only when opened.
    assert [e.key for e in at.get("plotly_chart")] == ["dist_hist", "dist_ecdf", "dist_bands"]
    for tab, key in (("Reward vs length", "dist_length"), ("Best-of-N", "dist_bon"), ("Candidates", None)):
        at.session_state["dist_tabs"] = tab
        at.run()
        assert not at.exception and [e.key for e in at.get("plotly_chart")][2:] == ([key] if key else []), tab
    assert frame(at, "text")["reward"].between(0.9, 1.0).all()  # candidates in the default range 0.9..1.0
    at.session_state["dist_tabs"] = "Per-source percentiles"
    at.run()
    store = _service(db).store
    (n,) = (
        store.cursor()
        .execute("SELECT count(*) FROM samples WHERE campaign_id = ? AND grow = 1", [cid])
        .fetchone()
    )
    assert f"Grow 1: {n:,} scored pairs" in texts(at, "caption")
    filters = frame(at, "rule")
    assert list(filters["kept"]) == [f["kept"] for f in store.filters(cid)]
    at.slider(key="dist_tau").set_value(0.5).run()
    taus = frame(at, "kept pairs")
    (kept,) = (
        store.cursor()
        .execute("SELECT count(*) FROM samples WHERE campaign_id = ? AND grow = 1 AND reward > 0.5", [cid])
        .fetchone()
    )
    assert int(taus.loc[taus["τ"] == 0.5, "kept pairs"].iloc[0]) == kept


@pytest.mark.slow
def test_views_match_plain_python(campaign):
    db, cid, _ = campaign
    store = _service(db).store
    rows = (
        store.cursor()
        .execute(
            "SELECT source_id, sample_idx, reward, n_tokens FROM samples WHERE campaign_id = ? AND grow = 1",
            [cid],
        )
        .fetchall()
    )
    hist = store.reward_histogram(cid, bins=10)
    assert sum(h["n"] for h in hist) == len(rows) and math.isclose(hist[-1]["ecdf"], 1.0)
    for h in hist:
        assert h["n"] == sum(1 for r in rows if min(max(int(math.floor(r[2] * 10)), 0), 9) == h["bin"])
    for k in store.kept_shares(cid, 1, [0.0, 0.5, 0.99]):
        assert k["kept"] == sum(1 for r in rows if r[2] > k["tau"])
    gen = [r for r in rows if r[1] >= 0]
    by_src: dict[str, list[float]] = {}
    for sid, _, rew, _ in gen:
        by_src.setdefault(sid, []).append(rew)
    for b in store.grow_best_of_n(cid, 1, [1, 2]):  # exact expectation over all n-subsets of each source
        want = sum(
            sum(max(c) for c in combinations(v, b["n"])) / math.comb(len(v), b["n"]) for v in by_src.values()
        )
        assert math.isclose(b["best_of_n"], want / len(by_src), rel_tol=1e-9)
    sp = store.source_percentiles(cid, 1, bands=4, taus=[0.5])
    assert sp["n_sources"] == len(by_src) and sp["empty_at"][0]["sources"] == sum(
        max(v) <= 0.5 for v in by_src.values()
    )
    rl = store.reward_vs_length(cid, 1)
    assert sum(c["n"] for c in rl["cells"]) == sum(1 for r in gen if r[3] is not None)


@pytest.mark.slow
def test_stopping_criteria_edit_is_validated_and_logged(campaign):
    db, cid, _ = campaign
    at = app(db, OPERATOR, cid)
    at.switch_page("app_pages/stopping.py").run()
    # DONE is final: the form is read-only; a live-campaign edit goes through the same service call, tested below.
    assert at.number_input(key=f"stop_{cid}_max_grow_steps").disabled
    svc = _service(db)
    from engine.config import ConfigError

    with pytest.raises(ConfigError) as e:
        svc.update_criteria(cid, "stop", {"max_grow_steps": 1, "window": 0}, "olga")
    assert e.value.field == "stop.window"
    changed = svc.update_criteria(cid, "stop", {"max_grow_steps": 3, "target_reward": 0.9}, "olga")
    assert changed == {"max_grow_steps": [1, 3], "target_reward": [None, 0.9]}
    assert svc.store.campaign(cid)["config"]["stop"]["max_grow_steps"] == 3
    ev = svc.store.recent_events(cid, 1, kinds=["criteria"])[0]
    assert ev["actor"] == "olga" and "stop.max_grow_steps: 1 -> 3" in ev["message"]
    assert svc.update_criteria(cid, "stop", {"max_grow_steps": 3}, "olga") == {}  # no change, no event
    svc.update_criteria(cid, "stop", {"max_grow_steps": 1, "target_reward": None}, "olga")
    assert "target_reward" not in svc.store.campaign(cid)["config"]["stop"]


@pytest.mark.slow
def test_stopping_page_saves_stop_and_gates_on_an_editable_campaign(campaign, tmp_path):
    db, _, _ = campaign
    svc = _service(db)
    cid = svc.create(load_config(write_tiny_campaign(tmp_path / "c", grows=1, name="editable")), "olga")
    at = app(db, OPERATOR, cid)
    at.switch_page("app_pages/stopping.py").run()
    at.number_input(key=f"stop_{cid}_window").set_value(0)
    at = button(at, "Save [stop]").click().run()
    assert "stop.window = 0: must be >= 1" in texts(at)
    at.number_input(key=f"stop_{cid}_window").set_value(2)
    at.number_input(key=f"stop_{cid}_min_improvement").set_value(0.01)
    at = button(at, "Save [stop]").click().run()
    assert not texts(at)
    at.selectbox(key=f"gates_{cid}_action").set_value("stop")
    at.checkbox(key=f"gates_{cid}_drift").check()
    at.text_input(key=f"gates_{cid}_reward_tests_skip").input("empty_output, copy_source")
    at = button(at, "Save [gates]").click().run()
    assert not texts(at)
    cfg = svc.store.campaign(cid)["config"]
    assert cfg["stop"]["window"] == 2 and cfg["stop"]["min_improvement"] == 0.01
    assert cfg["gates"]["action"] == "stop" and cfg["gates"]["drift"] is True
    assert cfg["gates"]["reward_tests_skip"] == ["empty_output", "copy_source"]
    history = frame(at, "actor")
    assert "olga" in list(history["actor"]) and any("stop.window: 1 -> 2" in m for m in history["message"])
    assert svc.stop(cid, "olga") and svc.store.campaign(cid)["state"] == "STOPPED"


@pytest.mark.slow
def test_pause_and_resume_from_the_page(campaign, tmp_path):
    db, _, _ = campaign
    svc = _service(db)
    cid = svc.create(load_config(write_tiny_campaign(tmp_path / "p", grows=1, name="pausable")), "olga")
    at = app(db, OPERATOR)
    at.session_state["cid"] = cid
    at = at.run()
    at = at.button(key="ctl_start").click().run()
    assert svc.running(cid)
    at = at.button(key="ctl_pause").click().run()
    assert svc.wait(cid, 60)
    assert svc.store.campaign(cid)["state"] == "PAUSED"
    at = at.run()
    assert not at.button(key="ctl_start").disabled and at.button(key="ctl_start").label == "Resume"
    at = at.button(key="ctl_stop").click().run()
    assert svc.store.campaign(cid)["state"] == "STOPPED"
    actors = {e["actor"] for e in svc.store.recent_events(cid, 20, kinds=["request", "state"])}
    assert "olga" in actors


@pytest.mark.slow
def test_annotator_rates_blind_and_exactly_those_ratings_are_stored(campaign):
    db, cid, _ = campaign
    store = _service(db).store
    made = store.create_rating_tasks(cid, "reference", "base", n=3, required_ratings=1, seed=1)
    assert made["n_tasks"] == 3
    at = app(db, {"name": "ann", "role": "annotator"})
    assert [t.value for t in at.title] == ["Rate"]
    shown = []
    for left, right in ((6, 1), (2, 5), (3, 3)):
        tid = task_id(at)
        page_text = texts(at, "markdown") + texts(at, "caption") + texts(at, "code")
        assert "reference" not in page_text and "base" not in page_text  # blind: no policy names
        shown.append((tid, at.code[0].value, at.code[1].value, left, right))
        at.button_group(key=f"rate_left_{tid}").set_value(left)
        at = (
            at.button_group(key=f"rate_right_{tid}").set_value(right).run()
        )  # Submit is enabled once both are scored
        at = at.button(key=f"rate_submit_{tid}").click().run()
        assert not at.exception
    assert "Nothing left to rate" in texts(at, "success")
    rows = {r["task_id"]: r for r in store.ratings(cid) if r["annotator"] == "ann"}
    tasks = {t["task_id"]: t for t in store.rating_tasks(cid)}
    assert sorted(rows) == sorted(t for t, *_ in shown)
    for tid, text_left, text_right, left, right in shown:
        r, t = rows[tid], tasks[tid]
        # The order stored is the order shown: left was text_a exactly when shown_order is "ab".
        assert (text_left, text_right) == (
            (t["text_a"], t["text_b"]) if r["shown_order"] == "ab" else (t["text_b"], t["text_a"])
        )
        assert (r["score_a"], r["score_b"]) == ((left, right) if r["shown_order"] == "ab" else (right, left))
    at = app(db, AUDITOR, cid)
    at.switch_page("app_pages/agreement.py").run()
    assert not at.exception and at.metric[1].value == "3"  # ratings


@pytest.mark.slow
def test_governance_pages_render_on_a_real_campaign(campaign):
    db, cid, _ = campaign
    at = app(db, OPERATOR, cid)
    for page in ("reward_tests", "drift", "agreement", "rate", "users"):
        at.switch_page(f"app_pages/{page}.py").run()
        assert not at.exception, (page, at.exception)
        assert "needs the governance module" not in texts(at, "info"), page


# ---------------------------------------------------------------- governance pages on a synthetic campaign (fast)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> tuple[Path, str]:
    """A campaign created by the dashboard's controller (data copied, never run) plus two Grow steps of samples
    written straight into the store: grow 2's rewards sit well above grow 1's, so drift raises an alarm."""
    import random

    import pyarrow as pa
    import pyarrow.parquet as pq

    from engine.worker import SAMPLE_SCHEMA

    root = tmp_path_factory.mktemp("synthetic")
    db = root / "db" / "restgov.duckdb"
    svc = _service(db)
    cid = svc.create(load_config(write_tiny_campaign(root / "arith", grows=2, name="synthetic")), "olga")
    sids = [
        r[0]
        for r in svc.store.cursor()
        .execute(
            "SELECT source_id FROM prompts WHERE campaign_id = ? AND split = 'train' ORDER BY 1 LIMIT 40",
            [cid],
        )
        .fetchall()
    ]
    rng = random.Random(0)
    for g, lo in ((1, 0.0), (2, 0.5)):
        rows = [
            dict(
                grow=g,
                source_id=sid,
                sample_idx=k,
                text=f"{rng.randint(0, 99)} words {k} of {sid}",
                n_tokens=4 + k,
                sum_logprob=-1.0,
                policy="base" if g == 1 else "g1-i1",
                reward=lo + 0.5 * rng.random(),
                reward_version="v-syn",
            )
            for sid in sids
            for k in range(2)
        ]
        pq.write_table(pa.Table.from_pylist(rows, schema=SAMPLE_SCHEMA), root / f"g{g}.parquet")
        svc.store.ingest_shard(cid, "samples", f"syn-g{g}", root / f"g{g}.parquet")
    return db, cid


def test_rate_skip_keeps_the_task_away_for_this_session_only(synthetic):
    db, cid = synthetic
    store = _service(db).store
    made = store.create_rating_tasks(cid, "reference", "base", n=2, required_ratings=1, seed=3, batch="skip")[
        "task_ids"
    ]
    who = {"name": "sam", "role": "annotator"}
    at = app(db, who)
    skipped = []
    for _ in made:
        skipped.append(task_id(at))
        at = at.button(key=f"rate_skip_{skipped[-1]}").click().run()
        assert not at.exception
    assert sorted(skipped) == sorted(made) and "Nothing left to rate" in texts(at, "success")
    assert "2 skipped this session" in texts(at, "caption")
    assert store.next_task("sam") is None and store.ratings(cid) == []  # skips are not ratings
    (n,) = store.cursor().execute("SELECT count(*) FROM rating_skips WHERE annotator = 'sam'").fetchone()
    assert n == 2
    assert task_id(app(db, who)) == skipped[0]  # a new session serves them again
    at = button(at, "Show the 2 skipped task(s) again").click().run()
    assert task_id(at) == skipped[0]
    # Blind: the keyboard script and the page name no policy and show no reward.
    page = texts(at, "markdown") + texts(at, "caption") + "".join(h.proto.body for h in at.get("html"))
    assert "reference" not in page and "base" not in page and "reward" not in page.lower()
    assert "keydown" in "".join(h.proto.body for h in at.get("html"))


def test_reward_tests_page_runs_the_suite_in_the_background(synthetic):
    db, cid = synthetic
    store = _service(db).store
    at = app(db, AUDITOR, cid)
    at.switch_page("app_pages/reward_tests.py").run()
    assert not at.exception and "Read-only" in texts(at, "caption")
    assert not [b for b in at.button if b.label == "Run the suite"]  # auditors cannot start a run
    at = app(db, OPERATOR, cid)
    at.switch_page("app_pages/reward_tests.py").run()
    assert "never tested" in texts(at, "caption")
    at.number_input(key="rt_n").set_value(12)
    at = button(at, "Run the suite").click().run()
    assert not at.exception
    deadline = time.time() + 120
    while not store.reward_test_runs() and time.time() < deadline:
        time.sleep(0.2)
    (run,) = store.reward_test_runs()
    assert (
        run["n_pairs"] == 12
        and run["config"]["campaign"] == cid
        and run["config"]["reference_set"] == "validation"
    )
    at.run()
    assert not at.exception
    history = frame(at, "failed tests")
    assert list(history["run_id"]) == [run["run_id"]] and list(history["verdict"]) == [run["verdict"]]
    results = frame(at, "pass_rate")
    assert len(results) == run["n_tests"] and set(results["verdict"]) <= {"pass", "fail", "skip"}
    assert [e.key for e in at.get("plotly_chart")] == ["rt_matrix"]
    assert f"latest run **{run['verdict']}**" in texts(at, "caption")
    ev = store.recent_events(cid, 1, kinds=["reward_tests"])[0]
    assert ev["actor"] == "olga" and run["reward_version"] in ev["message"]


def test_audit_report_is_one_self_contained_html_file(synthetic):
    import re

    from dashboard.report_html import build_audit_report

    db, cid = synthetic
    doc = build_audit_report(_service(db).store, cid)
    assert (
        doc.startswith("<!DOCTYPE html>") and doc.count("window.PlotlyConfig") == 1
    )  # plotly.js inline, once
    assert (
        doc.count('class="plotly-graph-div"') >= 2
    )  # histogram and ECDF (and the test matrix once runs exist)
    tags = re.findall(r"<(?:script|link|img|iframe)\b[^>]*>", doc)
    assert tags and not [t for t in tags if re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", t)], (
        tags
    )
    for section in (
        "Campaign summary",
        "Per-step table",
        "Reward distributions per Grow step",
        "Drift statistics",
        "Reward-model versions and unit tests",
        "Rating statistics",
        "Event log",
    ):
        assert f"<h2>{section}</h2>" in doc, section
    assert "grow 1 → grow 2" in doc and 'class="alarm-box"' in doc and "reward distribution moved" in doc
    assert "campaign created" in doc and "v-syn" in doc


def test_drift_page_lists_reward_versions_and_offers_the_report(synthetic):
    db, cid = synthetic
    at = app(db, AUDITOR, cid)
    at.switch_page("app_pages/drift.py").run()
    assert not at.exception
    versions = frame(at, "used_in_grows")
    row = versions[versions["version"] == "v-syn"].iloc[0]
    assert row["used_in_grows"] == "1, 2" and row["n_samples"] == 160
    assert row["verdict"] in ("pass", "fail", "untested")
    labels = [d.proto.label for d in at.get("download_button")]
    assert labels == ["Download the audit report (HTML)", "Export the event log (JSON)"]
