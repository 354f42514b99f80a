"""What every request to an upstream cost (``AttemptCostRow``): written with the answer's
final state, one row per attempt; the operator's own warming requests without a user.

Usage::

    await db.write(partial(costs.record_costs, rows=[{...}, ...]))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import Connection, Table, insert

from chatrelay.store.models import AttemptCostRow, new_id


def record_costs(connection: Connection, *, rows: Sequence[dict[str, Any]]) -> None:
    """Core inserts, for ``Database.write`` (with the answer's final state)."""
    if rows:
        connection.execute(_INSERT, [{"id": new_id("cost"), **row} for row in rows])


_INSERT = insert(cast(Table, AttemptCostRow.__table__))
