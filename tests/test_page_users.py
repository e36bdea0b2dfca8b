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
