"""The admin view: what was spent and by whom (``GET /api/admin/usage``), how each upstream
serves (``GET /api/admin/upstreams``), the accounts and keys (``GET /api/admin/users``,
``GET /api/admin/keys``), the actions on them (``PATCH /api/admin/users/{id}``, ``POST
/api/admin/keys/{id}/revoke``) and the page (``/admin``).

Administrators only (accounts made with ``chatrelay users create NAME --admin``), by their
session cookie or by one of their API keys. Anyone else gets the 404 of an unknown path,
the same answer byte for byte, whatever the method or the body: nothing here says it exists.
That is why a body is read only once the caller is known to be an admin (FastAPI would parse
it first and answer a malformed one with a 400), and why the paths under ``/api/admin/`` and
``/admin/`` that are not routes answer 404 (not 405) to every method.

The state-changing routes are protected from other sites as every other one is: by
CsrfProtection (an unsafe cookie request from a foreign ``Origin`` is a 403) and by taking
JSON bodies only.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError
from starlette.exceptions import HTTPException
from starlette.responses import FileResponse, Response

from chatrelay.auth.identity import current_user
from chatrelay.auth.parts import auth_parts
from chatrelay.errors import NOT_FOUND, ChatRelayError, validation_error
from chatrelay.http.api_docs import error_responses
from chatrelay.http.context import AppContext, ContextDep, DatabaseDep
from chatrelay.http.routes import admin_rows as shapes
from chatrelay.limits.periods import PeriodWindow, period_window
from chatrelay.store import admin_usage
from chatrelay.store import users as user_queries
from chatrelay.store.admin_usage import GroupBy, Spent, UsageFilter
from chatrelay.store.database import Database
from chatrelay.store.models import ApiKey, User, utcnow
from chatrelay.store.upstream_figures import upstream_figures
from chatrelay.text import StoredText
from chatrelay.upstreams.pricing import NANOS, money

router = APIRouter(tags=["admin"])

PAGE = Path(__file__).resolve().parent.parent.parent / "web" / "admin.html"
MAX_ROWS = 10_000
MAX_INT32 = 2**31 - 1  # users.token_budget is an INTEGER
MAX_SPEND_LIMIT = 1_000_000_000  # in units of the currency: far below BIGINT's nanos

_NOT_ADMIN = {404: "Not an administrator: the same answer as an unknown path."}


async def require_admin(request: Request) -> User:
    """The current user if it is an enabled administrator; else the 404 of an unknown path
    (a refused credential too: to a stranger, this path does not exist)."""
    try:
        user = await current_user(request)
    except ChatRelayError:
        user = None
    if user is None or not user.is_admin or user.disabled_at is not None:
        raise HTTPException(404)  # what Starlette's router raises for an unknown path
    return user


Admin = Annotated[User, Depends(require_admin)]


# ---- usage ------------------------------------------------------------------


async def _user_filter(db: Database, value: str | None) -> tuple[str | None, bool]:
    """(user id, operator only) for the ``user`` filter: a user's id or username, or
    ``operator``; an id no user has any more still filters (the ledger outlives users)."""
    if value is None:
        return None, False
    if value == shapes.OPERATOR:
        return None, True
    async with db.read() as session:
        found = await user_queries.get_user(session, user_id=value)
        if found is None:
            found = await user_queries.get_user_by_username(session, username=value.lower())
    if found is not None:
        return found.id, False
    if value.startswith("usr_"):
        return value, False
    raise ChatRelayError(
        400,
        f"No user is named {value!r}: give a username, a user id or 'operator'.",
        code="unknown_user",
        param="user",
    )


_USAGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "`{group_by, since, until, rows, truncated}` (JSON), or the same rows as "
        "CSV with a header row (`format=csv`, an attachment).",
        "content": {"application/json": {}, "text/csv": {"schema": {"type": "string"}}},
    },
    **error_responses(
        400,
        404,
        422,
        notes={
            400: "A filter is wrong: `invalid_date`, `invalid_range`, `range_too_long` (over "
            f"{shapes.MAX_DAYS} days), `unknown_user`.",
            **_NOT_ADMIN,
        },
    ),
}


@router.get("/api/admin/usage", responses=_USAGE_RESPONSES)
async def usage(
    admin: Admin,
    db: DatabaseDep,
    group_by: GroupBy = "day",
    since: Annotated[StoredText | None, Query(max_length=40)] = None,
    until: Annotated[StoredText | None, Query(max_length=40)] = None,
    user: Annotated[StoredText | None, Query(max_length=64)] = None,
    model: Annotated[StoredText | None, Query(max_length=200)] = None,
    upstream: Annotated[StoredText | None, Query(max_length=200)] = None,
    kind: Literal["answer", "warming"] | None = None,
    format: Literal["json", "csv"] = "json",
    limit: Annotated[int, Query(ge=1, le=MAX_ROWS)] = 1000,
) -> Response:
    """What was spent, a row per group (`group_by`: `day`, `user`, `key`, `model`,
    `upstream`) and currency, from every attempt made upstream (failovers and the operator's
    warming requests included): `answers`, `attempts`, `prompt_tokens`, `completion_tokens`,
    `requested_tokens`, `paid_tokens`, `paid`, `used`, `difference` (money; null when every
    attempt of the group is unpriced), `unpriced_attempts`. `since` and `until` are ISO
    dates (`until` included) or datetimes, UTC; by default the last 30 days, at most 366.
    `user`: a username, user id or `operator`. Days in order; other groups the dearest
    first, at most `limit`. Administrators only."""
    start, end = shapes.usage_range(since, until)
    user_id, operator = await _user_filter(db, user)
    filters = UsageFilter(
        since=start,
        until=end,
        user_id=user_id,
        operator=operator,
        model=model,
        upstream=upstream,
        kind=kind,
    )
    async with db.read() as session:
        found = await admin_usage.usage(session, group_by=group_by, filters=filters, limit=limit)
        ids = {row.key for row in found.rows if row.key is not None}
        names = await admin_usage.usernames(session, ids) if group_by == "user" else {}
        keys = await admin_usage.key_names(session, ids) if group_by == "key" else {}
    rows = [
        {**shapes.group_fields(group_by, row, names, keys), **shapes.figures(row)}
        for row in found.rows
    ]
    if format == "csv":
        return shapes.csv_response(group_by, rows, start, end)
    for row in rows:
        for name in shapes.MONEY:
            row[name] = money(row[name])
    body = {
        "group_by": group_by,
        "since": start.isoformat(),
        "until": end.isoformat(),
        "rows": rows,
        "truncated": found.truncated,
    }
    return Response(orjson.dumps(body), media_type="application/json")


@router.get("/api/admin/upstreams", responses=error_responses(404, notes=_NOT_ADMIN))
async def upstream_performance(admin: Admin, context: ContextDep) -> dict[str, Any]:
    """Which upstream earns its traffic: per upstream and model, from the answers of the last
    `CHATRELAY_FIGURES_WINDOW` seconds, `{since, window_seconds, data}`; each with `answers`,
    `attempts`, `ttft_p50_ms`, `ttft_p95_ms`, `tokens_per_s`, `stall_rate`, `cut_rate`,
    `failover_rate`, `paid_tokens`, `used_tokens`, `useful_tokens`, `paid`, `currency`,
    `cost_per_1k_useful` (docs/spending.md). Administrators only."""
    window = context.settings.figures_window
    since = utcnow() - timedelta(seconds=window)
    async with context.db.read() as session:
        figures = await upstream_figures(session, since=since)
    return {
        "since": since.isoformat(),
        "window_seconds": window,
        "data": [f.as_dict() for f in figures],
    }


# ---- accounts and keys --------------------------------------------------------


def _spent(entries: list[Spent]) -> list[dict[str, Any]]:
    return [
        {
            "currency": e.currency,
            "paid": money(e.paid),
            "unpriced_attempts": e.unpriced_attempts,
        }
        for e in entries
    ]


def _period(context: AppContext) -> PeriodWindow:
    return period_window(context.settings.budget_period, utcnow())


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


async def _users_json(context: AppContext, found: list[User]) -> list[dict[str, Any]]:
    """The accounts with what each used and spent this budget period."""
    window = _period(context)
    ids = [u.id for u in found]
    async with context.db.read() as session:
        tokens = await admin_usage.tokens_by_user(
            session, ids, since=window.start, until=window.end
        )
        spent = await admin_usage.spent_by(
            session, "user", ids, since=window.start, until=window.end
        )
    return [
        {
            "id": u.id,
            "username": u.username,
            "is_guest": u.is_guest,
            "is_admin": u.is_admin,
            "disabled": u.disabled_at is not None,
            "disabled_at": _iso(u.disabled_at),
            "created_at": _iso(u.created_at),
            "token_budget": u.token_budget,
            "token_budget_effective": context.quotas.budget_of(u),
            "spend_limit": money(u.spend_limit),
            "spend_limit_effective": money(context.quotas.spending.limit_of(u)),
            "tokens_used": tokens.get(u.id, 0),
            "spent": _spent(spent.get(u.id, [])),
        }
        for u in found
    ]


def _period_fields(context: AppContext) -> dict[str, Any]:
    window = _period(context)
    return {
        "period": window.period,
        "period_start": window.start.isoformat(),
        "resets_at": window.end.isoformat(),
    }


@router.get("/api/admin/users", responses=error_responses(404, 422, notes=_NOT_ADMIN))
async def list_users(
    admin: Admin,
    context: ContextDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
) -> dict[str, Any]:
    """The accounts (guests left out), by username: `{period, period_start, resets_at, data,
    has_more}`; each with `is_admin`, `disabled`, its own `token_budget` and `spend_limit`
    (null: the server's default), the `token_budget_effective` and `spend_limit_effective`
    that apply (0: unlimited), and what it used this budget period: `tokens_used` (finished
    answers) and `spent` (per currency). Administrators only."""
    async with context.db.read() as session:
        found = list(await admin_usage.accounts(session, limit=limit, offset=offset))
    data = await _users_json(context, found[:limit])
    return {**_period_fields(context), "data": data, "has_more": len(found) > limit}


class UserChange(BaseModel):
    """What an admin may change on a user; a field left out stays as it is."""

    model_config = ConfigDict(extra="forbid")

    token_budget: StrictInt | None = Field(
        default=None,
        ge=0,
        le=MAX_INT32,
        description="Tokens per budget period; 0 is unlimited, null follows the default.",
    )
    spend_limit: float | None = Field(
        default=None,
        ge=0,
        le=MAX_SPEND_LIMIT,
        allow_inf_nan=False,
        description="Money per budget period, in the upstreams' currency; 0 is unlimited, "
        "null follows the default.",
    )
    disabled: StrictBool = Field(
        default=False,
        description="true: the user's sessions and API keys are refused (401) from now on.",
    )


async def _json_body(request: Request, model: type[BaseModel]) -> BaseModel:
    """The body, read and checked only now that the caller is an admin (see the module's
    docstring): JSON only, as FastAPI's own body parsing would answer."""
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise ChatRelayError(
            422,
            "Send the body as JSON, with 'Content-Type: application/json'.",
            code="invalid_field",
            param="body",
        )
    raw = await request.body()
    try:
        return model.model_validate_json(raw)
    except ValidationError as error:
        raise validation_error(
            RequestValidationError(
                [{**e, "loc": ("body", *e.get("loc", ()))} for e in error.errors()]
            )
        ) from None


def _body_docs(model: type[BaseModel]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }


def _no_such(what: str, ident: str) -> ChatRelayError:
    return ChatRelayError(
        404,
        f"No {what} has the id {ident!r}.",
        code=f"{what.replace(' ', '_')}_not_found",
        type=NOT_FOUND,
    )


@router.patch(
    "/api/admin/users/{user_id}",
    openapi_extra=_body_docs(UserChange),
    responses=error_responses(
        400,
        403,
        404,
        409,
        413,
        422,
        notes={
            404: "No such user (`user_not_found`), or not an administrator (the same answer "
            "as an unknown path).",
            409: "An administrator cannot disable their own account (`cannot_disable_self`).",
        },
    ),
)
async def change_user(
    user_id: str, request: Request, admin: Admin, context: ContextDep
) -> dict[str, Any]:
    """Set a user's `token_budget` (tokens per budget period), `spend_limit` (money per
    budget period, in the upstreams' currency) or `disabled`; null restores a default, 0 is
    unlimited. A disabled user's sessions and API keys are refused (401 `account_disabled`)
    from the next request on. Answers the user as `GET /api/admin/users` lists it.
    Administrators only."""
    body = await _json_body(request, UserChange)
    assert isinstance(body, UserChange)
    values: dict[str, Any] = {}
    given = body.model_fields_set
    if "token_budget" in given:
        values["token_budget"] = body.token_budget
    if "spend_limit" in given:
        values["spend_limit"] = (
            None if body.spend_limit is None else round(body.spend_limit * NANOS)
        )
    if "disabled" in given and body.disabled and user_id == admin.id:
        raise ChatRelayError(
            409,
            "You cannot disable your own account: another administrator can.",
            code="cannot_disable_self",
            param="disabled",
        )
    db = context.db
    async with db.transaction() as session:
        found = await user_queries.get_user(session, user_id=user_id)
        if found is None:
            raise _no_such("user", user_id)
        if "disabled" in given and body.disabled != (found.disabled_at is not None):
            # Kept when it is already so: the first time it was disabled stays on record.
            values["disabled_at"] = utcnow() if body.disabled else None
        await admin_usage.change_user(session, user_id=user_id, values=values)
        await session.refresh(found)
    # Its sessions and keys are looked up again from the next request on, in this process
    # (other instances within CHATRELAY_AUTH_CACHE_SECONDS).
    auth_parts(request).credential_cache.forget_user(user_id)
    [shown] = await _users_json(context, [found])
    return shown


def _key_json(key: ApiKey, username: str | None, spent: list[Spent]) -> dict[str, Any]:
    return {
        "id": key.id,
        "name": key.name,
        "prefix": key.prefix,
        "user_id": key.user_id,
        "username": username,
        "created_at": _iso(key.created_at),
        "last_used_at": _iso(key.last_used_at),
        "revoked": key.revoked_at is not None,
        "revoked_at": _iso(key.revoked_at),
        "spend_limit": money(key.spend_limit),
        "spent": _spent(spent),
    }


@router.get("/api/admin/keys", responses=error_responses(404, 422, notes=_NOT_ADMIN))
async def list_keys(
    admin: Admin,
    context: ContextDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
) -> dict[str, Any]:
    """Every user's API keys, the newest first: `{period, period_start, resets_at, data,
    has_more}`; each with its owner, `revoked`, its own `spend_limit` and what it `spent` this
    budget period (per currency). Administrators only."""
    window = _period(context)
    async with context.db.read() as session:
        found = list(await admin_usage.api_keys(session, limit=limit, offset=offset))
        ids = [key.id for key, _ in found[:limit]]
        spent = await admin_usage.spent_by(
            session, "key", ids, since=window.start, until=window.end
        )
    data = [_key_json(key, username, spent.get(key.id, [])) for key, username in found[:limit]]
    return {**_period_fields(context), "data": data, "has_more": len(found) > limit}


@router.post(
    "/api/admin/keys/{key_id}/revoke",
    responses=error_responses(
        403,
        404,
        notes={
            404: "No such key (`api_key_not_found`), or not an administrator (the same "
            "answer as an unknown path)."
        },
    ),
)
async def revoke_key(
    key_id: str, request: Request, admin: Admin, context: ContextDep
) -> dict[str, Any]:
    """Revoke an API key: refused (401 `invalid_api_key`) from the next request on. Revoking
    a revoked key changes nothing. Answers the key as `GET /api/admin/keys` lists it.
    Administrators only."""
    window = _period(context)
    async with context.db.transaction() as session:
        key = await user_queries.revoke_api_key(session, key_id=key_id)
        if key is None:
            raise _no_such("api key", key_id)
        owner = await user_queries.get_user(session, user_id=key.user_id)
        spent = await admin_usage.spent_by(
            session, "key", [key.id], since=window.start, until=window.end
        )
    auth_parts(request).credential_cache.forget(f"k:{key.key_hash}")
    return _key_json(key, owner.username if owner else None, spent.get(key.id, []))


# ---- the page, and nothing else -----------------------------------------------


@router.api_route("/admin", methods=["GET", "HEAD"], include_in_schema=False)
async def admin_page(admin: Admin) -> FileResponse:
    """The admin page (web/admin.html), served as the chat page is."""
    return FileResponse(PAGE, headers={"Cache-Control": "no-cache"})


_EVERY_METHOD = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


async def _unknown() -> Response:
    raise HTTPException(404)


# Last: a path under these that no route above serves, or a method none of them takes, is an
# unknown path to everyone (a 405 or a trailing-slash redirect would say the route exists).
router.add_api_route(
    "/admin",
    _unknown,
    methods=["POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
    include_in_schema=False,
)
for _prefix in ("/admin/", "/api/admin/"):
    router.add_api_route(
        _prefix + "{rest:path}", _unknown, methods=_EVERY_METHOD, include_in_schema=False
    )
