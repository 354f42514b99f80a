"""Conversation and message queries. Every one takes the owner: nobody reaches another's rows.

A row that exists but belongs to someone else is reported exactly like an absent one
(:class:`NotFound`), so ids reveal nothing.

What a message row keeps of a message (and its attachments' bounds) is in message_rows.py; the
writes of a running answer's row in answer_rows.py.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

from sqlalchemy import Connection, Table, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from chatrelay.errors import NOT_FOUND, ChatRelayError

# Re-exported ("as") until answers/ and tests/e2e/ import them from answer_rows.py and
# message_rows.py, where they live now.
from chatrelay.store.message_rows import (
    AttachmentLimits,
    attachment_bytes,
    check_attachments,
    edited_extra,
    message_extra,
)
from chatrelay.store.models import Conversation, MessageRow, new_id, utcnow
from chatrelay.text import message_text

# The tables themselves, for the Core statements of the per-request writes (the ORM's unit
# of work cost more CPU than everything else a chat request does:
# docs/performance.md#statements-built-once).
CONVERSATIONS = cast(Table, Conversation.__table__)
MESSAGES = cast(Table, MessageRow.__table__)

TITLE_WORDS = 8
TITLE_CHARS = 80


class NotFound(ChatRelayError):
    def __init__(self, what: str, ident: str) -> None:
        super().__init__(404, f"No {what} '{ident}'.", code=f"{what}_not_found", type=NOT_FOUND)


def _refuse_impossible_id(what: str, ident: str) -> None:
    """No id holds a NUL character, and PostgreSQL cannot even compare one: a 404 at once."""
    if "\x00" in ident:
        raise NotFound(what, ident.replace("\x00", ""))


def title_from(text: str) -> str:
    """The first words of the first message, as a provisional title."""
    words = text.split()
    title = " ".join(words[:TITLE_WORDS])
    if len(words) > TITLE_WORDS or len(title) > TITLE_CHARS:
        title = title[:TITLE_CHARS].rstrip() + "…"
    return title or "New chat"


async def create_conversation(session: AsyncSession, *, owner_id: str, title: str) -> Conversation:
    conversation = Conversation(user_id=owner_id, title=title)
    session.add(conversation)
    await session.flush()
    return conversation


async def get_conversation(
    session: AsyncSession, *, owner_id: str, conversation_id: str, lock: bool = False
) -> Conversation:
    """``lock`` holds the row for the rest of the transaction (PostgreSQL): two messages sent
    to one conversation at once then take their places one after the other."""
    _refuse_impossible_id("conversation", conversation_id)
    statement = select(Conversation).where(
        Conversation.id == conversation_id, Conversation.user_id == owner_id
    )
    conversation = await session.scalar(statement.with_for_update() if lock else statement)
    if conversation is None:
        raise NotFound("conversation", conversation_id)
    return conversation


async def list_conversations(
    session: AsyncSession, *, owner_id: str, limit: int, offset: int = 0, query: str | None = None
) -> Sequence[Conversation]:
    """Newest activity first. ``query`` matches titles and message text, case-insensitively."""
    statement = select(Conversation).where(Conversation.user_id == owner_id)
    if query:
        pattern = f"%{query.lower()}%"
        in_messages = select(MessageRow.conversation_id).where(
            MessageRow.user_id == owner_id, func.lower(MessageRow.content).like(pattern)
        )
        statement = statement.where(
            func.lower(Conversation.title).like(pattern) | Conversation.id.in_(in_messages)
        )
    statement = statement.order_by(Conversation.updated_at.desc(), Conversation.id.desc())
    return (await session.scalars(statement.limit(limit).offset(offset))).all()


async def rename_conversation(
    session: AsyncSession, *, owner_id: str, conversation_id: str, title: str
) -> Conversation:
    conversation = await get_conversation(
        session, owner_id=owner_id, conversation_id=conversation_id
    )
    conversation.title = title
    conversation.updated_at = utcnow()
    return conversation


async def delete_conversation(
    session: AsyncSession, *, owner_id: str, conversation_id: str
) -> None:
    conversation = await get_conversation(
        session, owner_id=owner_id, conversation_id=conversation_id
    )
    # Messages first: not every backend enforces ON DELETE CASCADE (SQLite needs a pragma).
    await session.execute(
        delete(MessageRow).where(
            MessageRow.conversation_id == conversation.id, MessageRow.user_id == owner_id
        )
    )
    await session.delete(conversation)


async def messages_of(
    session: AsyncSession, *, owner_id: str, conversation_id: str
) -> Sequence[MessageRow]:
    return (
        await session.scalars(
            select(MessageRow)
            .where(MessageRow.conversation_id == conversation_id, MessageRow.user_id == owner_id)
            .order_by(MessageRow.seq)
        )
    ).all()


async def add_message(
    session: AsyncSession,
    *,
    owner_id: str,
    conversation: Conversation,
    role: str,
    content: str,
    status: str = "complete",
    model: str | None = None,
    upstream: str | None = None,
    seq: int | None = None,
    instance_id: str | None = None,
) -> MessageRow:
    """Append a message; ``seq`` may be given when the caller knows the conversation's end."""
    if conversation.user_id != owner_id:
        raise NotFound("conversation", conversation.id)
    if seq is None:
        last = await session.scalar(
            select(func.max(MessageRow.seq)).where(MessageRow.conversation_id == conversation.id)
        )
        seq = (last or 0) + 1
    message = MessageRow(
        conversation_id=conversation.id,
        user_id=owner_id,
        seq=seq,
        role=role,
        content=content,
        status=status,
        model=model,
        upstream=upstream,
        instance_id=instance_id,
    )
    session.add(message)
    conversation.updated_at = utcnow()
    await session.flush()
    return message


