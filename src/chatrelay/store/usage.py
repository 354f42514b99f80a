"""The usage ledger and per-user budgets: queries that always name the user.

Usage::

    await db.write(partial(usage.record_usage, user_id=u, model=m, prompt_tokens=42, ...))
    spent = await usage.tokens_used(session, user_id=u, since=start, until=end)
    await usage.set_token_budget(session, user_id=u, tokens=50_000)   # None: the default
"""

from __future__ import annotations

from datetime import datetime
from typing import cast

from sqlalchemy import Connection, Table, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from chatrelay.store.models import UsageRecord, User, new_id


def record_usage(
    connection: Connection,
    *,
    user_id: str,
    message_id: str | None,
    model: str,
    upstream: str,
    prompt_tokens: int,
    completion_tokens: int,
    reserved_tokens: int,
    status: str,
    source: str,
    created_at: datetime,
) -> None:
    # A Core insert (for Database.write, with the answer's final state): once per chat.
    row = {
        "id": new_id("use"),
        "user_id": user_id,
        "message_id": message_id,
        "model": model,
        "upstream": upstream,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "reserved_tokens": reserved_tokens,
        "status": status,
        "source": source,
        "created_at": created_at,
    }
    connection.execute(_INSERT_USAGE, [row])


_INSERT_USAGE = insert(cast(Table, UsageRecord.__table__))


async def tokens_used(
    session: AsyncSession, *, user_id: str, since: datetime, until: datetime
) -> int:
    """Prompt + completion tokens ``user_id`` spent on requests admitted in [since, until)."""
    total = await session.scalar(
        select(
            func.coalesce(func.sum(UsageRecord.prompt_tokens + UsageRecord.completion_tokens), 0)
        ).where(
            UsageRecord.user_id == user_id,
            UsageRecord.created_at >= since,
            UsageRecord.created_at < until,
        )
    )
    return int(total or 0)


async def set_token_budget(session: AsyncSession, *, user_id: str, tokens: int | None) -> None:
    await session.execute(update(User).where(User.id == user_id).values(token_budget=tokens))


async def set_spend_limit(session: AsyncSession, *, user_id: str, nanos: int | None) -> None:
    """A user's own spend limit per period (nanos; 0 unlimited); None: the default."""
    await session.execute(update(User).where(User.id == user_id).values(spend_limit=nanos))
