"""User, session and API key queries.

Sessions and keys are found by the hash of their secret, never by the secret itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import Connection, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from chatrelay.store.models import ApiKey, Conversation, MessageRow, User, utcnow
from chatrelay.store.models import Session as SessionRow

# Users


async def create_guest(session: AsyncSession, *, user_id: str | None = None) -> User:
    """A guest; ``user_id`` when its id was handed out before it was stored."""
    guest = User(username=None, password_hash=None, is_admin=False)
    if user_id is not None:
        guest.id = user_id
    session.add(guest)
    await session.flush()
    return guest


def insert_guest_with_session(
    connection: Connection,
    *,
    user_id: str,
    token_hash: str,
    created_at: datetime,
    expires_at: datetime,
) -> None:
    """A guest and its session, as Core statements (``Database.write``, small: a cookieless
    burst's new guests are written in one group commit with their questions)."""
    connection.execute(
        insert(User),
        {"id": user_id, "username": None, "password_hash": None, "is_admin": False,
         "created_at": created_at},
    )  # fmt: skip
    connection.execute(
        insert(SessionRow),
        {"token_hash": token_hash, "user_id": user_id, "created_at": created_at,
         "expires_at": expires_at},
    )  # fmt: skip


async def create_user(
    session: AsyncSession, *, username: str, password_hash: str, is_admin: bool = False
) -> User:
    """A new account; the caller turns the unique constraint's IntegrityError into a 409."""
    user = User(username=username, password_hash=password_hash, is_admin=is_admin)
    session.add(user)
    await session.flush()
    return user


async def get_user(session: AsyncSession, *, user_id: str) -> User | None:
    return await session.get(User, user_id)


async def get_user_by_username(session: AsyncSession, *, username: str) -> User | None:
    """``username`` in its stored (lower-case) form."""
    return await session.scalar(select(User).where(User.username == username))


async def register_guest(
    session: AsyncSession, *, guest_id: str, username: str, password_hash: str
) -> bool:
    """Turn a guest into an account in place (same id, so everything it owns stays its own).

    False when ``guest_id`` is not a guest (any more): registering twice at once changes one.
    """
    result = await session.execute(
        update(User)
        .where(User.id == guest_id, User.username.is_(None))
        .values(username=username, password_hash=password_hash)
    )
    return bool(getattr(result, "rowcount", 0))


async def set_password_hash(session: AsyncSession, *, user_id: str, password_hash: str) -> None:
    await session.execute(
        update(User).where(User.id == user_id).values(password_hash=password_hash)
    )


async def adopt_guest(session: AsyncSession, *, guest_id: str, owner_id: str) -> int:
    """Give a guest's conversations and messages to ``owner_id``, then delete the guest.

    Returns how many conversations moved. Does nothing to a user that is not a guest.
    """
    guest = await session.get(User, guest_id)
    if guest is None or not guest.is_guest or guest_id == owner_id:
        return 0
    moved = await session.execute(
        update(Conversation).where(Conversation.user_id == guest_id).values(user_id=owner_id)
    )
    await session.execute(
        update(MessageRow).where(MessageRow.user_id == guest_id).values(user_id=owner_id)
    )
    # Its sessions go with it (ON DELETE CASCADE).
    await session.execute(delete(User).where(User.id == guest_id))
    return int(getattr(moved, "rowcount", 0))


async def list_users(session: AsyncSession) -> Sequence[tuple[User, int]]:
    """Every account (guests left out) with its number of conversations, by username."""
    conversations = (
        select(Conversation.user_id, func.count().label("n"))
        .group_by(Conversation.user_id)
        .subquery()
    )
    rows = await session.execute(
        select(User, func.coalesce(conversations.c.n, 0))
        .outerjoin(conversations, conversations.c.user_id == User.id)
        .where(User.username.is_not(None))
        .order_by(User.username)
    )
    return [(user, int(count)) for user, count in rows]


# Sessions


async def create_session(
    session: AsyncSession, *, user_id: str, token_hash: str, expires_at: datetime
) -> SessionRow:
    row = SessionRow(token_hash=token_hash, user_id=user_id, expires_at=expires_at)
    session.add(row)
    await session.flush()
    return row


async def get_session_user(
    session: AsyncSession, *, token_hash: str, now: datetime
) -> tuple[SessionRow, User] | None:
    """The unexpired session with this token hash, and its user."""
    row = await session.execute(
        select(SessionRow, User)
        .join(User, User.id == SessionRow.user_id)
        .where(SessionRow.token_hash == token_hash, SessionRow.expires_at > now)
    )
    found = row.first()
    return (found[0], found[1]) if found is not None else None


async def extend_session(session: AsyncSession, *, token_hash: str, expires_at: datetime) -> None:
    await session.execute(
        update(SessionRow).where(SessionRow.token_hash == token_hash).values(expires_at=expires_at)
    )


async def delete_session(session: AsyncSession, *, token_hash: str) -> None:
    await session.execute(delete(SessionRow).where(SessionRow.token_hash == token_hash))


# Pruning (store/pruning.py): each call deletes at most ``limit`` rows, so that one short
# transaction never holds SQLite's write lock for long; the caller repeats while it is full.


async def delete_expired_sessions(session: AsyncSession, *, now: datetime, limit: int) -> int:
    expired = (
        select(SessionRow.token_hash).where(SessionRow.expires_at <= now).limit(limit).subquery()
    )
    result = await session.execute(
        delete(SessionRow).where(SessionRow.token_hash.in_(select(expired.c.token_hash)))
    )
    return int(getattr(result, "rowcount", 0))


async def delete_abandoned_guests(
    session: AsyncSession, *, now: datetime, created_before: datetime, limit: int
) -> int:
    """Guests created before ``created_before`` that nobody can be any more (no unexpired
    session: the cookie is the only way to be a guest) or that have no conversation. Their
    conversations, messages and sessions go with them (ON DELETE CASCADE); the usage ledger
    keeps their spending (it has no foreign keys). ``created_before`` leaves alone a guest
    whose first conversation is being written."""
    live_session = select(SessionRow.token_hash).where(
        SessionRow.user_id == User.id, SessionRow.expires_at > now
    )
    conversation = select(Conversation.id).where(Conversation.user_id == User.id)
    abandoned = (
        select(User.id)
        .where(
            User.username.is_(None),
            User.created_at < created_before,
            ~live_session.exists() | ~conversation.exists(),
        )
        .limit(limit)
        .subquery()
    )
    result = await session.execute(delete(User).where(User.id.in_(select(abandoned.c.id))))
    return int(getattr(result, "rowcount", 0))


# API keys


async def create_api_key(
    session: AsyncSession, *, user_id: str, name: str, key_hash: str, prefix: str
) -> ApiKey:
    key = ApiKey(user_id=user_id, name=name, key_hash=key_hash, prefix=prefix)
    session.add(key)
    await session.flush()
    return key


async def get_api_key_user(session: AsyncSession, *, key_hash: str) -> tuple[ApiKey, User] | None:
    """The unrevoked key with this hash, and its user."""
    row = await session.execute(
        select(ApiKey, User)
        .join(User, User.id == ApiKey.user_id)
        .where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None))
    )
    found = row.first()
    return (found[0], found[1]) if found is not None else None


