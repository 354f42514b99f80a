"""The database: an async SQLAlchemy engine for SQLite (default) or PostgreSQL, and migrations.

Usage::

    db = Database(database_url(settings))
    await db.upgrade()                  # Alembic migrations to the newest schema
    async with db.transaction() as s:   # one short writing transaction, committed on exit
        ...
    async with db.read() as s:          # a read-only one (no write lock on SQLite)
        ...
    await db.close()
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from chatrelay.config import Settings

MIGRATIONS = Path(__file__).parent / "migrations"
READ_ONLY = "chatrelay_read_only"


def database_url(settings: Settings) -> str:
    if settings.database_url:
        return settings.database_url
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite+aiosqlite:///{(settings.data_dir / 'chatrelay.db').resolve()}"


def _tune_sqlite(engine: Any) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def on_connect(dbapi_connection: Any, _: Any) -> None:
        # Let SQLAlchemy's "begin" below issue BEGIN itself, instead of the driver's implicit one.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")  # readers never wait for the writer
        cursor.execute("PRAGMA synchronous=NORMAL")  # durable at checkpoints, safe with WAL
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def on_begin(connection: Any) -> None:
        # A writing transaction takes the write lock up front (IMMEDIATE): a deferred one that
        # reads, then writes, fails at once with "database is locked" if another writer got
        # there first. Read-only transactions never lock: with WAL they read a snapshot.
        read_only = connection.get_execution_options().get(READ_ONLY, False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = make_url(url).get_backend_name() == "sqlite"
        options: dict[str, Any] = {"pool_pre_ping": not self.is_sqlite}
        self.engine = create_async_engine(url, **options)
        if self.is_sqlite:
            _tune_sqlite(self.engine)
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        # SQLite has one writer at a time. Left to itself, a second pooled connection waits in
        # SQLite's busy handler, which polls with sleeps of up to 100 ms: the long tails of a
        # busy server. This process's writers queue here instead, in order, and each one
        # starts the moment the previous one commits (other processes still meet the busy
        # handler). Never nest two write transactions in one task: the second would wait for
        # the first forever.
        self._writer = asyncio.Lock() if self.is_sqlite else None

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session whose work is committed on a clean exit and rolled back on an error."""
        if self._writer is None:
            async with self._sessions() as session, session.begin():
                yield session
            return
        async with self._writer, self._sessions() as session, session.begin():
            yield session

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A transaction that only reads: on SQLite it takes no lock and waits for no writer."""
        async with self._sessions() as session, session.begin():
            await session.connection(execution_options={READ_ONLY: True})
            yield session

    async def ping(self) -> None:
        async with self._sessions() as session:
            await session.execute(text("SELECT 1"))

    async def upgrade(self) -> None:
        """Migrate to the newest schema (Alembic runs synchronously, so in a thread)."""
        await asyncio.to_thread(upgrade_database, self.url)

    async def close(self) -> None:
        await self.engine.dispose()


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade_database(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)
