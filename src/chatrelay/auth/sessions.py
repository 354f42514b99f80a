"""Session cookies: a random token, signed, in an HttpOnly cookie; only its hash in the database.

Usage::

    cookies = SessionCookies(secret_key, user_days=30, guest_days=365)
    token = new_token()                              # Session.token_hash = token_hash(token)
    cookies.schedule(request, cookies.header(token, guest=False, secure=False))
    token = cookies.token_from(request.cookies.get(COOKIE_NAME))   # None unless ours

Cookies are scheduled on the request's state and written by :class:`SessionCookieWriter`
when the response starts, because headers set on a dependency's ``Response`` are lost when a
route returns its own response object (as the streaming chat route does).

Signing a user out everywhere (after a password change, or on request) deletes every session
row of theirs::

    ended = await end_user_sessions(session, user_id=user.id)   # their token hashes
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Awaitable
from datetime import datetime, timedelta

from itsdangerous import BadSignature, Signer
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatrelay.store.models import Session as SessionRow

COOKIE_NAME = "chatrelay_session"
# A session is pushed out to its full lifetime at most once a day, not written per request.
REFRESH_AFTER = timedelta(days=1)
_PENDING_COOKIE = "chatrelay_set_cookie"


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """What the database keeps: a stolen copy of the sessions table signs nobody in."""
    return hashlib.sha256(token.encode()).hexdigest()


class SessionCookies:
    """Signs, reads and writes the ``chatrelay_session`` cookie."""

    def __init__(self, secret_key: str, *, user_days: int, guest_days: int) -> None:
        # The signature lets a forged or stale-key cookie be dropped without a database query.
        self._signer = Signer(secret_key, salt="chatrelay.session")
        self.user_lifetime = timedelta(days=user_days)
        self.guest_lifetime = timedelta(days=guest_days)

    def lifetime(self, *, guest: bool) -> timedelta:
        return self.guest_lifetime if guest else self.user_lifetime

    def needs_refresh(self, expires_at: datetime, now: datetime, *, guest: bool) -> bool:
        return expires_at - now < self.lifetime(guest=guest) - REFRESH_AFTER

    def token_from(self, cookie: str | None) -> str | None:
        """The token inside a cookie we signed, or None for anything else."""
        if not cookie:
            return None
        try:
            return self._signer.unsign(cookie).decode()
        except (BadSignature, UnicodeDecodeError):
            return None

    def header(self, token: str, *, guest: bool, secure: bool) -> bytes:
        max_age = int(self.lifetime(guest=guest).total_seconds())
        value = self._signer.sign(token).decode()
        return _cookie(value, max_age=max_age, secure=secure)

    @staticmethod
    def clearing_header(*, secure: bool) -> bytes:
        return _cookie("", max_age=0, secure=secure)

    @staticmethod
    def schedule(connection: HTTPConnection, header: bytes) -> None:
        """Have :class:`SessionCookieWriter` send ``header`` with this request's response."""
        setattr(connection.state, _PENDING_COOKIE, header)


async def end_user_sessions(session: AsyncSession, *, user_id: str) -> list[str]:
    """Delete every session of ``user_id`` (every browser signed in as them); returns the
    token hashes that were deleted, so the caller can drop them from the credential cache.

    One statement with RETURNING: a session created meanwhile is either deleted and returned,
    or not deleted; never deleted yet left remembered."""
    ended = await session.scalars(
        delete(SessionRow).where(SessionRow.user_id == user_id).returning(SessionRow.token_hash)
    )
    return list(ended)


def is_secure(connection: HTTPConnection) -> bool:
    return connection.url.scheme == "https"


def _cookie(value: str, *, max_age: int, secure: bool) -> bytes:
    attributes = f"{COOKIE_NAME}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax"
    return (attributes + "; Secure" if secure else attributes).encode()


class SessionCookieWriter:
    """Pure ASGI: adds the session cookie a dependency scheduled to the response's headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # Not async: see chatrelay/http/middleware.py.
        if scope["type"] != "http":
            return self.app(scope, receive, send)
        # The same dict is request.state for every Request made from this scope downstream.
        state: dict[str, object] = scope.setdefault("state", {})

        def send_with_cookie(
            message: Message,
        ) -> Awaitable[None]:  # not async: see http/middleware.py
            if message["type"] == "http.response.start":
                cookie = state.pop(_PENDING_COOKIE, None)
                if isinstance(cookie, bytes):
                    message["headers"] = [*message.get("headers", []), (b"set-cookie", cookie)]
            return send(message)

        return self.app(scope, receive, send_with_cookie)
