"""Dashboard accounts and login sessions: passwords kept only as salted scrypt hashes (stdlib hashlib).

Roles: operator (everything), annotator (rating only), auditor (read-only views and exports); an account
with no role is disabled (kept for its history, cannot sign in). A session token is handed to the browser
once; the store keeps only its SHA-256, with an expiry. The dashboard looks the token up on every page run
(`session_user`: one primary-key lookup), so ending a session here takes effect at the user's next click:
sign-out ends one session, and any change to an account (role, password, removal) ends all of its sessions.

Failed sign-ins are counted per account name and per client address (`login_failures`): five within ten
minutes lock that name, or that client, for five minutes (`sign_in`).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from .core import now

ROLES = ("operator", "annotator", "auditor")
# scrypt cost: n=2**14, r=8 (16 MiB, ~50 ms per check): OWASP's minimum for interactive logins.
KDF = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}
NAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
MIN_PASSWORD = 8
SESSION_HOURS = 12.0
# Sign-in throttling: MAX_FAILURES failed attempts within FAILURE_WINDOW lock the account name (or the client)
# until LOCK_MINUTES after the last of them; attempts while locked are refused without checking the password.
MAX_FAILURES = 5
FAILURE_WINDOW = timedelta(minutes=10)
LOCK_MINUTES = 5

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name VARCHAR PRIMARY KEY, role VARCHAR NOT NULL, kdf VARCHAR NOT NULL, salt BLOB NOT NULL,
    pw_hash BLOB NOT NULL, created_at TIMESTAMP NOT NULL, disabled BOOLEAN NOT NULL DEFAULT false);
CREATE TABLE IF NOT EXISTS sessions (
    token_hash VARCHAR PRIMARY KEY, name VARCHAR NOT NULL, created_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL);
CREATE TABLE IF NOT EXISTS login_failures (
    scope VARCHAR NOT NULL, key VARCHAR NOT NULL, ts TIMESTAMP NOT NULL);
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


@dataclass
class SignIn:
    """What a sign-in attempt came to: `user` ({name, role}) and its new session `token` on success; else
    `locked_until` (UTC, naive) and `locked` ('account' or 'client') when throttled, or neither when the name
    or password was wrong."""

    user: dict | None = None
    token: str | None = None
    locked_until: datetime | None = None
    locked: str | None = None


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
        ended = self.end_sessions(name) if exists else 0  # a reset password or role ends its open sessions
        self.add_event(
            None,
            "user",
            f"user {name} {'updated' if exists else 'added'} with role {role}"
            + (f"; {ended} session(s) ended" if ended else ""),
            {"name": name, "role": role, "sessions_ended": ended},
            actor=actor,
        )

    def remove_user(self, name: str, actor: str = "cli") -> bool:
        cur = self.cursor()
        found = cur.execute("DELETE FROM users WHERE name = ? RETURNING name", [name]).fetchall()
        ended = self.end_sessions(name)
        if found:
            self.add_event(
                None,
                "user",
                f"user {name} removed" + (f"; {ended} session(s) ended" if ended else ""),
                {"name": name, "sessions_ended": ended},
                actor=actor,
            )
        return bool(found)

    def set_role(self, name: str, role: str | None, actor: str = "cli") -> None:
        """Change an account's role; None takes every role away (the account is disabled, kept for its
        history). Either way the account's open sessions end at once. Raises ValueError on bad input."""
        if role is not None and role not in ROLES:
            raise ValueError(f"role {role!r}: one of {list(ROLES)}, or none to disable the account")
        cur = self.cursor()
        old = cur.execute("SELECT role, disabled FROM users WHERE name = ?", [name]).fetchone()
        if old is None:
            raise ValueError(f"user {name!r}: no such account")
        if role is None:
            cur.execute("UPDATE users SET disabled = true WHERE name = ?", [name])
        else:
            cur.execute("UPDATE users SET role = ?, disabled = false WHERE name = ?", [role, name])
        ended = self.end_sessions(name)
        was = "no role" if old[1] else old[0]
        self.add_event(
            None,
            "user",
            f"user {name}: role {was} -> {role or 'no role (disabled)'}; {ended} session(s) ended",
            {"name": name, "role": role, "previous": None if old[1] else old[0], "sessions_ended": ended},
            actor=actor,
        )

    def account(self, name: str) -> dict | None:
        """{name, role, disabled} of an account (no hashes), or None when there is none."""
        rows = self._rows("SELECT name, role, disabled FROM users WHERE name = ?", [name or ""])
        return rows[0] if rows else None

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

    def end_session(self, token: str | None) -> bool:
        """End the session of `token` (and drop expired ones); True when that session was live."""
        if not isinstance(token, str) or not token:
            return False
        cur = self.cursor()
        found = cur.execute(
            "DELETE FROM sessions WHERE token_hash = ? AND expires_at > ? RETURNING name",
            [_token_hash(token), now()],
        ).fetchall()
        cur.execute("DELETE FROM sessions WHERE expires_at <= ?", [now()])
        return bool(found)

    def end_sessions(self, name: str) -> int:
        """End every session of account `name`; how many were open."""
        return len(
            self.cursor().execute("DELETE FROM sessions WHERE name = ? RETURNING name", [name]).fetchall()
        )

    def sessions(self, name: str) -> int:
        """How many live sessions account `name` has."""
        return (
            self.cursor()
            .execute("SELECT count(*) FROM sessions WHERE name = ? AND expires_at > ?", [name, now()])
            .fetchone()[0]
        )

    # ---------------------------------------------------------------- sign-in throttling
    def login_lock(self, name: str, client: str) -> tuple[datetime | None, str | None]:
        """(until when, 'account' or 'client') while `name` or `client` is locked out, else (None, None)."""
        t = now()
        worst: tuple[datetime | None, str | None] = (None, None)
        for scope, key in (("account", name), ("client", client)):
            n, last = (
                self.cursor()
                .execute(
                    "SELECT count(*), max(ts) FROM login_failures WHERE scope = ? AND key = ? AND ts > ?",
                    [scope, key, t - FAILURE_WINDOW],
                )
                .fetchone()
            )
            if n >= MAX_FAILURES:
                until = last + timedelta(minutes=LOCK_MINUTES)
                if until > t and (worst[0] is None or until > worst[0]):
                    worst = (until, scope)
        return worst

    def record_login_failure(self, name: str, client: str) -> None:
        t = now()
        cur = self.cursor()
        cur.execute(
            "INSERT INTO login_failures VALUES ('account', ?, ?), ('client', ?, ?)", [name, t, client, t]
        )
        cur.execute("DELETE FROM login_failures WHERE ts <= ?", [t - FAILURE_WINDOW])

    def sign_in(self, name: str, password: str, client: str, hours: float = SESSION_HOURS) -> SignIn:
        """Check a sign-in attempt from `client` (its address): refused without looking at the password while
        the name or the client is locked out; a failure is counted against both, a success clears the
        name's count and opens a session."""
        until, scope = self.login_lock(name, client)
        if until is not None:
            return SignIn(locked_until=until, locked=scope)
        user = self.verify_user(name, password)
        if user is None:
            self.record_login_failure(name, client)
            until, scope = self.login_lock(name, client)
            return SignIn(locked_until=until, locked=scope)
        self.cursor().execute("DELETE FROM login_failures WHERE scope = 'account' AND key = ?", [name])
        return SignIn(user=user, token=self.create_session(user["name"], hours))
