"""What the dashboard's AppTest files share: the app driven on a DuckDB file, element finders, the roles,
and the stores they run on. conftest.py loads it as a plugin (`pytest_plugins`) so that the session fixtures
are built once for all the test_page_*.py files; streamlit and the dashboard are imported only when used, so
the rest of the suite neither waits for them nor depends on them.

Fast tests use an empty store with two accounts (`empty_db`). Slow ones share one tiny ReST-EM campaign run to
DONE by engine.controller_service (the dashboard's own controller, in this process; `campaign`), and the
governance pages one campaign with two synthetic Grow steps of samples (`synthetic`); both are built once per
test session and closed at its end.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from conftest import write_tiny_campaign

from engine.config import load_config

if TYPE_CHECKING:
    from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")
ROOT = Path(APP).parent.parent


_OPENED: set[str] = set()


def _service(db: Path):
    """The dashboard's cached ControllerService for `db` (what every page of the app gets)."""
    from dashboard import service

    _OPENED.add(str(db))
    return service._service(str(db))


@pytest.fixture(scope="session", autouse=True)
def _close_services():
    """Let go of every store these tests opened (the server process would hold them until it exits)."""
    yield
    if not _OPENED:
        return
    from dashboard import service

    for db in _OPENED:
        svc = service._service(db)
        svc.shutdown()
        svc.store.close()
    service._service.clear()


def app(db: Path, user: dict | None = None, cid: str | None = None) -> AppTest:
    """The app on `db`, signed in as `user` (or at the sign-in page) with campaign `cid` chosen, after its
    first run."""
    from streamlit.testing.v1 import AppTest

    os.environ["RESTGOV_DB"] = str(db)
    at = AppTest.from_file(APP, default_timeout=60)
    if user is not None:  # a real session of a real account with that role, as a sign-in would open
        at.session_state["session_token"] = _session_token(db, user)
    if cid is not None:
        at.session_state["cid"] = cid
    return at.run()


def _session_token(db: Path, user: dict) -> str:
    """A new session token for `user` ({name, role}) on `db`, creating or re-roling the account if needed."""
    store = _service(db).store
    acct = store.account(user["name"])
    if acct is None or acct["disabled"] or acct["role"] != user["role"]:
        store.add_user(user["name"], user["role"], f"{user['name']}-password", replace=True)
    return store.create_session(user["name"])


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


@pytest.fixture(scope="session")
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


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory) -> tuple[Path, str]:
    """A campaign created by the dashboard's controller (data copied, never run) plus two Grow steps of
    samples written straight into the store: grow 2's rewards sit well above grow 1's, so drift raises an
    alarm."""
    import random

    import pyarrow as pa
    import pyarrow.parquet as pq

    from engine.steps.grow import SAMPLE_SCHEMA

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