def append_turn(
    connection: Connection,
    *,
    owner_id: str,
    conversation_id: str | None,
    title: str,
    questions: Sequence[Mapping[str, Any]],
    model: str,
    instance_id: str | None,
    attachment_limits: AttachmentLimits | None = None,
    also: Callable[[Connection, str, str], None] | None = None,
) -> tuple[str, str]:
    """Store ``questions`` (messages as sent upstream: role, content and any other keys) and
    an empty ``streaming`` answer after them, in a new conversation (``conversation_id`` None,
    titled ``title``) or at the end of the owner's one. Returns the conversation's id and the
    answer's. Two or four Core statements, for ``Database.write``: it runs for every chat
    (two more when a question has attachments and the owner's total is bounded).

    Attachments over ``attachment_limits`` are refused (413) before anything is written.
    ``also``: a write of the caller's own in the same transaction, given the connection, the
    conversation's id and the answer's (a Responses request's record).
    """
    now = utcnow()
    extras = [message_extra(question) for question in questions]
    sizes = [attachment_bytes(extra) for extra in extras]
    if attachment_limits is not None and any(sizes):
        check_attachments(connection, owner_id=owner_id, sizes=sizes, limits=attachment_limits)
    conversations_ = CONVERSATIONS.c
    if conversation_id is None:
        conversation_id = new_id("conv")
        connection.execute(
            _INSERT_CONVERSATION,
            {
                "id": conversation_id,
                "user_id": owner_id,
                "title": title,
                "created_at": now,
                "updated_at": now,
            },
        )
        last = 0
    else:
        _refuse_impossible_id("conversation", conversation_id)
        # Locked (PostgreSQL) for the rest of the transaction: two messages sent to one
        # conversation at once take their places one after the other.
        found = connection.scalar(
            select(conversations_.id)
            .where(conversations_.id == conversation_id, conversations_.user_id == owner_id)
            .with_for_update()
        )
        if found is None:
            raise NotFound("conversation", conversation_id)
        last = (
            connection.scalar(
                select(func.max(MESSAGES.c.seq)).where(
                    MESSAGES.c.conversation_id == conversation_id, MESSAGES.c.user_id == owner_id
                )
            )
            or 0
        )
        connection.execute(
            update(CONVERSATIONS)
            .where(conversations_.id == conversation_id, conversations_.user_id == owner_id)
            .values(updated_at=now)
        )
    common = {"conversation_id": conversation_id, "user_id": owner_id, "created_at": now}
    rows: list[dict[str, Any]] = [
        {
            **common,
            "id": new_id("msg"),
            "seq": last + number,
            "role": question["role"],
            "content": message_text(question),
            "extra": extras[number - 1],
            "attachment_bytes": sizes[number - 1] or None,
            "status": "complete",
            "model": None,
            "instance_id": None,
            "updated_at": now,
        }
        for number, question in enumerate(questions, 1)
    ]
    answer_id = new_id("msg")
    rows.append(
        {
            **common,
            "id": answer_id,
            "seq": last + len(questions) + 1,
            "role": "assistant",
            "content": "",
            "extra": None,
            "attachment_bytes": None,
            "status": "streaming",
            "model": model,
            "instance_id": instance_id,
            "updated_at": now,
        }
    )
    connection.execute(_INSERT_MESSAGES, rows)
    if also is not None:
        also(connection, conversation_id, answer_id)
    return conversation_id, answer_id


