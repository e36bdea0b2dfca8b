"""Dashboard accounts and login sessions: passwords kept only as salted scrypt hashes (stdlib hashlib).

Roles: operator (everything), annotator (rating only), auditor (read-only views and exports). A session
token is handed to the browser once; the store keeps only its SHA-256, with an expiry.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import timedelta

from .core import now

ROLES = ("operator", "annotator", "auditor")
# scrypt cost: n=2**14, r=8 (16 MiB, ~50 ms per check): OWASP's minimum for interactive logins.
KDF = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}
NAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
MIN_PASSWORD = 8
SESSION_HOURS = 12.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name VARCHAR PRIMARY KEY, role VARCHAR NOT NULL, kdf VARCHAR NOT NULL, salt BLOB NOT NULL,
    pw_hash BLOB NOT NULL, created_at TIMESTAMP NOT NULL, disabled BOOLEAN NOT NULL DEFAULT false);
CREATE TABLE IF NOT EXISTS sessions (
    token_hash VARCHAR PRIMARY KEY, name VARCHAR NOT NULL, created_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL);
"""


def _kdf(password: str, salt: bytes, kdf: str) -> bytes:
    name, n, r, p, dklen = kdf.split("$")
    if name != "scrypt":  # pragma: no cover - only scrypt is written today
        raise ValueError(f"unknown password KDF {name!r}")
    return hashlib.scrypt(
        password.encode(), salt=salt, n=int(n), r=int(r), p=int(p), dklen=int(dklen), maxmem=128 * 1024 * 1024
    )


def _kdf_name() -> str:
    return f"scrypt${KDF['n']}${KDF['r']}${KDF['p']}${KDF['dklen']}"


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# Verified against when the user does not exist, so a wrong name costs the same time as a wrong password.
_DUMMY_SALT = secrets.token_bytes(16)


class UsersMixin:
    SCHEMA = SCHEMA

    def add_user(
        self, name: str, role: str, password: str, actor: str = "cli", replace: bool = False
    ) -> None:
        """Create an account (or, with replace, reset its role and password). Raises ValueError on bad
        input."""
        if not NAME_RE.match(name or ""):
            raise ValueError(f"user name {name!r}: use 1-64 letters, digits, '_', '.', '@' or '-'")
        if role not in ROLES:
            raise ValueError(f"role {role!r}: one of {list(ROLES)}")
        if len(password or "") < MIN_PASSWORD:
            raise ValueError(f"password: at least {MIN_PASSWORD} characters")
        salt, kdf = secrets.token_bytes(16), _kdf_name()
        digest = _kdf(password, salt, kdf)
        cur = self.cursor()
        exists = cur.execute("SELECT 1 FROM users WHERE name = ?", [name]).fetchone()
        if exists and not replace:
            raise ValueError(f"user {name!r} exists (use --replace to reset the password or role)")
        cur.execute(
            "INSERT INTO users VALUES (?, ?, ?, ?, ?, ?, false) ON CONFLICT (name) DO UPDATE SET "
            "role = excluded.role, kdf = excluded.kdf, salt = excluded.salt, pw_hash = excluded.pw_hash, "
            "disabled = false",
            [name, role, kdf, salt, digest, now()],
        )
        if exists:  # a reset password or role ends the account's open sessions
            cur.execute("DELETE FROM sessions WHERE name = ?", [name])
        self.add_event(
            None,
            "user",
            f"user {name} {'updated' if exists else 'added'} with role {role}",
            {"name": name, "role": role},
            actor=actor,
        )

    def remove_user(self, name: str, actor: str = "cli") -> bool:
        cur = self.cursor()
        found = cur.execute("DELETE FROM users WHERE name = ? RETURNING name", [name]).fetchall()
        cur.execute("DELETE FROM sessions WHERE name = ?", [name])
        if found:
            self.add_event(None, "user", f"user {name} removed", {"name": name}, actor=actor)
        return bool(found)

    def users(self) -> list[dict]:
        """Accounts without their hashes."""
        return self._rows("SELECT name, role, created_at, disabled FROM users ORDER BY name")

    def verify_user(self, name: str, password: str) -> dict | None:
        """{name, role} when the password matches an enabled account, else None (same cost either way)."""
        row = (
            self.cursor()
            .execute("SELECT role, kdf, salt, pw_hash, disabled FROM users WHERE name = ?", [name or ""])
            .fetchone()
        )
        if row is None:
            _kdf(password or "", _DUMMY_SALT, _kdf_name())
            return None
        role, kdf, salt, digest, disabled = row
        ok = hmac.compare_digest(_kdf(password or "", bytes(salt), kdf), bytes(digest))
        return {"name": name, "role": role} if ok and not disabled else None

    # ---------------------------------------------------------------- sessions
    def create_session(self, name: str, hours: float = SESSION_HOURS) -> str:
        """A new random token for `name`; only its hash is stored."""
        token = secrets.token_urlsafe(32)
        t = now()
        self.cursor().execute(
            "INSERT INTO sessions VALUES (?, ?, ?, ?)",
            [_token_hash(token), name, t, t + timedelta(hours=hours)],
        )
        return token

    def session_user(self, token: str | None) -> dict | None:
        """{name, role} of a live session token, else None."""
        if not isinstance(token, str) or not token:
            return None
        rows = self._rows(
            "SELECT u.name, u.role FROM sessions s JOIN users u USING (name) "
            "WHERE s.token_hash = ? AND s.expires_at > ? AND NOT u.disabled",
            [_token_hash(token), now()],
        )
        return rows[0] if rows else None

    def end_session(self, token: str | None) -> None:
        if isinstance(token, str) and token:
            self.cursor().execute(
                "DELETE FROM sessions WHERE token_hash = ? OR expires_at <= ?", [_token_hash(token), now()]
            )
