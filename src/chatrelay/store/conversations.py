"""Conversation and message queries. Every one takes the owner: nobody reaches another's rows.

A row that exists but belongs to someone else is reported exactly like an absent one
(:class:`NotFound`), so ids reveal nothing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Connection, Table, bindparam, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from chatrelay.errors import NOT_FOUND, ChatRelayError
from chatrelay.store.models import Conversation, MessageRow, User, new_id, utcnow
from chatrelay.text import message_text

if TYPE_CHECKING:
    from chatrelay.config import Settings

# The tables themselves, for the Core statements of the per-request writes (the ORM's unit
# of work cost more CPU than everything else a chat request does:
# docs/performance.md#statements-built-once).
CONVERSATIONS = cast(Table, Conversation.__table__)
MESSAGES = cast(Table, MessageRow.__table__)
USERS = cast(Table, User.__table__)

TITLE_WORDS = 8
TITLE_CHARS = 80

# Answers that count as conversation history sent upstream (an error or empty answer does not).
HISTORY_STATUSES = ("complete", "stopped", "interrupted")


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


# ---- messages as sent upstream -------------------------------------------------------------
# A message is stored as its role, its text (searchable, shown, counted) and ``extra``: the
# rest of the dict as it was sent, given back intact when the conversation goes upstream again.


def message_extra(message: Mapping[str, Any]) -> dict[str, Any] | None:
    """What a message's row keeps besides its role and text: every other key as sent, and
    ``content`` itself when it is not a string (a list of parts, or null). None for a plain
    text message, the common case, which then costs nothing more than before."""
    extra = {
        key: value
        for key, value in message.items()
        if key != "role" and (key != "content" or not isinstance(value, str))
    }
    return extra or None


def upstream_message(row: MessageRow) -> dict[str, Any]:
    """A stored message as it goes upstream again: as it was sent (``extra`` wins, so a
    stored null content or list of parts comes back as it was)."""
    return {"role": row.role, "content": row.content, **(row.extra or {})}


def counts_as_history(row: MessageRow) -> bool:
    """Whether a stored message is part of the history sent upstream: every question; an
    answer that was complete, stopped or interrupted and said something (text, or a tool call
    or refusal with no text), not an error or an empty one."""
    if row.role != "assistant":
        return True
    return row.status in HISTORY_STATUSES and bool(row.content or row.extra)


# "data:" then a media type and parameters (no spaces) up to the comma before the data.
_DATA_URL = re.compile(r"data:[^\s,]*,")
# Keys whose string is an inline attachment even when it is bare base64, not a data URL:
# input_audio's "data" and a file part's "file_data".
_BASE64_KEYS = {"input_audio": "data", "file": "file_data"}


def attachment_bytes(extra: Mapping[str, Any] | None) -> int:
    """The bytes of a message's inline attachments, as stored: every data URL anywhere in
    ``extra`` (image_url, file and audio parts, vLLM's audio_url/video_url...) and the base64
    of input_audio and file parts. 0 for none (and at once for a plain message)."""
    if not extra:
        return 0
    total = 0
    stack: list[tuple[str, Any]] = [("", extra)]
    while stack:
        parent, value = stack.pop()
        items = value.items() if isinstance(value, dict) else enumerate(value)
        inline = _BASE64_KEYS.get(parent)
        for key, item in items:
            if isinstance(item, str):
                # A text part's text is text, whatever it starts with.
                if key == inline or (key != "text" and _DATA_URL.match(item) is not None):
                    total += len(item) if item.isascii() else len(item.encode())
            elif isinstance(item, dict | list):
                stack.append((key if isinstance(key, str) else parent, item))
    return total


@dataclass(frozen=True, slots=True)
class AttachmentLimits:
    """Bounds on inline attachments, in bytes as stored (0 is unlimited): one message's
    (``CHATRELAY_MAX_ATTACHMENT_BYTES``) and all of one user's stored messages'
    (``CHATRELAY_USER_ATTACHMENT_BYTES``)."""

    per_message: int = 0
    per_user: int = 0

    @classmethod
    def of(cls, settings: Settings) -> AttachmentLimits:
        return cls(settings.max_attachment_bytes, settings.user_attachment_bytes)


class AttachmentsTooLarge(ChatRelayError):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            413,
            f"A message's attachments are {size:,} bytes; this server stores at most "
            f"{limit:,} bytes of them per message (CHATRELAY_MAX_ATTACHMENT_BYTES).",
            code="attachments_too_large",
            details={"size": size, "limit": limit},
        )


class AttachmentQuotaExceeded(ChatRelayError):
    def __init__(self, size: int, stored: int, limit: int) -> None:
        super().__init__(
            413,
            f"These attachments ({size:,} bytes) would take your stored attachments past "
            f"{limit:,} bytes (CHATRELAY_USER_ATTACHMENT_BYTES): {stored:,} are stored already. "
            "Delete conversations with attachments to make room.",
            code="attachment_quota_exceeded",
            details={"size": size, "stored": stored, "limit": limit},
        )


def _check_attachments(
    connection: Connection, *, owner_id: str, sizes: list[int], limits: AttachmentLimits
) -> None:
    """Refuse (before anything is written) a message over its bound, or attachments that
    would take the owner past theirs."""
    if limits.per_message:
        largest = max(sizes)
        if largest > limits.per_message:
            raise AttachmentsTooLarge(largest, limits.per_message)
    if limits.per_user:
        # The owner's row, locked (PostgreSQL), makes two requests with attachments take turns:
        # both cannot fit in the room one of them leaves. SQLite's writer is one at a time.
        connection.execute(
            select(USERS.c.id).where(USERS.c.id == owner_id).with_for_update()
        ).first()
        # A sum over the partial index of the messages with attachments, not a counter: what
        # a deleted conversation held is free again without anything else to keep in step.
        stored = connection.scalar(_STORED_ATTACHMENT_BYTES, {"b_owner": owner_id}) or 0
        size = sum(sizes)
        if stored + size > limits.per_user:
            raise AttachmentQuotaExceeded(size, stored, limits.per_user)


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


def append_exchange(
    connection: Connection,
    *,
    owner_id: str,
    conversation_id: str | None,
    title: str,
    questions: Sequence[Mapping[str, Any]],
    model: str,
    instance_id: str | None,
    attachment_limits: AttachmentLimits | None = None,
) -> tuple[str, str]:
    """Store ``questions`` (messages as sent upstream: role, content and any other keys) and
    an empty ``streaming`` answer after them, in a new conversation (``conversation_id`` None,
    titled ``title``) or at the end of the owner's one. Returns the conversation's id and the
    answer's. Two or four Core statements, for ``Database.write``: it runs for every chat
    (two more when a question has attachments and the owner's total is bounded).

    Attachments over ``attachment_limits`` are refused (413) before anything is written.
    """
    now = utcnow()
    extras = [message_extra(question) for question in questions]
    sizes = [attachment_bytes(extra) for extra in extras]
    if attachment_limits is not None and any(sizes):
        _check_attachments(connection, owner_id=owner_id, sizes=sizes, limits=attachment_limits)
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
    return conversation_id, answer_id


class AnswerRowMissing(Exception):
    """An answer's final write matched no row: it is not stored (retried, then logged)."""

    def __init__(self, message_id: str) -> None:
        super().__init__(f"no stored answer '{message_id}' to write (deleted?)")
        self.message_id = message_id


# The writes of a running answer (its flushes and its final state) find its row by its id
# alone, on purpose: the route checked the owner when the answer started, the id is
# unguessable, and the owner may change while it runs (a guest signing in gives its rows to
# the account, on whichever instance). A write filtered on the owner it started with found
# no row after that and was lost.


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
    message_id: str,
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
    its reasoning, a refusal), as :func:`message_extra` keeps a message's; None for text.

    Found by its id whoever owns it now (see above); raises :class:`AnswerRowMissing` when
    no row was written, so that the caller never takes a lost ending for a stored one.
    """
    finished = connection.execute(
        _FINISH_ANSWER,
        {
            "b_id": message_id,
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
        raise AnswerRowMissing(message_id)
    connection.execute(_TOUCH_CONVERSATION_OF, {"b_id": message_id, "b_now": utcnow()})


# Built once: building a statement (its values made into bound parameters, its cache key) costs
# more than running its cached compiled form; an insert's values come as parameters.
_INSERT_CONVERSATION = insert(CONVERSATIONS)
_INSERT_MESSAGES = insert(MESSAGES)
_STORED_ATTACHMENT_BYTES = select(func.sum(MESSAGES.c.attachment_bytes)).where(
    MESSAGES.c.user_id == bindparam("b_owner"), MESSAGES.c.attachment_bytes.is_not(None)
)
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
        question.extra = _edited_extra(question.extra, new_text)
        question.attachment_bytes = attachment_bytes(question.extra) or None
        question.updated_at = utcnow()
    return question


def _edited_extra(extra: dict[str, Any] | None, new_text: str) -> dict[str, Any] | None:
    if not extra or not isinstance(extra.get("content"), list):
        return extra
    # A new dict: the JSON column sees a change only when its value is replaced.
    return {**extra, "content": edited_content(extra["content"], new_text)}


def edited_content(content: Any, new_text: str) -> Any:
    """An edit replaces a question's text: in a list of parts, its text parts become one with
    the new text (where the first was); its images and other parts stay."""
    if not isinstance(content, list):
        return new_text
    parts: list[Any] = []
    placed = False
    for part in content:
        if not (isinstance(part, dict) and part.get("type") == "text"):
            parts.append(part)
        elif not placed:
            parts.append({**part, "text": new_text})
            placed = True
    if not placed:
        parts.insert(0, {"type": "text", "text": new_text})
    return parts
