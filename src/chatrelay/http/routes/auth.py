"""Accounts: ``/api/auth/register``, ``/api/auth/login``, ``/api/auth/logout``,
``/api/auth/guest`` and ``/api/me``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from chatrelay.auth.accounts import MAX_PASSWORD_CHARS, check_new_password, normalise_username
from chatrelay.auth.identity import (
    AUTHENTICATION_ERROR,
    Identity,
    account_disabled,
    current_user,
    forget_session,
    identify,
    new_guest_writer,
    remember,
    require_user,
    session_cookies,
)
from chatrelay.auth.passwords import burn_verify_time, hash_password, needs_rehash, verify_password
from chatrelay.auth.sessions import is_secure, new_token, token_hash
from chatrelay.errors import ChatRelayError
from chatrelay.http.api_docs import error_responses
from chatrelay.http.context import ContextDep, DatabaseDep, QuotasDep
from chatrelay.limits.quotas import Quotas
from chatrelay.limits.refusals import too_many_failures
from chatrelay.limits.sign_in import new_attempt_id
from chatrelay.store import users
from chatrelay.store.models import User, utcnow
from chatrelay.text import StoredText

router = APIRouter()


class Credentials(BaseModel):
    # Bounded before anything is hashed, looked up or kept as a throttle key.
    username: StoredText = Field(max_length=64)
    password: StoredText = Field(max_length=MAX_PASSWORD_CHARS)


def me(user: User | None) -> dict[str, Any]:
    """``None``: a visitor without a session, a guest not stored yet (``id`` null)."""
    if user is None:
        return {"id": None, "username": None, "is_guest": True, "is_admin": False}
    return {
        "id": user.id,
        "username": user.username,
        "is_guest": user.is_guest,
        "is_admin": user.is_admin,
    }


def _client_address(request: Request, quotas: Quotas) -> str:
    """What the per-address limits count this client as (an IPv6 one: its network)."""
    client = request.client.host if request.client else None
    return quotas.address(client) or "unknown"


async def _replace_session(
    request: Request, session: AsyncSession, identity: Identity, user: User
) -> str:
    """A fresh session for ``user`` in place of the browser's old one; returns the token.

    Signing in or up always issues a new token, so a session id planted in a browser
    beforehand (session fixation) never becomes a signed-in one.
    """
    if identity.session_token_hash is not None:
        await users.delete_session(session, token_hash=identity.session_token_hash)
        forget_session(request, identity.session_token_hash)
    token = new_token()
    await users.create_session(
        session,
        user_id=user.id,
        token_hash=token_hash(token),
        expires_at=utcnow() + session_cookies(request).lifetime(guest=False),
    )
    return token


def _signed_in(request: Request, user: User, token: str) -> None:
    cookies = session_cookies(request)
    cookies.schedule(request, cookies.header(token, guest=False, secure=is_secure(request)))
    remember(request, Identity(user=user, session_token_hash=token_hash(token)))


@router.get("/api/me", responses=error_responses(401))
async def who_am_i(user: Annotated[User | None, Depends(current_user)]) -> dict[str, Any]:
    """The current user: ``{id, username, is_guest, is_admin}``. Without a session, a guest
    with ``id`` null: nothing is created (the first chat creates the guest and its cookie)."""
    return me(user)


@router.post("/api/auth/guest", status_code=201, responses=error_responses(401, 403, 429, 503))
async def become_guest(request: Request) -> dict[str, Any]:
    """Become a guest now, with its session cookie, rather than at the first chat (answers
    the current user when there is one). 429 past the address's share of new guests
    (``CHATRELAY_GUEST_CREATE_LIMIT``)."""
    user = await require_user(request)
    save = new_guest_writer(request)
    if save is not None:
        await save()
    return me(user)


@router.post(
    "/api/auth/register",
    status_code=201,
    responses=error_responses(
        400,
        401,
        403,
        409,
        413,
        422,
        429,
        503,
        notes={
            409: "The username is taken (`username_taken`), or this browser is already "
            "signed in (`already_signed_in`).",
            422: "Or the username or password breaks the rules (`invalid_username`, "
            "`password_too_short`, `password_too_long`).",
            429: "Too many accounts created from this address (`CHATRELAY_REGISTER_LIMIT`).",
        },
    ),
)
async def register(
    body: Credentials, request: Request, db: DatabaseDep, quotas: QuotasDep
) -> dict[str, Any]:
    """Create an account. A guest becomes it in place, keeping its id and conversations."""
    username = normalise_username(body.username)
    check_new_password(body.password)
    identity = await identify(request)
    current = identity.user
    if current is not None and not current.is_guest:
        raise ChatRelayError(
            409,
            f"Already signed in as '{current.username}': sign out to create another account.",
            code="already_signed_in",
        )
    # Counted per address before any work: each attempt costs an argon2 hash, and a taken
    # name's 409 tells whether an account exists.
    await quotas.count_registration(request.client.host if request.client else None)
    async with db.read() as session:
        taken = await users.get_user_by_username(session, username=username) is not None
    if taken:  # before hashing: a taken name costs no argon2 work
        raise _username_taken(username)
    password_hash = await hash_password(body.password)
    try:
        async with db.transaction() as session:
            if current is None:
                user = await users.create_user(
                    session, username=username, password_hash=password_hash
                )
            else:
                registered = await users.register_guest(
                    session, guest_id=current.id, username=username, password_hash=password_hash
                )
                found = await users.get_user(session, user_id=current.id)
                if not registered or found is None:
                    raise ChatRelayError(
                        409,
                        "This guest was registered or removed meanwhile; reload and sign in.",
                        code="already_signed_in",
                    )
                user = found
            token = await _replace_session(request, session, identity, user)
    except IntegrityError:  # taken meanwhile
        raise _username_taken(username) from None
    _signed_in(request, user, token)
    return me(user)


def _username_taken(username: str) -> ChatRelayError:
    return ChatRelayError(
        409, f"The username '{username}' is taken.", code="username_taken", param="username"
    )


@router.post(
    "/api/auth/login",
    responses=error_responses(
        400,
        401,
        403,
        413,
        422,
        429,
        503,
        notes={
            401: "Wrong username or password (`invalid_credentials`).",
            429: "Too many failed sign-ins for this username or address.",
        },
    ),
)
async def login(body: Credentials, request: Request, context: ContextDep) -> dict[str, Any]:
    """Sign in. A guest browser's conversations move to the account, and the guest goes."""
    db = context.db
    username = body.username.lower()
    user_key, address_key = f"user:{username}", f"ip:{_client_address(request, context.quotas)}"
    throttle = context.auth.sign_in_throttle
    # Counted as a failure in the same atomic step as the check, before the (slow) password
    # check, so a burst of parallel guesses cannot all slip in under the limit.
    attempt = new_attempt_id()
    wait = await throttle.attempt([user_key, address_key], attempt_id=attempt)
    if wait is not None:
        raise too_many_failures(wait, what="failed sign-ins")
    async with db.transaction() as session:
        account = await users.get_user_by_username(session, username=username)
    if account is None or account.password_hash is None:
        await burn_verify_time(body.password)  # as slow as a real check: timing tells nothing
        valid = False
    else:
        valid = await verify_password(account.password_hash, body.password)
    if account is None or not valid:
        raise ChatRelayError(
            401,
            "Wrong username or password.",
            code="invalid_credentials",
            type=AUTHENTICATION_ERROR,
        )
    if account.disabled_at is not None:  # before anything moves to it (a guest's chats)
        raise account_disabled()
    # The username starts afresh; the address only takes back this attempt: an attacker
    # signing in to their own account between guesses at others clears nothing.
    await throttle.reset(user_key)
    await throttle.forgive(address_key, attempt_id=attempt)
    assert account.password_hash is not None  # verified above
    fresh_hash = await hash_password(body.password) if needs_rehash(account.password_hash) else None
    identity = await identify(request)
    async with db.transaction() as session:
        if fresh_hash is not None:
            await users.set_password_hash(session, user_id=account.id, password_hash=fresh_hash)
        previous = identity.user
        adopted = None
        if identity.session_token_hash is not None and previous is not None and previous.is_guest:
            await users.adopt_guest(session, guest_id=previous.id, owner_id=account.id)
            adopted = previous.id
        token = await _replace_session(request, session, identity, account)
    if adopted is not None:
        # Its answers still being generated here now belong to the account too, so that
        # their final state is written and the account can follow and stop them.
        context.chat.adopt_answers(guest_id=adopted, owner_id=account.id)
    _signed_in(request, account, token)
    return me(account)


@router.post("/api/auth/logout", status_code=204, responses=error_responses(401, 403))
async def logout(request: Request, db: DatabaseDep) -> Response:
    """Sign out: this browser's session is deleted and its cookie cleared."""
    identity = await identify(request)
    if identity.session_token_hash is not None:
        async with db.transaction() as session:
            await users.delete_session(session, token_hash=identity.session_token_hash)
        forget_session(request, identity.session_token_hash)
    remember(request, Identity(user=None))
    cookies = session_cookies(request)
    cookies.schedule(request, cookies.clearing_header(secure=is_secure(request)))
    return Response(status_code=204)
