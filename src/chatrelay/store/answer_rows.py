"""The writes of a running answer's row: the periodic flush of its text, and its final state.

They find the row by its id alone, on purpose: the route checked the owner when the answer
started, the id is unguessable, and the owner may change while it runs (a guest signing in
gives its rows to the account, on whichever instance). A write filtered on the owner it
started with found no row after that and was lost.

Core statements built once, as the turn's insert in conversations.py
(docs/performance.md#statements-built-once).
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Connection, Table, bindparam, select, update

from chatrelay.store.models import Conversation, MessageRow, utcnow

CONVERSATIONS = cast(Table, Conversation.__table__)
MESSAGES = cast(Table, MessageRow.__table__)


class AnswerRowMissing(Exception):
    """An answer's final write matched no row: it is not stored (retried, then logged)."""

    def __init__(self, answer_id: str) -> None:
        super().__init__(f"no stored answer '{answer_id}' to write (deleted?)")
        self.answer_id = answer_id


def save_answer_texts(connection: Connection, rows: list[dict[str, Any]]) -> None:
    """The periodic flush of streaming answers, all in one statement executed for many rows.

    Each row is ``{"b_id", "b_content"}`` (bind names may not be column names); only a row
    still ``streaming`` is written.
    """
    now = utcnow()
    # Core executemany: the ORM's bulk UPDATE would insist on primary keys alone.
    connection.execute(_SAVE_ANSWER_TEXT, [{**row, "b_now": now} for row in rows])


def finish_answer(
    connection: Connection,
    *,
    answer_id: str,
    content: str,
    status: str,
    finish_reason: str | None,
    error: str | None,
    prompt_tokens: int | None,
    completion_tokens: int | None,
    upstream: str | None,
    extra: dict[str, Any] | None = None,
) -> None:
    """The answer's final state, and its conversation's last activity (Core: once per chat).

    ``extra``: what the answer said besides its text (``content: None`` and its tool calls,
    its reasoning, a refusal), as ``message_rows.message_extra`` keeps a message's; None for text.

    Found by its id whoever owns it now (see above); raises :class:`AnswerRowMissing` when
    no row was written, so that the caller never takes a lost ending for a stored one.
    """
    finished = connection.execute(
        _FINISH_ANSWER,
        {
            "b_id": answer_id,
            "b_content": content,
            "b_extra": extra,
            "b_status": status,
            "b_finish_reason": finish_reason,
            "b_error": error,
            "b_prompt_tokens": prompt_tokens,
            "b_completion_tokens": completion_tokens,
            "b_upstream": upstream,
            "b_now": utcnow(),
        },
    )
    if not finished.rowcount:
        raise AnswerRowMissing(answer_id)
    connection.execute(_TOUCH_CONVERSATION_OF, {"b_id": answer_id, "b_now": utcnow()})


_SAVE_ANSWER_TEXT = (
    update(MESSAGES)
    .where(
        MESSAGES.c.id == bindparam("b_id"),
        # A flush that waited for the lock must never overwrite the final text.
        MESSAGES.c.status == "streaming",
    )
    .values(content=bindparam("b_content"), updated_at=bindparam("b_now"))
)
_FINISH_ANSWER = (
    update(MESSAGES)
    .where(MESSAGES.c.id == bindparam("b_id"))
    .values(
        content=bindparam("b_content"),
        extra=bindparam("b_extra", type_=MESSAGES.c.extra.type),
        status=bindparam("b_status"),
        finish_reason=bindparam("b_finish_reason"),
        error=bindparam("b_error"),
        prompt_tokens=bindparam("b_prompt_tokens"),
        completion_tokens=bindparam("b_completion_tokens"),
        upstream=bindparam("b_upstream"),
        updated_at=bindparam("b_now"),
    )
)
_TOUCH_CONVERSATION_OF = (
    update(CONVERSATIONS)
    .where(
        # "=", not "IN": SQLite plans IN (subquery) AND user_id = ? as a search of all the
        # owner's conversations by the user index (docs/performance.md#touch-conversation).
        CONVERSATIONS.c.id
        == select(MESSAGES.c.conversation_id)
        .where(MESSAGES.c.id == bindparam("b_id"))
        .scalar_subquery(),
    )
    .values(updated_at=bindparam("b_now"))
)