async def get_message(session: AsyncSession, *, owner_id: str, message_id: str) -> MessageRow:
    _refuse_impossible_id("message", message_id)
    message = await session.scalar(
        select(MessageRow).where(MessageRow.id == message_id, MessageRow.user_id == owner_id)
    )
    if message is None:
        raise NotFound("message", message_id)
    return message


class AnswerInProgress(ChatRelayError):
    def __init__(self, message_id: str) -> None:
        super().__init__(
            409,
            f"The conversation's last answer ('{message_id}') is still being generated: stop it "
            "(POST /api/messages/{id}/stop) or wait for it to end, then try again.",
            code="answer_in_progress",
        )


class ConversationChanged(ChatRelayError):
    def __init__(self) -> None:
        super().__init__(
            409,
            "The conversation changed while this request was prepared; reload it and try again.",
            code="conversation_changed",
        )


def question_to_answer_again(stored: Sequence[MessageRow]) -> MessageRow:
    """Of a conversation's messages (in order), the last user message, for regenerate / edit.

    400 when there is none; 409 while an answer after it is still streaming.
    """
    question = next((m for m in reversed(stored) if m.role == "user"), None)
    if question is None:
        raise ChatRelayError(
            400, "The conversation has no user message to answer again.", code="no_question"
        )
    for message in stored:
        if message.seq > question.seq and message.status == "streaming":
            raise AnswerInProgress(message.id)
    return question


async def rewind_to_last_question(
    session: AsyncSession,
    *,
    owner_id: str,
    conversation_id: str,
    new_text: str | None = None,
    expected: tuple[str, str] | None = None,
) -> MessageRow:
    """Regenerate / edit: drop what follows the last user message (its answer), and with
    ``new_text`` replace that message's text. Returns the question, now the last message.

    Refused (409) while the answer to be dropped is still streaming, or when the last question
    is no longer the ``expected`` (id, text) the caller read; 400 when the conversation has no
    user message yet.
    """
    stored = await messages_of(session, owner_id=owner_id, conversation_id=conversation_id)
    question = question_to_answer_again(stored)
    if expected is not None and (question.id, question.content) != expected:
        raise ConversationChanged()
    later = [m for m in stored if m.seq > question.seq]
    if later:
        await session.execute(
            delete(MessageRow).where(
                MessageRow.id.in_([m.id for m in later]), MessageRow.user_id == owner_id
            )
        )
    if new_text is not None:
        question.content = new_text
        question.extra = edited_extra(question.extra, new_text)
        question.attachment_bytes = attachment_bytes(question.extra) or None
        question.updated_at = utcnow()
    return question


# Built once: building a statement (its values made into bound parameters, its cache key) costs
# more than running its cached compiled form; an insert's values come as parameters.
_INSERT_CONVERSATION = insert(CONVERSATIONS)
_INSERT_MESSAGES = insert(MESSAGES)
