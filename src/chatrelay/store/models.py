"""The tables. Every row that belongs to someone reaches its owner through ``user_id``."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# Stable constraint names, so Alembic migrations are the same on SQLite and PostgreSQL.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    """Unguessable ids: knowing an id must never be enough, but it also must not help."""
    return f"{prefix}_{secrets.token_urlsafe(12)}"


# One status for an answer, live and stored. Its row is written "streaming" with its question,
# so "pending" (until the upstream accepts) lives only in memory.
AnswerStatus = Literal["pending", "streaming", "complete", "stopped", "error", "interrupted"]
FINISHED: frozenset[AnswerStatus] = frozenset({"complete", "stopped", "error", "interrupted"})


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite hands back naive ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime}  # noqa: RUF012 - read by SQLAlchemy


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("usr"))
    # Guests have no username until they register.
    username: Mapped[str | None] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str | None] = mapped_column(String(255))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Tokens per budget period set for this user by an admin (0 is unlimited); None follows
    # CHATRELAY_USER_TOKEN_BUDGET / CHATRELAY_GUEST_TOKEN_BUDGET.
    token_budget: Mapped[int | None] = mapped_column(Integer)
    # Money per budget period set for this user (nanos of the upstreams' currency; 0 is
    # unlimited); None follows CHATRELAY_USER_SPEND_LIMIT / CHATRELAY_GUEST_SPEND_LIMIT.
    spend_limit: Mapped[int | None] = mapped_column(BigInteger)
    # Set by an admin: the user's sessions and keys are refused from then on.
    disabled_at: Mapped[datetime | None] = mapped_column()

    @property
    def is_guest(self) -> bool:
        return self.username is None


class Session(Base):
    """A browser's sign-in (or guest identity). The cookie carries the token; we keep its hash."""

    __tablename__ = "sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("key"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100), default="")
    # The first characters of the key, shown in listings so a person can tell keys apart.
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column()
    # Money per budget period this key may spend (nanos); None: only its user's limit.
    spend_limit: Mapped[int | None] = mapped_column(BigInteger)


