"""What an answer is asked for, and the turn it belongs to: the conversation's history read
for the upstream, the question stored with its empty answer (or, for regenerate and edit,
the last question answered again in place of its answer).

Usage (answers/service.py)::

    asked = AnswerRequest(messages=[{"role": "user", "content": "hi"}], model="m")
    history, new, question = await read_turn(db, asked, owner_id=user.id)
    # ... limits, sizes, carriage, the budget reserved ...
    conversation_id, answer_id = await store_turn(db, asked, owner_id=user.id, ...)

:class:`AnswerRequest` is the answer domain's own input: each route builds it from the request
it validated (``/api/chat``, ``/v1/chat/completions``, Livepeer's ``/llm``), so nothing here
knows an HTTP schema.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

from sqlalchemy import Connection

from chatrelay.config import Settings
from chatrelay.errors import ChatRelayError
from chatrelay.store import conversations, message_rows
from chatrelay.store.database import Database
from chatrelay.store.models import MessageRow
from chatrelay.text import message_text
from chatrelay.upstreams.dialects import UpstreamMessage

Action = Literal["send", "regenerate", "edit"]


@dataclass(frozen=True, slots=True)
class AnswerRequest:
    """What a client asks an answer for, validated by its route.

    ``action``: ``send`` adds the messages and answers them; ``regenerate`` answers the
    conversation's last question again, in place of its answer; ``edit`` gives the last
    question the text of the one message sent and answers it again. Both of these need the
    ``conversation_id``, which otherwise continues a conversation (none starts one)."""

    messages: list[UpstreamMessage]
    action: Action = "send"
    model: str | None = None
    conversation_id: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    # From an API client (/v1): the messages are in their whole shape (content parts, tool
    # calls, tool results), and the request's other fields are sent on as they came
    # (answers/carriage.py decides who can take them), under the budget's name it used.
    api: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    max_tokens_field: str = "max_tokens"
    # A system message sent first for this answer alone, not stored with the conversation
    # (the Responses API's ``instructions``, which a continuation does not inherit).
    instructions: str | None = None
    # A write of the route's own in the transaction that stores the turn, given the
    # connection, the conversation's id and the answer's (a Responses request's record).
    stored_with: Callable[[Connection, str, str], None] | None = None


def _new_part(incoming: list[UpstreamMessage], api: bool) -> list[UpstreamMessage]:
    """Of a conversation the server keeps, what the client adds: the last message; from an
    API client, all after the last assistant message (the results of parallel tool calls
    come as several ``tool`` messages, each needed)."""
    if not api:
        return incoming[-1:]
    last = max((i for i, m in enumerate(incoming) if m["role"] == "assistant"), default=-1)
    return incoming[last + 1 :] or incoming[-1:]


async def read_turn(
    db: Database, asked: AnswerRequest, *, owner_id: str
) -> tuple[list[UpstreamMessage], list[UpstreamMessage], MessageRow | None]:
    """What goes upstream: the stored history, the new messages, and (for regenerate and
    edit) the question answered again, as read."""
    incoming = asked.messages
    if asked.conversation_id is None:
        return [], incoming, None
    async with db.read() as session:
        conversation = await conversations.get_conversation(
            session, owner_id=owner_id, conversation_id=asked.conversation_id
        )
        stored = await conversations.messages_of(
            session, owner_id=owner_id, conversation_id=conversation.id
        )
    if asked.action == "send":
        # The server keeps the history: of what the client sent, only the new message.
        history = [
            message_rows.upstream_message(m) for m in stored if message_rows.counts_as_history(m)
        ]
        return history, _new_part(incoming, asked.api), None
    question = conversations.question_to_answer_again(stored)  # again under the lock
    earlier = [
        message_rows.upstream_message(m)
        for m in stored
        if m.seq < question.seq and message_rows.counts_as_history(m)
    ]
    # Answered again as it was sent (its images and parts), or with the edit's text
    # (which the store put in place of its text parts).
    again = message_rows.upstream_message(question)
    if asked.action == "edit":
        edited = message_rows.edited_content(again.get("content"), message_text(incoming[0]))
        again = {**again, "content": edited}
    return [*earlier, again], [], question


async def store_turn(
    db: Database,
    asked: AnswerRequest,
    *,
    owner_id: str,
    incoming: list[UpstreamMessage],
    question: MessageRow | None,
    model: str,
    instance_id: str,
    attachment_limits: message_rows.AttachmentLimits,
) -> tuple[str, str]:
    """The question and its empty answer (status ``streaming``) committed; for regenerate
    and edit, the old answer dropped instead (and the edit applied). The conversation's id
    and the answer's."""
    if asked.action == "send":
        title = ""
        if asked.conversation_id is None:
            first = next((m for m in incoming if m["role"] == "user"), incoming[0])
            title = conversations.title_from(message_text(first))
        return await db.write(
            partial(
                conversations.append_turn,
                owner_id=owner_id,
                conversation_id=asked.conversation_id,
                title=title,
                questions=incoming,
                model=model,
                instance_id=instance_id,
                attachment_limits=attachment_limits,
                also=asked.stored_with,
            ),
            small=True,
        )
    return await _answer_again(
        db, asked, owner_id=owner_id, read=question, model=model, instance_id=instance_id
    )


