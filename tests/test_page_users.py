"""Users: accounts added with `restgov users`, stored as salted scrypt hashes, and their sessions."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest
from apptest_helpers import ROOT, _service


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


def _signed_in(db, name: str, password: str):
    """The app after signing in through its form, as a browser would."""
    from apptest_helpers import app, button

    at = app(db)
    at.text_input(key="login_name").input(name)
    at.text_input(key="login_password").input(password)
    at = button(at, "Sign in").click().run()
    assert at.session_state["user"]["name"] == name and not at.exception
    return at


def test_role_change_on_the_users_page_refuses_the_open_tab_at_its_next_run(empty_db):
    """The annotator's tab keeps its cached user; the operator takes her role away on the Users page; her next
    run is refused with the reason, logged, and her session is gone from the store."""
    from apptest_helpers import OPERATOR, app, button, texts

    ann = _signed_in(empty_db, "ann", "annotator-pass")
    assert [t.value for t in ann.title] == ["Rate"]
    token = ann.session_state["session_token"]
    op = app(empty_db, OPERATOR).switch_page("app_pages/users.py").run()
    op.selectbox(key="user_role_pick").select("ann")
    op.selectbox(key="user_role_new").select("no role (disable)")
    op = button(op.run(), "Change role").click().run()  # the button is enabled once a user is picked
    assert "ann now has no role (disable); their open sessions were ended." in texts(op, "success")
    store = _service(empty_db).store
    assert store.session_user(token) is None and store.account("ann")["disabled"]
    ann.run()  # her next click
    assert [t.value for t in ann.title] == ["restgov"]  # the sign-in page, with the reason
    assert "Access refused: your account no longer has a role. Sign in again to continue." in texts(ann)
    access = [e["message"] for e in store.recent_events(None, 5, kinds=["access"])]
    assert access[0] == "ann (annotator) refused: session ended, your account no longer has a role"
    assert store.sign_in("ann", "annotator-pass", "10.1.1.1").user is None  # disabled: cannot sign in


@pytest.mark.parametrize("change", ["role", "password", "remove"])
def test_account_changes_end_the_accounts_sessions(empty_db, change):
    """Every change to an account ends all its sessions at once (other accounts keep theirs); the tab says
    why at its next run."""
    from apptest_helpers import texts

    store = _service(empty_db).store
    ann = _signed_in(empty_db, "ann", "annotator-pass")
    other = store.create_session("ann")  # a second browser
    olga = store.create_session("olga")
    if change == "role":
        store.set_role("ann", "auditor", actor="olga")
        why = "your role changed from annotator to auditor"
    elif change == "password":
        store.add_user("ann", "annotator", "new-annotator-pass", actor="olga", replace=True)
        why = "your session was ended (signed out in another tab, password reset, or expired)"
    else:
        assert store.remove_user("ann", actor="olga")
        why = "your account was removed"
    assert (
        store.session_user(ann.session_state["session_token"]) is None and store.session_user(other) is None
    )
    assert store.session_user(olga) == {"name": "olga", "role": "operator"}
    assert store.sessions("ann") == 0
    ann.run()
    assert f"Access refused: {why}. Sign in again to continue." in texts(ann)
    with pytest.raises(ValueError, match="no such account"):
        store.set_role("nobody", "auditor")
    with pytest.raises(ValueError, match="role 'boss'"):
        store.set_role("olga", "boss")
