"""The admin view's queries: what was spent, grouped, and the accounts and keys to manage.

Every figure is aggregated by the database (SQLite and PostgreSQL alike), over the
``attempt_costs`` rows of a bounded time range, one result row per group and currency::

    found = await admin_usage.usage(session, group_by="day", filters=UsageFilter(since, until))
    found.rows, found.truncated
    names = await admin_usage.usernames(session, ids)
    page = await admin_usage.accounts(session, limit=100, offset=0)

Costs are nanos (1e-9) of their currency; a group whose attempts are all unpriced has a
``paid`` of None (SQL's SUM of nothing but NULLs), never 0: unknown is not free.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, Select, case, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import QueryableAttribute
from sqlalchemy.sql.expression import FunctionElement
from sqlalchemy.types import String

from chatrelay.store.models import ApiKey, AttemptCostRow, UsageRecord, User

GroupBy = Literal["day", "user", "key", "model", "upstream"]


class utc_day(FunctionElement[str]):
    """The UTC calendar day of a timestamp column, as ``YYYY-MM-DD`` text."""

    type = String()
    inherit_cache = True


@compiles(utc_day, "sqlite")
def _utc_day_sqlite(element: utc_day, compiler: Any, **kw: Any) -> str:
    # SQLite keeps UTC timestamps as 'YYYY-MM-DD HH:MM:SS.ffffff' text (models.UTCDateTime).
    return f"date({compiler.process(element.clauses, **kw)})"


@compiles(utc_day, "postgresql")
def _utc_day_postgresql(element: utc_day, compiler: Any, **kw: Any) -> str:
    # Literals written into the SQL, not bound: PostgreSQL groups by an expression only when
    # the GROUP BY's is the same as the SELECT's, bound parameters included.
    column = compiler.process(element.clauses, **kw)
    return f"to_char(({column}) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"


@dataclass(frozen=True, slots=True)
class UsageFilter:
    """Which attempts count: created in [since, until), and optionally only these."""

    since: datetime
    until: datetime
    user_id: str | None = None
    operator: bool = False  # only the operator's own attempts (no user: warming)
    model: str | None = None
    upstream: str | None = None
    kind: str | None = None  # answer | warming


@dataclass(frozen=True, slots=True)
class UsageRow:
    """One group's figures in one currency. ``key``: the group's value (None: attempts of
    no user, or made without an API key)."""

    key: str | None
    currency: str
    answers: int
    attempts: int
    prompt_tokens: int
    completion_tokens: int
    requested_tokens: int
    paid_tokens: int
    paid: int | None
    used: int | None
    unpriced_attempts: int


@dataclass(frozen=True, slots=True)
class UsageFound:
    rows: list[UsageRow]
    truncated: bool  # there were more groups than the limit


def _group_column(group_by: GroupBy) -> ColumnElement[Any] | QueryableAttribute[Any]:
    costs = AttemptCostRow
    columns: dict[str, ColumnElement[Any] | QueryableAttribute[Any]] = {
        "day": utc_day(costs.created_at),
        "user": costs.user_id,
        "key": costs.api_key_id,
        "model": costs.model,
        "upstream": costs.upstream,
    }
    return columns[group_by]


def _filtered(statement: Select[Any], filters: UsageFilter) -> Select[Any]:
    costs = AttemptCostRow
    statement = statement.where(costs.created_at >= filters.since, costs.created_at < filters.until)
    if filters.operator:
        statement = statement.where(costs.user_id.is_(None))
    elif filters.user_id is not None:
        statement = statement.where(costs.user_id == filters.user_id)
    if filters.model is not None:
        statement = statement.where(costs.model == filters.model)
    if filters.upstream is not None:
        statement = statement.where(costs.upstream == filters.upstream)
    if filters.kind is not None:
        statement = statement.where(costs.kind == filters.kind)
    return statement


async def usage(
    session: AsyncSession, *, group_by: GroupBy, filters: UsageFilter, limit: int
) -> UsageFound:
    """The figures of each group (and currency): days in order, every other grouping the
    dearest first (then by tokens paid for). At most ``limit`` rows."""
    costs = AttemptCostRow
    group = _group_column(group_by).label("grp")
    paid = func.sum(costs.paid_cost)
    statement = _filtered(
        select(
            group,
            costs.currency,
            func.count(costs.message_id.distinct()),
            func.count(),
            func.sum(costs.prompt_tokens),
            func.sum(costs.completion_tokens),
            func.sum(costs.requested_tokens),
            func.sum(costs.paid_tokens),
            paid,
            func.sum(costs.used_cost),
            func.sum(case((costs.paid_cost.is_(None), 1), else_=0)),
        ),
        filters,
    ).group_by(group, costs.currency)
    if group_by == "day":
        statement = statement.order_by(group, costs.currency)
    else:
        statement = statement.order_by(
            func.coalesce(paid, -1).desc(), func.sum(costs.paid_tokens).desc(), group
        )
    result = await session.execute(statement.limit(limit + 1))
    rows = [
        UsageRow(
            key=None if key is None else str(key),
            currency=currency,
            answers=int(answers),
            attempts=int(attempts),
            prompt_tokens=int(prompt or 0),
            completion_tokens=int(completion or 0),
            requested_tokens=int(requested or 0),
            paid_tokens=int(paid_tokens or 0),
            paid=None if paid_cost is None else int(paid_cost),
            used=None if used_cost is None else int(used_cost),
            unpriced_attempts=int(unpriced or 0),
        )
        for (
            key,
            currency,
            answers,
            attempts,
            prompt,
            completion,
            requested,
            paid_tokens,
            paid_cost,
            used_cost,
            unpriced,
        ) in result
    ]
    return UsageFound(rows=rows[:limit], truncated=len(rows) > limit)


# Names for the ids of a page of groups: one query each, whatever the number of rows.


async def usernames(session: AsyncSession, ids: Collection[str]) -> dict[str, str | None]:
    """``id -> username`` (None: a guest) of the users among ``ids`` that still exist."""
    if not ids:
        return {}
    found = await session.execute(select(User.id, User.username).where(User.id.in_(ids)))
    return {user_id: username for user_id, username in found}


@dataclass(frozen=True, slots=True)
class KeyName:
    name: str
    prefix: str
    user_id: str
    username: str | None


async def key_names(session: AsyncSession, ids: Collection[str]) -> dict[str, KeyName]:
    """The names, prefixes and owners of the API keys among ``ids`` that still exist."""
    if not ids:
        return {}
    found = await session.execute(
        select(ApiKey.id, ApiKey.name, ApiKey.prefix, ApiKey.user_id, User.username)
        .outerjoin(User, User.id == ApiKey.user_id)
        .where(ApiKey.id.in_(ids))
    )
    return {
        key_id: KeyName(name, prefix, user_id, username)
        for key_id, name, prefix, user_id, username in found
    }


# Per-period totals of a page of users or keys (the budget period: limits/periods.py).


async def tokens_by_user(
    session: AsyncSession, ids: Collection[str], *, since: datetime, until: datetime
) -> dict[str, int]:
    """Tokens (prompt + completion) each user's answers admitted in [since, until) used, from
    the usage ledger the token budgets count (answers still running are not in it yet)."""
    if not ids:
        return {}
    ledger = UsageRecord
    found = await session.execute(
        select(ledger.user_id, func.sum(ledger.prompt_tokens + ledger.completion_tokens))
        .where(ledger.user_id.in_(ids), ledger.created_at >= since, ledger.created_at < until)
        .group_by(ledger.user_id)
    )
    return {user_id: int(total or 0) for user_id, total in found}


@dataclass(frozen=True, slots=True)
class Spent:
    """What one user or key paid in one currency (nanos), and its attempts without a price."""

    currency: str
    paid: int | None
    unpriced_attempts: int


async def spent_by(
    session: AsyncSession,
    column: Literal["user", "key"],
    ids: Collection[str],
    *,
    since: datetime,
    until: datetime,
) -> dict[str, list[Spent]]:
    """What each of ``ids`` (users or API keys) paid in [since, until), per currency."""
    if not ids:
        return {}
    costs = AttemptCostRow
    owner = costs.user_id if column == "user" else costs.api_key_id
    found = await session.execute(
        select(
            owner,
            costs.currency,
            func.sum(costs.paid_cost),
            func.sum(case((costs.paid_cost.is_(None), 1), else_=0)),
        )
        .where(owner.in_(ids), costs.created_at >= since, costs.created_at < until)
        .group_by(owner, costs.currency)
        .order_by(owner, costs.currency)
    )
    spent: dict[str, list[Spent]] = {}
    for owner_id, currency, paid, unpriced in found:
        entry = Spent(currency, None if paid is None else int(paid), int(unpriced or 0))
        spent.setdefault(owner_id, []).append(entry)
    return spent


# The accounts and keys to manage.


async def accounts(session: AsyncSession, *, limit: int, offset: int) -> Sequence[User]:
    """Accounts (guests left out) by username: ``limit + 1`` at most, to tell if more follow."""
    found = await session.scalars(
        select(User)
        .where(User.username.is_not(None))
        .order_by(User.username)
        .limit(limit + 1)
        .offset(offset)
    )
    return list(found)


async def api_keys(
    session: AsyncSession, *, limit: int, offset: int
) -> Sequence[tuple[ApiKey, str | None]]:
    """Every user's API keys, the newest first, with the owner's username: ``limit + 1`` at
    most."""
    found = await session.execute(
        select(ApiKey, User.username)
        .outerjoin(User, User.id == ApiKey.user_id)
        .order_by(ApiKey.created_at.desc(), ApiKey.id)
        .limit(limit + 1)
        .offset(offset)
    )
    return [(key, username) for key, username in found]


async def change_user(session: AsyncSession, *, user_id: str, values: dict[str, Any]) -> bool:
    """Set these columns of a user; False when there is no such user."""
    if not values:
        return await session.get(User, user_id) is not None
    result = await session.execute(update(User).where(User.id == user_id).values(**values))
    return bool(getattr(result, "rowcount", 0))