async def touch_api_key(
    session: AsyncSession, *, key_id: str, now: datetime, resolution: timedelta
) -> None:
    """Record a use, unless one was recorded less than ``resolution`` ago."""
    await session.execute(
        update(ApiKey)
        .where(
            ApiKey.id == key_id,
            ApiKey.last_used_at.is_(None) | (ApiKey.last_used_at <= now - resolution),
        )
        .values(last_used_at=now)
    )


async def list_api_keys(
    session: AsyncSession, *, user_id: str | None = None
) -> Sequence[tuple[ApiKey, str]]:
    """Keys (oldest first) with their owner's username; every user's when ``user_id`` is None
    (an operator's listing, never a user-facing one)."""
    statement = select(ApiKey, User.username).join(User, User.id == ApiKey.user_id)
    if user_id is not None:
        statement = statement.where(ApiKey.user_id == user_id)
    rows = await session.execute(statement.order_by(ApiKey.created_at, ApiKey.id))
    return [(key, username or "(guest)") for key, username in rows]


async def revoke_api_key(session: AsyncSession, *, key_id: str) -> ApiKey | None:
    """Revoke a key (keeping its row for the listing); None if there is no such key."""
    key = await session.get(ApiKey, key_id)
    if key is not None and key.revoked_at is None:
        key.revoked_at = utcnow()
        await session.flush()
    return key
