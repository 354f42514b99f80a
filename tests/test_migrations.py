"""The migrations build exactly the tables the models describe, and 0002 upgrades data in place."""

from __future__ import annotations

import asyncio

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

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
