"""Who is asking: the dependencies every route uses.

Usage::

    @router.get("/api/conversations")
    async def conversations(user: Annotated[User | None, Depends(current_user)]): ...

    @router.post("/api/chat")
    async def chat(request: Request, user: Annotated[User, Depends(require_user)]):
        # A guest at least; one not stored yet is written by its admission:
        caller = quotas.caller(user, ip, on_admitted=new_guest_writer(request))

    @router.get("/api/keys")
    async def keys(user: Annotated[User, Depends(require_account)]): ...

The answer is resolved once per request and kept on ``request.state``, so several
dependencies asking cost one lookup.

A request without a session gets a guest that is not stored (:class:`NewGuest`): no row and
no cookie until the request that needs it has passed the rate limit, its checks and its
budget (``Quotas.reserve`` runs :meth:`NewGuest.save`), and then only within the address's
share of new guests (``CHATRELAY_GUEST_CREATE_LIMIT``). So a refused cookieless request, or
any number of cookieless page loads and ``GET /api/me``, writes nothing.

A user an admin disabled (``users.disabled_at``) is refused wherever a credential names
them: their API keys and sessions answer 401 ``account_disabled``, and a session's cookie is
cleared with that answer (the browser goes on as a visitor without it, and can sign out).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import HTTPConnection

from chatrelay.auth.api_keys import LAST_USED_RESOLUTION, api_key_hash, bearer_token
from chatrelay.auth.credential_cache import CachedCredential
from chatrelay.auth.origins import is_api_path, same_origin
from chatrelay.auth.parts import auth_parts
from chatrelay.auth.sessions import COOKIE_NAME, SessionCookies, is_secure, new_token, token_hash
from chatrelay.errors import ChatRelayError
from chatrelay.observability import log_user
from chatrelay.store import users
from chatrelay.store.database import Database
from chatrelay.store.models import User, new_id, utcnow

AUTHENTICATION_ERROR = "authentication_error"
_IDENTITY = "chatrelay_identity"
_NEW_GUEST = "chatrelay_new_guest"


@dataclass(frozen=True, slots=True)
class Identity:
    """A resolved request: its user, and how it proved it."""

    user: User | None
    # Set when the session cookie named the user: sign-in and sign-out replace that session.
    session_token_hash: str | None = None
    api_key_id: str | None = None
    api_key_spend_limit: int | None = None  # the key's own spend limit (nanos), if any


def forget_session(connection: HTTPConnection, hashed: str) -> None:
    """The session is being deleted or replaced: this process stops remembering it at once."""
    auth_parts(connection).credential_cache.forget(f"s:{hashed}")


def session_cookies(connection: HTTPConnection) -> SessionCookies:
    return auth_parts(connection).session_cookies


async def identify(request: Request) -> Identity:
    """The request's identity (cached): a Bearer API key, else the session cookie (never for
    another origin's call to the API paths), else none.

    An ``Authorization: Bearer`` that is not a live key is a 401 (never a silent fall back to
    the cookie); a cookie that is forged, unknown or expired just counts as no session.
    """
    cached: Identity | None = getattr(request.state, _IDENTITY, None)
    if cached is None:
        cached = await _resolve(request)
        remember(request, cached)
    return cached


def remember(request: Request, identity: Identity) -> None:
    """Make ``identity`` this request's answer from now on (after sign-in, sign-up, guest).

    A disabled user is refused here too (401, no session cookie for the browser): signing in
    to a disabled account ends in this refusal instead of a session that would be refused
    at its next request."""
    user = identity.user
    if user is not None and user.disabled_at is not None:
        cookies = session_cookies(request)
        cookies.schedule(request, cookies.clearing_header(secure=is_secure(request)))
        raise account_disabled()
    setattr(request.state, _IDENTITY, identity)
    log_user(request, identity.user.id if identity.user is not None else None)


async def _resolve(request: Request) -> Identity:
    key = bearer_token(request.headers.get("authorization"))
    if key is not None:
        return await _from_api_key(request, key)
    if _api_call_from_another_origin(request):
        # A page elsewhere calling the API (CORS, chatrelay/http/cors.py) brings its own key:
        # the visitor's cookie, which the browser may attach, never makes it act as them.
        return Identity(user=None)
    parts = auth_parts(request)
    cookies = parts.session_cookies
    token = cookies.token_from(request.cookies.get(COOKIE_NAME))
    if token is None:
        return Identity(user=None)
    hashed = token_hash(token)
    now = utcnow()
    db = parts.db
    cache, cache_key = parts.credential_cache, f"s:{hashed}"
    known = cache.get(cache_key)
    if known is None or known.expires_at is None or known.expires_at <= now:
        known = await cache.read(cache_key, partial(_read_session, db, hashed, now))
        if known is None:
            return Identity(user=None)
    user = known.user
    if user.disabled_at is not None:
        # The cookie goes with the refusal: without it the page works as a visitor's (and
        # can sign out, which a refused session could not).
        cookies.schedule(request, cookies.clearing_header(secure=is_secure(request)))
        raise account_disabled()
    guest = user.is_guest
    assert known.expires_at is not None
    if cookies.needs_refresh(known.expires_at, now, guest=guest):
        expires_at, was = now + cookies.lifetime(guest=guest), known.expires_at
        known.expires_at = expires_at  # the requests sharing this memory need not extend it too
        try:
            async with db.transaction() as session:
                await users.extend_session(session, token_hash=hashed, expires_at=expires_at)
        except BaseException:
            known.expires_at = was
            raise
        _schedule_cookie(request, token, guest=guest)
    return Identity(user=user, session_token_hash=hashed)


async def _read_session(db: Database, hashed: str, now: datetime) -> CachedCredential | None:
    async with db.read() as session:  # every request does this: no write lock for it
        found = await users.get_session_user(session, token_hash=hashed, now=now)
    if found is None:
        return None
    row, user = found
    return CachedCredential(user=user, expires_at=row.expires_at)


def account_disabled() -> ChatRelayError:
    return ChatRelayError(
        401,
        "This account has been disabled by an administrator: its sessions and API keys are "
        "refused. Ask the operator of this server to enable it again.",
        code="account_disabled",
        type=AUTHENTICATION_ERROR,
    )


def _api_call_from_another_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if origin is None or not is_api_path(request.scope):
        return False
    host = request.headers.get("host", "")
    return not same_origin(origin, scheme=request.scope["scheme"], host=host)


async def _from_api_key(request: Request, key: str) -> Identity:
    now = utcnow()
    parts = auth_parts(request)
    db = parts.db
    hashed = api_key_hash(key)
    cache, cache_key = parts.credential_cache, f"k:{hashed}"
    known = cache.get(cache_key) or await cache.read(cache_key, partial(_read_key, db, hashed))
    if known is None:
        raise ChatRelayError(
            401,
            "Invalid API key: it is unknown or has been revoked. "
            "Send 'Authorization: Bearer cr_...' with a key from 'chatrelay keys create'.",
            code="invalid_api_key",
            type=AUTHENTICATION_ERROR,
        )
    assert known.api_key_id is not None
    if known.user.disabled_at is not None:
        raise account_disabled()
    last_used = known.last_used_at
    if last_used is None or now - last_used >= LAST_USED_RESOLUTION:
        known.last_used_at = now  # the requests sharing this memory need not record it too
        try:
            async with db.transaction() as session:
                await users.touch_api_key(
                    session, key_id=known.api_key_id, now=now, resolution=LAST_USED_RESOLUTION
                )
        except BaseException:
            known.last_used_at = last_used
            raise
    return Identity(
        user=known.user,
        api_key_id=known.api_key_id,
        api_key_spend_limit=known.api_key_spend_limit,
    )


async def _read_key(db: Database, hashed: str) -> CachedCredential | None:
    async with db.read() as session:
        found = await users.get_api_key_user(session, key_hash=hashed)
    if found is None:
        return None
    api_key, user = found
    return CachedCredential(
        user=user,
        api_key_id=api_key.id,
        last_used_at=api_key.last_used_at,
        api_key_spend_limit=api_key.spend_limit,
    )


async def _add_session(
    request: Request, session: AsyncSession, *, user_id: str, guest: bool, hashed: str
) -> None:
    lifetime = session_cookies(request).lifetime(guest=guest)
    await users.create_session(
        session, user_id=user_id, token_hash=hashed, expires_at=utcnow() + lifetime
    )


def _schedule_cookie(request: Request, token: str, *, guest: bool) -> None:
    # Only after the session row is committed: a failed commit must not hand out a cookie.
    cookies = session_cookies(request)
    cookies.schedule(request, cookies.header(token, guest=guest, secure=is_secure(request)))


async def current_user(request: Request) -> User | None:
    """The user behind the API key or session cookie, or None (creates nobody)."""
    return (await identify(request)).user


class NewGuest:
    """A guest made up for a request without a session: its id is fixed, nothing is stored
    until :meth:`save` (which the request's admission runs, see the module's docstring)."""

    def __init__(self, request: Request) -> None:
        self._request = request
        # Not added to any database session: a plain object until save() writes its row.
        self.user = User(id=new_id("usr"), username=None, password_hash=None, is_admin=False)
        self.saved = False

    async def save(self) -> None:
        """Write the guest and its session, and schedule its cookie: a 429 instead when the
        client's address has had its share of new guests."""
        if self.saved:
            return
        request = self._request
        parts = auth_parts(request)
        await parts.count_new_guest(request.client.host if request.client else None)
        token = new_token()
        hashed = token_hash(token)
        now = utcnow()
        lifetime = session_cookies(request).lifetime(guest=True)
        # A small Core write: a burst of cookieless requests writes its guests together.
        await parts.db.write(
            partial(
                users.insert_guest_with_session,
                user_id=self.user.id,
                token_hash=hashed,
                created_at=now,
                expires_at=now + lifetime,
            ),
            small=True,
        )
        self.saved = True
        self.user.created_at = now
        _schedule_cookie(request, token, guest=True)
        remember(request, Identity(user=self.user, session_token_hash=hashed))


async def require_user(request: Request) -> User:
    """The current user, or a guest not stored yet when there is none (the same one for
    the whole request); pass :func:`new_guest_writer` on to the request's admission."""
    identity = await identify(request)
    if identity.user is not None:
        return identity.user
    pending: NewGuest | None = getattr(request.state, _NEW_GUEST, None)
    if pending is None:
        pending = NewGuest(request)
        setattr(request.state, _NEW_GUEST, pending)
    return pending.user


def new_guest_writer(request: Request) -> Callable[[], Awaitable[None]] | None:
    """What stores this request's new guest (None when it has a stored user): for
    ``Quotas.caller(..., on_admitted=...)``, so it runs only once the request is admitted."""
    pending: NewGuest | None = getattr(request.state, _NEW_GUEST, None)
    return pending.save if pending is not None and not pending.saved else None


async def require_account(request: Request) -> User:
    """A signed-in account or an API key's user; guests and strangers get a 401."""
    user = await current_user(request)
    if user is None or user.is_guest:
        raise ChatRelayError(
            401,
            "Sign in to an account (or send an API key) to do this.",
            code="authentication_required",
            type=AUTHENTICATION_ERROR,
        )
    return user
