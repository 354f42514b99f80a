"""What a message row keeps of a message as it was sent, and gives back: its role, its text
(searchable, shown, counted) and ``extra``, the rest of the dict as it was sent, given back
intact when the conversation goes upstream again; the bytes of its inline attachments, and
their bounds.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Connection, Table, bindparam, func, select

from chatrelay.errors import ChatRelayError
from chatrelay.store.models import MessageRow, User

if TYPE_CHECKING:
    from chatrelay.config import Settings

MESSAGES = cast(Table, MessageRow.__table__)
USERS = cast(Table, User.__table__)

# Answers that count as conversation history sent upstream (an error or empty answer does not).
HISTORY_STATUSES = ("complete", "stopped", "interrupted")


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


def check_attachments(
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


def edited_extra(extra: dict[str, Any] | None, new_text: str) -> dict[str, Any] | None:
    """A question's ``extra`` once its text is edited (see :func:`edited_content`)."""
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


# Built once: building a statement costs more than running its cached compiled form
# (docs/performance.md#statements-built-once).
_STORED_ATTACHMENT_BYTES = select(func.sum(MESSAGES.c.attachment_bytes)).where(
    MESSAGES.c.user_id == bindparam("b_owner"), MESSAGES.c.attachment_bytes.is_not(None)
)