async def _answer_again(
    db: Database,
    asked: AnswerRequest,
    *,
    owner_id: str,
    read: MessageRow | None,
    model: str,
    instance_id: str,
) -> tuple[str, str]:
    """Regenerate/edit, under the conversation's lock: drop the old answer (and apply the
    edit), refused if the conversation changed since its history was read; then the new
    empty answer."""
    assert asked.conversation_id is not None and read is not None
    async with db.transaction() as session:
        conversation = await conversations.get_conversation(
            session, owner_id=owner_id, conversation_id=asked.conversation_id, lock=True
        )
        question = await conversations.rewind_to_last_question(
            session,
            owner_id=owner_id,
            conversation_id=conversation.id,
            new_text=message_text(asked.messages[0]) if asked.action == "edit" else None,
            expected=(read.id, read.content),
        )
        answer = await conversations.add_message(
            session,
            owner_id=owner_id,
            conversation=conversation,
            role="assistant",
            content="",
            status="streaming",
            seq=question.seq + 1,
            model=model,
            instance_id=instance_id,
        )
        return conversation.id, answer.id


def with_system_prompt(
    messages: list[UpstreamMessage], prompt: str | None, instructions: str | None = None
) -> list[UpstreamMessage]:
    """The request's own ``instructions`` first; else the operator's system prompt first,
    unless the messages bring their own."""
    if instructions is not None:
        return [{"role": "system", "content": instructions}, *messages]
    if prompt and not any(m["role"] == "system" for m in messages):
        return [{"role": "system", "content": prompt}, *messages]
    return messages


def check_sizes(messages: list[UpstreamMessage], limits: Settings) -> None:
    """A 400 naming the limit when the messages going upstream are too many or too long."""
    if len(messages) > limits.max_messages:
        raise ChatRelayError(
            400,
            f"Too many messages: {len(messages)}, the limit is {limits.max_messages} "
            "(CHATRELAY_MAX_MESSAGES).",
            code="too_many_messages",
            param="messages",
        )
    total = 0
    for index, message in enumerate(messages):
        # Text only: images and files (data URLs) count against the body's size limit.
        size = len(message_text(message))
        total += size
        if size > limits.max_message_chars:
            raise ChatRelayError(
                400,
                f"messages[{index}].content has {size} characters, the limit is "
                f"{limits.max_message_chars} (CHATRELAY_MAX_MESSAGE_CHARS).",
                code="message_too_long",
                param=f"messages[{index}].content",
            )
    if total > limits.max_total_chars:
        raise ChatRelayError(
            400,
            f"The messages of the conversation have {total} characters in all, the limit is "
            f"{limits.max_total_chars} (CHATRELAY_MAX_TOTAL_CHARS).",
            code="conversation_too_long",
            param="messages",
        )
