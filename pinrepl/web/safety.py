"""The dashboard's safety rules (SPEC 9), in front of every page: the token, CSRF, read-only,
and the headers that keep its pages from being framed or fed scripts from elsewhere.

- **Token.** With a token, every request but the login page and the static files must carry
  it: `Authorization: Bearer TOKEN`, or the session cookie the login page sets (an HMAC of
  the token, so the cookie is not the token itself and changing the token logs everyone
  out). Without it: 401, the login page for a browser.
- **CSRF.** Every POST must carry the per-session CSRF token: the `pinrepl_csrf` cookie
  (set on the first page served, SameSite=Strict) repeated in the form field `csrf` or the
  `X-CSRF-Token` header (which htmx sends, see `base.html`). Another site can make a
  browser send the cookie, never read it to repeat it. Without it: 403.
- **Read-only.** The pages hide the buttons; a POST to an action is refused (403).

The rules live in an ASGI middleware for the token (it stands before every route, a mounted
app's too) and in `check_post` for the POSTs, which every action calls before anything else.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import quote

from starlette.datastructures import Headers
from starlette.requests import Request

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

CSRF_COOKIE = "pinrepl_csrf"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
SESSION_COOKIE = "pinrepl_session"
#: What every page is served with: no framing (the buttons cannot be clicked through
#: another site's page), scripts and styles only from the dashboard itself.
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data:; "
                               "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
}


class Refused(Exception):
    """A request the safety rules refuse: its status (401, 403) and the message shown."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def session_value(token: str) -> str:
    """The session cookie's value for `token`."""
    return hmac.new(token.encode(), b"pinrepl web session", hashlib.sha256).hexdigest()


def authorized(headers: Headers, cookies: dict[str, str], token: str) -> bool:
    """Whether a request carries `token`: as a bearer token or as the session cookie."""
    scheme, _, given = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(),
                                                          token.encode()):
        return True
    cookie = cookies.get(SESSION_COOKIE, "")
    return hmac.compare_digest(cookie.encode(), session_value(token).encode())


def csrf_token(request: Request) -> str:
    """The session's CSRF token: the cookie's, or a new one (set on the response by
    `Guard`, see `state.new_csrf`)."""
    current = request.cookies.get(CSRF_COOKIE)
    if current and len(current) >= 32:
        return current
    new = getattr(request.state, "new_csrf", None)
    if new is None:
        new = request.state.new_csrf = secrets.token_urlsafe(32)
    return str(new)


async def check_post(request: Request, *, read_only: bool = False) -> dict[str, str]:
    """The form of a POST once it passed the CSRF check (and, for an action, the
    read-only rule); `Refused` (403) otherwise."""
    form = await request.form()
    fields = {key: value for key, value in form.items() if isinstance(value, str)}
    expected = request.cookies.get(CSRF_COOKIE, "")
    given = request.headers.get(CSRF_HEADER) or fields.get(CSRF_FIELD, "")
    if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
        raise Refused(403, "this form has expired or did not come from the dashboard (no "
                           "valid CSRF token): reload the page and try again")
    if read_only:
        raise Refused(403, "this dashboard is read-only: it shows the runs and changes "
                           "nothing")
    return fields


class Guard:
    """ASGI middleware: the token rule before any route, then the CSRF cookie and the
    security headers added to the response. `refused(scope, receive, send, status,
    message)` answers a request without the token."""

    #: What a request without the token may still reach (under the app's root path).
    OPEN = ("/login", "/static/")

    def __init__(self, app: ASGIApp, *, token: str | None,
                 refused: Callable[[Request, Refused], Awaitable[Any]]) -> None:
        self.app = app
        self.token = token
        self.refused = refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        path = scope.get("path", "")
        root = scope.get("root_path", "")
        inside = path[len(root):] if root and path.startswith(root) else path
        if self.token is not None and not inside.startswith(self.OPEN) and not authorized(
                request.headers, request.cookies, self.token):
            response = await self.refused(request, Refused(
                401, "this dashboard needs its token: sign in, or send "
                     "'Authorization: Bearer TOKEN'"))
            await response(scope, receive, self._headers(scope, send, root))
            return
        await self.app(scope, receive, self._headers(scope, send, root))

    def _headers(self, scope: Scope, send: Send, root: str) -> Send:
        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                headers += [(name.encode(), value.encode())
                            for name, value in SECURITY_HEADERS.items()
                            if name.encode() not in names]
                new = scope.get("state", {}).get("new_csrf")  # `csrf_token` made one
                if new:
                    headers.append((b"set-cookie", cookie(CSRF_COOKIE, new, root).encode()))
                message["headers"] = headers
            await send(message)

        return sending


def cookie(name: str, value: str, root: str, *, max_age: int | None = None,
           http_only: bool = True) -> str:
    """A Set-Cookie value for the dashboard's path only, never sent by another site."""
    parts = [f"{name}={quote(value)}", f"Path={root or '/'}", "SameSite=Strict"]
    if http_only:
        parts.append("HttpOnly")
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
    return "; ".join(parts)
