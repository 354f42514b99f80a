"""The migrations build exactly the tables the models describe, and 0002 and 0004 upgrade data in
place."""

from __future__ import annotations

import asyncio

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from chatrelay.store import conversations, message_rows
from chatrelay.store.database import Database, alembic_config, upgrade_database
from chatrelay.store.models import Base


async def test_migrations_match_the_models(database_url: str) -> None:
    await asyncio.to_thread(upgrade_database, database_url)
    db = Database(database_url)
    try:
        async with db.engine.connect() as connection:
            differences = await connection.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata)
            )
    finally:
        await db.close()
    assert differences == []


async def test_0002_keeps_existing_users_and_downgrades(database_url: str) -> None:
    await asyncio.to_thread(upgrade_database, database_url, "0001")
    db = Database(database_url)
    try:
        async with db.engine.begin() as connection:
            await connection.execute(
                text(
                    "INSERT INTO users (id, username, is_admin, created_at) "
                    "VALUES ('usr_old', 'old', false, CURRENT_TIMESTAMP)"
                )
            )
        await asyncio.to_thread(upgrade_database, database_url)
        async with db.engine.connect() as connection:
            budget = await connection.scalar(
                text("SELECT token_budget FROM users WHERE id = 'usr_old'")
            )
            ledger = await connection.scalar(text("SELECT count(*) FROM usage_ledger"))
        assert (budget, ledger) == (None, 0)
        await asyncio.to_thread(command.downgrade, alembic_config(database_url), "0001")
        async with db.engine.connect() as connection:
            assert await connection.scalar(text("SELECT count(*) FROM users")) == 1
    finally:
        await db.close()


async def test_0004_keeps_existing_messages_as_plain_text_and_downgrades(
    database_url: str,
) -> None:
    await asyncio.to_thread(upgrade_database, database_url, "0003")
    db = Database(database_url)
    try:
        async with db.engine.begin() as connection:
            for statement in (
                "INSERT INTO users (id, is_admin, created_at) "
                "VALUES ('usr_old', false, CURRENT_TIMESTAMP)",
                "INSERT INTO conversations (id, user_id, title, created_at, updated_at) "
                "VALUES ('conv_old', 'usr_old', 'old', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)",
                "INSERT INTO messages (id, conversation_id, user_id, seq, role, content, status, "
                "created_at, updated_at) VALUES ('msg_old', 'conv_old', 'usr_old', 1, 'user', "
                "'hello', 'complete', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)",
            ):
                await connection.execute(text(statement))
        await asyncio.to_thread(upgrade_database, database_url)
        async with db.read() as session:
            (old,) = await conversations.messages_of(
                session, owner_id="usr_old", conversation_id="conv_old"
            )
        assert (old.content, old.extra, old.attachment_bytes) == ("hello", None, None)
        assert message_rows.upstream_message(old) == {"role": "user", "content": "hello"}

        await asyncio.to_thread(command.downgrade, alembic_config(database_url), "0003")
        async with db.engine.connect() as connection:
            assert await connection.scalar(text("SELECT content FROM messages")) == "hello"
    finally:
        await db.close()
