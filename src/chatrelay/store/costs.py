"""What every request to an upstream cost (``AttemptCostRow``): written with the answer's
final state, one row per attempt; the operator's own warming requests without a user.

Usage::

    await db.write(partial(costs.record_costs, rows=[{...}, ...]))
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Table, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from chatrelay.store.models import AttemptCostRow, new_id


def record_costs(connection: Connection, *, rows: Sequence[dict[str, Any]]) -> None:
    """Core inserts, for ``Database.write`` (with the answer's final state)."""
    if rows:
        connection.execute(_INSERT, [{"id": new_id("cost"), **row} for row in rows])


_INSERT = insert(cast(Table, AttemptCostRow.__table__))

# The spend accounts (limits/spending.py): who, and the column that names them.
_ACCOUNT_COLUMNS = {
    "spend:user:": AttemptCostRow.user_id,
    "spend:key:": AttemptCostRow.api_key_id,
    "spend:upstream:": AttemptCostRow.upstream,
}


async def spent(session: AsyncSession, *, account: str, since: datetime, until: datetime) -> int:
    """Nanos paid in [since, until) by a spend account (``spend:user:<id>``,
    ``spend:key:<id>``, ``spend:upstream:<name>``); unpriced attempts count nothing."""
    for prefix, column in _ACCOUNT_COLUMNS.items():
        if account.startswith(prefix):
            total = await session.scalar(
                select(func.coalesce(func.sum(AttemptCostRow.paid_cost), 0)).where(
                    column == account.removeprefix(prefix),
                    AttemptCostRow.created_at >= since,
                    AttemptCostRow.created_at < until,
                )
            )
            return int(total or 0)
    return 0
