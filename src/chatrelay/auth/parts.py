"""What the auth layer's dependencies (auth/identity.py) use: made once at start-up, in the
app's lifespan, and kept with the app.

Usage (app.py)::

    parts = AuthParts.start(settings, db, sign_in_throttle=..., count_new_guest=...)
    install_auth_parts(app, parts)
    ...
    auth_parts(request).session_cookies  # in auth/identity.py, typed

Kept apart from the HTTP layer's context (http/context.py, which holds the same object) so
that auth/ reaches its parts without knowing the layers above it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.requests import HTTPConnection

from chatrelay.auth import passwords
from chatrelay.auth.credential_cache import CredentialCache
from chatrelay.auth.secret import load_secret_key
from chatrelay.auth.sessions import SessionCookies
from chatrelay.config import Settings
from chatrelay.limits.sign_in import SignInThrottle
from chatrelay.store.database import Database

_SLOT = "chatrelay_auth_parts"


@dataclass(frozen=True, slots=True)
class AuthParts:
    db: Database
    session_cookies: SessionCookies
    # Sessions and API keys recently looked up, for CHATRELAY_AUTH_CACHE_SECONDS.
    credential_cache: CredentialCache
    sign_in_throttle: SignInThrottle
    # Counts a new guest against its client address's share (CHATRELAY_GUEST_CREATE_LIMIT),
    # raising the 429 past it: the limits' ``Quotas.count_new_guest``.
    count_new_guest: Callable[[str | None], Awaitable[None]]

    @classmethod
    def start(
        cls,
        settings: Settings,
        db: Database,
        *,
        sign_in_throttle: SignInThrottle,
        count_new_guest: Callable[[str | None], Awaitable[None]],
    ) -> AuthParts:
        """The parts for ``settings`` (the secret key read or made), the password hasher
        readied."""
        parts = cls(
            db=db,
            session_cookies=SessionCookies(
                load_secret_key(settings),
                user_days=settings.session_days,
                guest_days=settings.guest_session_days,
            ),
            credential_cache=CredentialCache(ttl=settings.auth_cache_seconds),
            sign_in_throttle=sign_in_throttle,
            count_new_guest=count_new_guest,
        )
        passwords.prepare()
        return parts


def install_auth_parts(app: Starlette, parts: AuthParts) -> None:
    setattr(app.state, _SLOT, parts)


def auth_parts(connection: HTTPConnection) -> AuthParts:
    """The app's auth parts; a RuntimeError before its lifespan made them."""
    parts = getattr(connection.app.state, _SLOT, None)
    if not isinstance(parts, AuthParts):
        raise RuntimeError(
            "chatrelay's auth parts are made in the app's lifespan: start the app (under "
            "uvicorn, or with its lifespan run) before it serves requests"
        )
    return parts