class Conversation(Base):
    __tablename__ = "conversations"
    __table_args__ = (Index("ix_conversations_user_updated", "user_id", "updated_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("conv"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    title: Mapped[str] = mapped_column(String(200), default="New chat")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class MessageRow(Base):
    __tablename__ = "messages"
    __table_args__ = (
        Index("ix_messages_conversation_seq", "conversation_id", "seq"),
        Index("ix_messages_status", "status"),
        # Only the messages that carry attachments: a user's attachment total is summed from
        # these few entries, whatever the number of their plain messages.
        Index(
            "ix_messages_user_attachments",
            "user_id",
            "attachment_bytes",
            sqlite_where=text("attachment_bytes IS NOT NULL"),
            postgresql_where=text("attachment_bytes IS NOT NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("msg"))
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    # Denormalised owner: every query filters on it directly, no join needed to check.
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    seq: Mapped[int] = mapped_column(Integer)  # order within the conversation
    role: Mapped[str] = mapped_column(String(16))
    # The text: a string content as sent, or the text parts of a list of parts, joined.
    content: Mapped[str] = mapped_column(Text, default="")
    # Every other key of the message as sent upstream (tool_calls, tool_call_id, name,
    # reasoning_content, refusal...) and "content" itself when it was not a string (a list of
    # parts, or null): see store/conversations.py message_extra. NULL for a plain text message.
    # JSON, not JSONB: PostgreSQL keeps the keys in the order they were sent.
    extra: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    # Bytes of the inline attachments (data URLs, base64 audio and files) in ``extra``; NULL
    # when it has none. Summed per user for CHATRELAY_USER_ATTACHMENT_BYTES.
    attachment_bytes: Mapped[int | None] = mapped_column(Integer)
    # An AnswerStatus (a question's row is always complete).
    status: Mapped[str] = mapped_column(String(16), default="complete")
    error: Mapped[str | None] = mapped_column(Text)
    model: Mapped[str | None] = mapped_column(String(200))
    upstream: Mapped[str | None] = mapped_column(String(200))
    finish_reason: Mapped[str | None] = mapped_column(String(32))
    # The process generating a streaming answer: if it dies, a survivor settles the answer.
    instance_id: Mapped[str | None] = mapped_column(String(80))
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Instance(Base):
    """A running chatrelay process, alive while its heartbeat is fresh (see store/instances.py)."""

    __tablename__ = "instances"

    id: Mapped[str] = mapped_column(String(80), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow)


class UsageRecord(Base):
    """One chat request's tokens: the usage ledger, written with the answer's final state.

    It is the operator's record of what was spent, so it outlives what it describes: no
    foreign keys, and a guest's records keep the guest's id after it signs in to an account
    (whose budget is its own) and is deleted.
    """

    __tablename__ = "usage_ledger"
    __table_args__ = (Index("ix_usage_ledger_user_created", "user_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("use"))
    user_id: Mapped[str] = mapped_column(String(40))
    message_id: Mapped[str | None] = mapped_column(String(40))
    model: Mapped[str] = mapped_column(String(200))
    upstream: Mapped[str] = mapped_column(String(200))
    prompt_tokens: Mapped[int] = mapped_column(Integer)
    completion_tokens: Mapped[int] = mapped_column(Integer)
    # What the request held while it ran (max_tokens + estimated prompt); 0 when unmetered.
    reserved_tokens: Mapped[int] = mapped_column(Integer, default=0)
    # The answer's stored status: complete | stopped | error | interrupted.
    status: Mapped[str] = mapped_column(String(16))
    # Where the numbers come from: upstream (its own usage) | tokenizer | estimate.
    source: Mapped[str] = mapped_column(String(16))
    # When the request was admitted: the budget period it counts in.
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ResponseRow(Base):
    """What a Responses API request asked, kept beside the answer it made (``store``: true):
    the request fields a response object repeats and its input items, which the conversation's
    messages do not hold as given (the API's ``GET /v1/responses/{id}`` and ``/input_items``).
    Its id is the answer's (``resp_<key>`` on the wire for ``msg_<key>``)."""

    __tablename__ = "responses"

    id: Mapped[str] = mapped_column(
        String(40), ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    conversation_id: Mapped[str] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), index=True
    )
    # ChatForm.echo: instructions, tools, text, metadata, ... as the request gave them.
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    # The input items, as given (a string input as one user message item).
    input: Mapped[list[Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AttemptCostRow(Base):
    """What one request to one upstream cost: every attempt of every answer (failovers and
    retries paid for on their own) and the operator's own warming requests. Beside the usage
    ledger, which counts tokens per answer for budgets; like it, no foreign keys: the
    operator's record outlives what it describes. Money in nanos (1e-9) of ``currency``;
    NULL when the upstream has no price configured (unknown, not zero)."""

    __tablename__ = "attempt_costs"
    __table_args__ = (
        Index("ix_attempt_costs_created", "created_at"),
        Index("ix_attempt_costs_user_created", "user_id", "created_at"),
        Index("ix_attempt_costs_upstream_created", "upstream", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("cost"))
    # Whose answer it was; NULL for the operator's own requests (warming a model).
    user_id: Mapped[str | None] = mapped_column(String(40))
    api_key_id: Mapped[str | None] = mapped_column(String(40))  # NULL: a session's
    message_id: Mapped[str | None] = mapped_column(String(40))
    kind: Mapped[str] = mapped_column(String(16))  # answer | warming
    model: Mapped[str] = mapped_column(String(200))
    upstream: Mapped[str] = mapped_column(String(200))
    billing: Mapped[str] = mapped_column(String(16))  # requested | used
    accepted: Mapped[bool] = mapped_column(Boolean)
    prompt_tokens: Mapped[int] = mapped_column(Integer)
    completion_tokens: Mapped[int] = mapped_column(Integer)  # generated
    requested_tokens: Mapped[int] = mapped_column(Integer)  # the max_tokens it was sent
    paid_tokens: Mapped[int] = mapped_column(Integer)  # what the upstream bills
    paid_cost: Mapped[int | None] = mapped_column(BigInteger)
    used_cost: Mapped[int | None] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(8))
    # How it went (which upstream earns its traffic): ok, stall, cut, error, stopped.
    outcome: Mapped[str] = mapped_column(String(16), default="ok")
    first_token_ms: Mapped[int | None] = mapped_column(Integer)  # NULL: no token came
    duration_ms: Mapped[int] = mapped_column(Integer, default=0)
    # Whether the answer went on on another upstream after it (it paid for a failover).
    failed_over: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
