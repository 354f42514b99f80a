"""A signed-in account's own sessions and password: ``POST /api/auth/logout-all`` and
``POST /api/auth/password``.

A stolen session cookie lives as long as the session (30 days by default, pushed forward by
use), so its owner needs a way to end it without the operator: sign out everywhere, or change
the password, which ends every other session too. The browser that changes the password stays
signed in with a new token: its old one may be the stolen copy.

Both are cookie or API-key requests of an account (guests have no password to protect and one
browser), and unsafe methods: CsrfProtection refuses them from another site's page, as it does
every other sign-in route.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from chatrelay.auth.accounts import MAX_PASSWORD_CHARS, check_new_password
from chatrelay.auth.identity import (
    Identity,
    forget_session,
    identify,
    remember,
    require_account,
    session_cookies,
)
from chatrelay.auth.passwords import hash_password, verify_password
from chatrelay.auth.sessions import end_user_sessions, is_secure, new_token, token_hash
from chatrelay.errors import ChatRelayError
from chatrelay.http.api_docs import error_responses
from chatrelay.http.context import ContextDep, DatabaseDep
from chatrelay.http.routes.auth import me
from chatrelay.limits.refusals import too_many_failures
from chatrelay.limits.sign_in import SignInThrottle, new_attempt_id
from chatrelay.store import users
from chatrelay.store.database import Database
from chatrelay.store.models import User, utcnow
from chatrelay.text import StoredText

router = APIRouter()


class PasswordChange(BaseModel):
    # Bounded before anything is hashed, as sign-in's fields are.
    current_password: StoredText = Field(max_length=MAX_PASSWORD_CHARS)
    new_password: StoredText = Field(max_length=MAX_PASSWORD_CHARS)


def _forget(request: Request, hashes: list[str]) -> None:
    # This process stops honouring them at once; other instances within their credential
    # cache's lifetime (CHATRELAY_AUTH_CACHE_SECONDS).
    for hashed in hashes:
        forget_session(request, hashed)


async def _check_current_password(
    db: Database, throttle: SignInThrottle, user: User, password: str
) -> None:
    """A 403 unless ``password`` is ``user``'s. Counted with the username's failed sign-ins:
    a stolen cookie is not a way to guess the password without the sign-in throttle."""
    attempts = [f"user:{user.username}"]
    # Checked and counted before the (slow) check in one step, as sign-in does: a parallel
    # burst cannot slip in between the check and the count (one script with Redis).
    wait = await throttle.attempt(attempts, attempt_id=new_attempt_id())
    if wait is not None:
        raise too_many_failures(wait, what="wrong passwords")
    # Read now, not from the credential cache's copy of the user: it may predate a change.
    async with db.read() as session:
        found = await users.get_user(session, user_id=user.id)
    stored = found.password_hash if found is not None else None
    if stored is None or not await verify_password(stored, password):
        raise ChatRelayError(
            403,
            "The current password is wrong.",
            code="wrong_password",
            type="permission_error",
            param="current_password",
        )
    await throttle.reset(attempts[0])


@router.post(
    "/api/auth/logout-all",
    status_code=204,
    responses=error_responses(
        401, 403, notes={401: "Not signed in to an account (`authentication_required`)."}
    ),
)
async def logout_everywhere(
    request: Request, user: Annotated[User, Depends(require_account)], db: DatabaseDep
) -> Response:
    """Sign out everywhere: every session of this account (every browser, this one too) is
    deleted and this browser's cookie cleared. API keys are not affected (revoke them with
    `chatrelay keys revoke`)."""
    async with db.transaction() as session:
        ended = await end_user_sessions(session, user_id=user.id)
    _forget(request, ended)
    remember(request, Identity(user=None))
    cookies = session_cookies(request)
    cookies.schedule(request, cookies.clearing_header(secure=is_secure(request)))
    return Response(status_code=204)


@router.post(
    "/api/auth/password",
    responses=error_responses(
        400,
        401,
        403,
        413,
        422,
        429,
        503,
        notes={
            401: "Not signed in to an account (`authentication_required`).",
            403: "The current password is wrong (`wrong_password`), or the request came "
            "from another site (`csrf_rejected`).",
            422: "Or the new password breaks the rules (`password_too_short`, "
            "`password_too_long`).",
            429: "Too many wrong passwords for this account (`too_many_attempts`).",
            503: "The shared sign-in throttle (Redis) cannot be reached.",
        },
    ),
)
async def change_password(
    body: PasswordChange,
    request: Request,
    user: Annotated[User, Depends(require_account)],
    context: ContextDep,
) -> dict[str, Any]:
    """Change this account's password: ``{current_password, new_password}``. Every other
    session of the account is signed out; this browser stays signed in with a new cookie."""
    try:
        check_new_password(body.new_password)
    except ChatRelayError as error:
        error.param = "new_password"
        raise
    db = context.db
    await _check_current_password(db, context.auth.sign_in_throttle, user, body.current_password)
    password_hash = await hash_password(body.new_password)
    identity = await identify(request)
    token = new_token() if identity.session_token_hash is not None else None
    async with db.transaction() as session:
        await users.set_password_hash(session, user_id=user.id, password_hash=password_hash)
        ended = await end_user_sessions(session, user_id=user.id)
        if token is not None:
            await users.create_session(
                session,
                user_id=user.id,
                token_hash=token_hash(token),
                expires_at=utcnow() + session_cookies(request).lifetime(guest=False),
            )
    _forget(request, ended)
    if token is not None:
        # A new token, not the old one kept: whoever holds a copy of the old cookie is out.
        cookies = session_cookies(request)
        cookies.schedule(request, cookies.header(token, guest=False, secure=is_secure(request)))
        remember(request, Identity(user=user, session_token_hash=token_hash(token)))
    return me(user)
