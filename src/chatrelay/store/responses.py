"""Stored Responses API requests (``ResponseRow``): what each asked, beside the answer it made.

A response is an answer of a conversation like any other (its question rows, its answer row);
this table keeps only what those rows do not: the request fields the response object repeats
and the input items as given. Every query filters on the owner.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import Connection, Table, delete, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from chatrelay.store.conversations import NotFound, _refuse_impossible_id
from chatrelay.store.models import Conversation, MessageRow, ResponseRow, utcnow

RESPONSES = cast(Table, ResponseRow.__table__)
_INSERT = insert(RESPONSES)


def insert_response(
    connection: Connection,
    conversation_id: str,
    answer_id: str,
    *,
    owner_id: str,
    request: dict[str, Any],
    input: list[Any],
) -> None:
    """The request's record, in the transaction that stores its turn (``append_turn``'s
    ``also``)."""
    connection.execute(
        _INSERT,
        {
            "id": answer_id,
            "user_id": owner_id,
            "conversation_id": conversation_id,
            "request": request,
            "input": input,
            "created_at": utcnow(),
        },
    )


async def get_response(
    session: AsyncSession, *, owner_id: str, answer_id: str
) -> tuple[ResponseRow, MessageRow]:
    """The owner's stored request and its answer row; NotFound (404) for anyone else's, as for
    one that does not exist."""
    _refuse_impossible_id("response", answer_id)  # before the query: PostgreSQL refuses a NUL
    found = (
        await session.execute(
            select(ResponseRow, MessageRow)
            .join(MessageRow, MessageRow.id == ResponseRow.id)
            .where(ResponseRow.id == answer_id, ResponseRow.user_id == owner_id)
        )
    ).first()
    if found is None:
        raise NotFound("response", answer_id)
    return found[0], found[1]


async def turn_rows(
    session: AsyncSession, *, owner_id: str, answer: MessageRow
) -> tuple[Sequence[MessageRow], Sequence[MessageRow]]:
    """The conversation's messages up to the answer (history, the answer last) and after it."""
    rows = (
        await session.scalars(
            select(MessageRow)
            .where(
                MessageRow.conversation_id == answer.conversation_id,
                MessageRow.user_id == owner_id,
            )
            .order_by(MessageRow.seq)
        )
    ).all()
    upto = [row for row in rows if row.seq <= answer.seq]
    return upto, [row for row in rows if row.seq > answer.seq]


async def delete_turn(session: AsyncSession, *, owner_id: str, answer_id: str) -> None:
    """The answer, the questions it answered (the messages since the answer before it) and
    its request's record; the conversation too when nothing else is left in it."""
    answer = await session.scalar(
        select(MessageRow).where(MessageRow.id == answer_id, MessageRow.user_id == owner_id)
    )
    if answer is None:
        return
    upto, after = await turn_rows(session, owner_id=owner_id, answer=answer)
    earlier = [row.seq for row in upto if row.role == "assistant" and row.seq < answer.seq]
    first = max(earlier, default=0)
    # The record first: not every backend enforces ON DELETE CASCADE (SQLite needs a pragma).
    await session.execute(
        delete(ResponseRow).where(ResponseRow.id == answer_id, ResponseRow.user_id == owner_id)
    )
    await session.execute(
        delete(MessageRow).where(
            MessageRow.conversation_id == answer.conversation_id,
            MessageRow.user_id == owner_id,
            MessageRow.seq > first,
            MessageRow.seq <= answer.seq,
        )
    )
    if not after and first == 0:
        await session.execute(
            delete(Conversation).where(
                Conversation.id == answer.conversation_id, Conversation.user_id == owner_id
            )
        )
