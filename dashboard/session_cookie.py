"""The session cookie, set by the server as HttpOnly (page scripts cannot read it).

A Streamlit script cannot answer an HTTP request, so signing in hands the new session token to this module
under a one-time code (`offer`, kept in this process's memory for a minute, never written anywhere), and the
page asks the server's own route `POST /api/restgov/session {"code": ...}` to turn the code into a
`Set-Cookie: restgov_session=...; HttpOnly; SameSite=Strict; Path=/` (plus `Secure` when the request came over
HTTPS, directly or through a proxy that sets X-Forwarded-Proto). `DELETE` on the same route clears the cookie
at sign-out. The routes are mounted by dashboard/serve.py (`st.App`), which `restgov dashboard` runs.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from urllib.parse import urlsplit

COOKIE = "restgov_session"
ROUTE = "/api/restgov/session"
CODE_SECONDS = 60.0

_pending: dict[str, tuple[str, int, float]] = {}  # sha256(code) -> (token, max-age seconds, deadline)
_lock = threading.Lock()


def _digest(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


def offer(token: str, max_age: int) -> str:
    """A one-time code that the cookie route exchanges for `token` within CODE_SECONDS."""
    code = secrets.token_urlsafe(24)
    t = time.monotonic()
    with _lock:
        for k in [k for k, v in _pending.items() if v[2] <= t]:
            del _pending[k]
        _pending[_digest(code)] = (token, max_age, t + CODE_SECONDS)
    return code


def pending(code: str) -> bool:
    """Whether `code` still waits for the page to exchange it (not taken, not expired)."""
    with _lock:
        hit = _pending.get(_digest(code))
    return hit is not None and hit[2] > time.monotonic()


def take(code: object) -> tuple[str, int] | None:
    """(token, max-age) for a live code, once; None for an unknown, used or expired one."""
    if not isinstance(code, str) or not code:
        return None
    with _lock:
        hit = _pending.pop(_digest(code), None)
    if hit is None or hit[2] <= time.monotonic():
        return None
    return hit[0], hit[1]


def _same_origin(request) -> bool:
    """Browsers send Origin with a fetch POST/DELETE; refuse one from another site."""
    origin = request.headers.get("origin")
    if not origin:
        return True
    host = request.headers.get("x-forwarded-host") or request.headers.get("host") or ""
    return urlsplit(origin).hostname == urlsplit("//" + host).hostname  # ports differ behind a proxy


def _secure(request) -> bool:
    return request.url.scheme == "https" or request.headers.get("x-forwarded-proto", "").lower() == "https"


async def session_route(request):
    from starlette.responses import JSONResponse

    if not _same_origin(request):
        return JSONResponse({"error": "cross-site request refused"}, status_code=403)
    if request.method == "DELETE":
        resp = JSONResponse({"cleared": True})
        resp.delete_cookie(COOKIE, path="/", secure=_secure(request), httponly=True, samesite="strict")
        return resp
    try:
        body = await request.json()
    except ValueError:
        body = None
    hit = take(body.get("code") if isinstance(body, dict) else None)
    if hit is None:
        return JSONResponse({"error": "unknown, used or expired sign-in code"}, status_code=400)
    token, max_age = hit
    resp = JSONResponse({"set": True})
    resp.set_cookie(
        COOKIE, token, max_age=max_age, path="/", secure=_secure(request), httponly=True, samesite="strict"
    )
    return resp


def routes() -> list:
    from starlette.routing import Route

    return [Route(ROUTE, session_route, methods=["POST", "DELETE"])]


def script(code: str | None) -> str:
    """The page script that sets (a code) or clears (None) the cookie through the route."""
    if code is None:
        call = f'fetch("{ROUTE}", {{method: "DELETE", credentials: "same-origin"}})'
    else:
        call = (
            f'fetch("{ROUTE}", {{method: "POST", credentials: "same-origin", '
            f'headers: {{"Content-Type": "application/json"}}, body: JSON.stringify({{code: "{code}"}})}})'
        )
    return f"<script>{call}.catch(() => {{}});</script>"
