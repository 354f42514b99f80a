"""What the auth layer keeps on ``app.state``, made once at start-up (in the lifespan)."""

from __future__ import annotations

from fastapi import FastAPI

from chatrelay.auth import passwords
from chatrelay.auth.credential_cache import CredentialCache
from chatrelay.auth.secret import load_secret_key
from chatrelay.auth.sessions import SessionCookies
from chatrelay.auth.throttle import MemorySignInThrottle, SignInThrottle
from chatrelay.config import Settings


def install_auth_state(
    app: FastAPI, settings: Settings, *, sign_in_throttle: SignInThrottle | None = None
) -> None:
    """``sign_in_throttle``: a shared one (Redis); by default it counts in this process."""
    app.state.session_cookies = SessionCookies(
        load_secret_key(settings),
        user_days=settings.session_days,
        guest_days=settings.guest_session_days,
    )
    app.state.sign_in_throttle = sign_in_throttle or MemorySignInThrottle(
        max_failures=settings.sign_in_max_failures, window=settings.sign_in_window
    )
    app.state.credential_cache = CredentialCache(ttl=settings.auth_cache_seconds)
    passwords.prepare()
