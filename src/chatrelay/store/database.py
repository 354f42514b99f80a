"""The database: an async SQLAlchemy engine for SQLite (default) or PostgreSQL, and migrations.

Usage::

    db = Database(database_url(settings))
    await db.upgrade()                  # Alembic migrations to the newest schema
    async with db.transaction() as s:   # one short writing transaction, committed on exit
        ...
    async with db.read() as s:          # a read-only one (no write lock on SQLite)
        ...
    answer_id = await db.write(partial(store_answer, owner_id=...))  # Core statements, fast
    answer_id = await db.write(partial(store_answer, ...), small=True)  # a few rows: faster
    await db.close()
"""

from __future__ import annotations

import asyncio
import copy
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.pool import StaticPool

from chatrelay.config import Settings

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).parent / "migrations"
READ_ONLY = "chatrelay_read_only"
# The event loop's own SQLite connection never checkpoints (that fsyncs): the writer thread
# does, once every this many of its commits, and after each one while the WAL is still longer
# than SQLite's own threshold, then waiting for the readers in it to leave, RESTART_WAIT_MS at
# most, so that it starts over (docs/performance.md#long-wal).
CHECKPOINT_EVERY = 200
WAL_FRAMES_LIMIT = 1000
RESTART_WAIT_MS = 250
# How long a writer waits for another process's write lock (SQLite's busy handler).
BUSY_TIMEOUT_MS = 30000
T = TypeVar("T")


def database_url(settings: Settings) -> str:
    if settings.database_url:
        return settings.database_url
    # Private when made here: it holds the database and the secret key (auth/secret.py).
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    return f"sqlite+aiosqlite:///{(settings.data_dir / 'chatrelay.db').resolve()}"


# The database holds password hashes and every conversation: readable by its owner only.
SQLITE_FILE_MODE = 0o600
_SQLITE_COMPANIONS = ("", "-wal", "-shm", "-journal")


def make_sqlite_private(url: str) -> None:
    """Create an SQLite database file 0600 before SQLite first opens it, and take other
    users' access away from an existing one (made world-readable by an older version).

    SQLite would create it 0644 (with the usual umask 022), and it creates the -wal, -shm and
    -journal files with the database file's own mode (os_unix.c, findCreateFileMode): so a
    private database file makes them private too; existing ones are tightened here as well.
    Not PostgreSQL, an in-memory database or a ``file:`` URI (whose path SQLite resolves)."""
    parsed = make_url(url)
    path = parsed.database
    if (
        parsed.get_backend_name() != "sqlite"
        or not path
        or path == ":memory:"
        or path.startswith("file:")
        or parsed.query.get("uri")
    ):
        return
    # O_CREAT with 0600 leaves an existing file as it is; its mode is set below.
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, SQLITE_FILE_MODE)
    os.close(descriptor)
    for suffix in _SQLITE_COMPANIONS:
        try:
            if os.stat(path + suffix).st_mode & 0o777 != SQLITE_FILE_MODE:
                os.chmod(path + suffix, SQLITE_FILE_MODE)
        except FileNotFoundError:
            continue
        except PermissionError:  # another user's file: say so rather than fail the start
            log.warning("%s is not private (mode 0600) and cannot be made so", path + suffix)


def _tune_sqlite(
    engine: Engine,
    *,
    busy_timeout_ms: int = BUSY_TIMEOUT_MS,
    autocheckpoint: bool = True,
    begin_event: bool = True,
) -> None:
    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: Any, _: Any) -> None:
        # BEGIN is issued by "begin" below (or _write_with), not implicitly by the driver.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")  # readers never wait for the writer
        cursor.execute("PRAGMA synchronous=NORMAL")  # durable at checkpoints, safe with WAL
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        if not autocheckpoint:
            cursor.execute("PRAGMA wal_autocheckpoint=0")
        cursor.close()

    if not begin_event:
        # The engines of Database.write begin in _write_with instead: any listener of an
        # engine's own events makes SQLAlchemy dispatch them around every statement, and the
        # BEGIN below goes through its whole execution path (docs/performance.md#begin-immediate).
        return

    @event.listens_for(engine, "begin")
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
        make_sqlite_private(url)
        options: dict[str, Any] = {"pool_pre_ping": not self.is_sqlite}
        self.engine = create_async_engine(url, **options)
        # SQLite's async driver hops to its own thread and back for every statement, fetch
        # and commit: most of a write transaction's time (docs/performance.md#writer-thread).
        # The per-request writes (Database.write) run whole on one writer thread with the
        # plain driver instead: one hop per transaction.
        self._sync_engine: Engine | None = None
        self._loop_engine: Engine | None = None
        self._write_thread: ThreadPoolExecutor | None = None
        self._loop_commits = 0
        self._wal_long = False  # the last checkpoint left more than WAL_FRAMES_LIMIT frames
        if self.is_sqlite:
            _tune_sqlite(self.engine.sync_engine)
            sync_url = make_url(url).set(drivername="sqlite+pysqlite")
            self._sync_engine = create_engine(sync_url)
            _tune_sqlite(self._sync_engine, begin_event=False)
            self._write_thread = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")
            # Small writes (a request's few rows) run on the event loop itself: the hops to the
            # writer thread and back (two wake-ups) cost more CPU than the write
            # (docs/performance.md#small-writes). Its one
            # connection never waits: with another process holding the write lock it fails
            # at once and the write goes to the writer thread, which waits in SQLite's busy
            # handler; and it never checkpoints (CHECKPOINT_EVERY).
            # timeout 0: even the connection's first pragmas must not wait for a lock.
            self._loop_engine = create_engine(
                sync_url, poolclass=StaticPool, connect_args={"timeout": 0}
            )
            _tune_sqlite(
                self._loop_engine, busy_timeout_ms=0, autocheckpoint=False, begin_event=False
            )
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        # SQLite has one writer at a time. Left to itself, a second pooled connection waits in
        # SQLite's busy handler, which polls with sleeps: the long tails of a busy server
        # (docs/performance.md#writer-lock). This process's writers queue here instead, in
        # order, and each one starts the moment the previous one commits (other processes still
        # meet the busy handler). Never nest two write transactions in one task: the second
        # would wait for the first forever.
        self._writer = asyncio.Lock() if self.is_sqlite else None
        self._group = GroupCommit(self._write_group_now, self._write_group)
        self._background: set[asyncio.Task[None]] = set()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session whose work is committed on a clean exit and rolled back on an error."""
        if self._writer is None:
            async with self._sessions() as session, session.begin():
                yield session
            return
        async with self._writer, self._sessions() as session, session.begin():
            yield session

    async def write(self, work: Callable[[Connection], T], *, small: bool = False) -> T:
        """``work(connection)`` (Core statements) in one write transaction, committed when it
        returns. On SQLite it runs whole on the writer thread, queued with this process's
        other writers, or (``small``: a few rows, no scan) on the event loop itself unless
        another process holds the write lock; on PostgreSQL on a pooled async connection.

        ``small`` writes are group-committed: those asked for while one is being written (a
        burst of answers admitted together) go in the next transaction together, each in a
        savepoint of its own, so that one failing fails alone (docs/performance.md#group-
        commit). Each returns only once its transaction is committed."""
        if small:
            return await self._group.write(work)
        return await self._write_alone(work, small=False)

    def _write_group_now(self, works: list[Callable[[Connection], Any]]) -> list[Outcome] | None:
        """The works of one group commit in one transaction, at once on the event loop
        (SQLite, when no writer of this process holds the lock and no other process writes);
        None when they must wait (``_write_group``)."""
        if self._loop_engine is None or self._writer is None or self._writer.locked():
            return None
        try:
            outcomes = _write_with(self._loop_engine, partial(_each_in_a_savepoint, works))
        except (OperationalError, sqlite3.OperationalError) as error:
            if not _is_busy(error):
                raise
            return None  # another process writes: rolled back, to be written after it
        if self._loop_committed():
            task = asyncio.get_running_loop().create_task(self._checkpoint_soon())
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        return outcomes

    def _loop_committed(self) -> bool:
        """Count a commit of the loop's own connection; whether a checkpoint is due after it."""
        self._loop_commits += 1
        return self._wal_long or self._loop_commits % CHECKPOINT_EVERY == 0

    async def _checkpoint_soon(self) -> None:
        assert self._writer is not None
        async with self._writer:
            await self._checkpoint_holding_lock()

    async def _checkpoint_holding_lock(self) -> None:
        """A checkpoint on the writer thread, its caller holding the writers' lock: one that
        new frames keep overtaking never lets the WAL start over, and it would grow forever."""
        frames = await asyncio.get_running_loop().run_in_executor(
            self._write_thread, self._checkpoint, self._wal_long
        )
        self._wal_long = frames > WAL_FRAMES_LIMIT

    async def _write_group(self, works: list[Callable[[Connection], Any]]) -> list[Outcome]:
        """The works of one group commit in one transaction, waiting for the lock (SQLite:
        on the writer thread when another process writes; PostgreSQL: a pooled connection)."""
        if self._sync_engine is None:
            async with self.engine.begin() as connection:
                return await connection.run_sync(partial(_each_in_a_savepoint, works))
        return await self._write_alone(partial(_each_in_a_savepoint, works), small=True)

    async def _write_alone(self, work: Callable[[Connection], T], *, small: bool) -> T:
        if self._sync_engine is None:
            async with self.engine.begin() as connection:
                return await connection.run_sync(work)
        assert self._writer is not None
        async with self._writer:
            if small:
                try:
                    assert self._loop_engine is not None
                    result = _write_with(self._loop_engine, work)
                except (OperationalError, sqlite3.OperationalError) as error:
                    if not _is_busy(error):
                        raise
                    # Another process writes: wait for it on the writer thread (whatever ran
                    # was rolled back, so the work is done once).
                else:
                    if self._loop_committed():
                        await self._checkpoint_holding_lock()
                    return result
            return await asyncio.get_running_loop().run_in_executor(
                self._write_thread, _write_with, self._sync_engine, work
            )

    def _checkpoint(self, restart: bool = False) -> int:
        """Copy the WAL's pages into the database file (on the writer thread: it fsyncs); how
        many frames the WAL will hold. ``restart`` (the WAL is long): also wait a moment for
        the readers still in it, so that the next commit starts it over. A PASSIVE one never
        waits, and on a busy server readers in the WAL at every commit kept it growing."""
        assert self._sync_engine is not None
        try:
            # On the driver's connection: not in a transaction, which the pragma cannot run in.
            connection = self._sync_engine.raw_connection()
            try:
                cursor = connection.cursor()
                if not restart:
                    _busy, frames, _ = cursor.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    return int(frames)
                # SQLite's busy handler is the wait: short, as this process's writers queue
                # behind it (and another process's writers wait in theirs).
                cursor.execute(f"PRAGMA busy_timeout={RESTART_WAIT_MS}")
                try:
                    busy, frames, _ = cursor.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
                finally:
                    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
                return int(frames) if busy else 0  # not busy: the next commit starts it over
            finally:
                connection.close()
        except Exception:  # the next one, or any other connection's commit, will do it
            log.exception("SQLite checkpoint failed")
            return 0

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
        if self._background:  # a checkpoint under way
            await asyncio.gather(*self._background, return_exceptions=True)
        await self.engine.dispose()
        if self._loop_engine is not None:
            self._loop_engine.dispose()
        if self._sync_engine is not None:
            assert self._write_thread is not None
            # On the writer thread: an SQLite connection may only be closed where it was made.
            await asyncio.get_running_loop().run_in_executor(
                self._write_thread, self._sync_engine.dispose
            )
            self._write_thread.shutdown(wait=True)


def _write_with(engine: Engine, work: Callable[[Connection], T]) -> T:
    """``work`` in one write transaction of ``engine``'s (SQLite), committed when it returns
    and rolled back when it or the commit fails.

    BEGIN IMMEDIATE (the write lock up front, see _tune_sqlite) goes straight to the driver:
    with no listener SQLAlchemy's own begin sends nothing for pysqlite."""
    with engine.begin() as connection:
        connection.connection.dbapi_connection.execute("BEGIN IMMEDIATE")  # type: ignore[union-attr]
        return work(connection)


# What one work of a group commit came to: its result, or the exception it raised.
Outcome = tuple[bool, Any]


def _each_in_a_savepoint(
    works: list[Callable[[Connection], Any]], connection: Connection
) -> list[Outcome]:
    """Each work in a savepoint of the transaction, so that one that raises is rolled back
    alone. A lone work needs none: its failure rolls the transaction back. On SQLite the
    SAVEPOINT statements go straight to the driver: SQLAlchemy's begin_nested costs more than
    the work (docs/performance.md#group-commit)."""
    if len(works) == 1:
        return [(True, works[0](connection))]
    outcomes: list[Outcome] = []
    raw = connection.connection.dbapi_connection if connection.dialect.name == "sqlite" else None
    for work in works:
        if raw is None:
            nested = connection.begin_nested()
            try:
                result = work(connection)
            except Exception as error:
                nested.rollback()
                outcomes.append((False, error))
            else:
                nested.commit()
                outcomes.append((True, result))
            continue
        raw.execute("SAVEPOINT g")
        try:
            result = work(connection)
        except Exception as error:
            raw.execute("ROLLBACK TO g")
            raw.execute("RELEASE g")
            outcomes.append((False, error))
        else:
            raw.execute("RELEASE g")
            outcomes.append((True, result))
    return outcomes


class GroupCommit:
    """Small writes asked for together, written together. A write is not run where it is
    asked for but a moment later, from the event loop's next turn, with every other write
    asked for meanwhile (a burst of answers admitted together), up to ``MAX_GROUP`` in one
    transaction. Nothing waits for a timer: a lone write goes on the next turn.

    ``now(works)`` writes them at once on the event loop, or answers None when they must
    wait; ``later(works)`` writes them when it can."""

    MAX_GROUP = 64

    def __init__(
        self,
        now: Callable[[list[Callable[[Connection], Any]]], list[Outcome] | None],
        later: Callable[[list[Callable[[Connection], Any]]], Awaitable[list[Outcome]]],
    ) -> None:
        self._now = now
        self._later = later
        self._pending: list[tuple[Callable[[Connection], Any], asyncio.Future[Any]]] = []
        self._scheduled = False
        self._waiting: asyncio.Task[None] | None = None  # a group waiting to be written
        self._loop: asyncio.AbstractEventLoop | None = None  # the flush's, while scheduled

    async def write(self, work: Callable[[Connection], T]) -> T:
        # The writes of a burst after its first are asked on the loop that the flush is
        # scheduled on: asking for the running loop again costs a getpid() system call on
        # Python 3.11 (docs/performance.md#burst-admission).
        loop = self._loop
        if not self._scheduled or loop is None:
            loop = asyncio.get_running_loop()
        done: asyncio.Future[T] = loop.create_future()
        self._pending.append((work, done))
        if not self._scheduled and self._waiting is None:
            self._scheduled, self._loop = True, loop
            loop.call_soon(self._flush)
        # A caller that goes away leaves its write to be done: it may be committed already.
        return await done

    def _flush(self) -> None:
        """On the loop's next turn: every pending write, in groups, at once if it can."""
        self._scheduled = False
        while self._pending:
            group = self._take()
            try:
                outcomes = self._now([work for work, _ in group])
            except Exception as error:  # the transaction itself: each of them failed
                _fail(group, error)
                continue
            if outcomes is None:  # to wait for the lock: the rest of them after this group
                self._pending[:0] = group
                self._waiting = asyncio.get_running_loop().create_task(
                    self._flush_later(), name="group-commit"
                )
                return
            _deliver(group, outcomes)

    async def _flush_later(self) -> None:
        try:
            while self._pending:
                group = self._take()
                try:
                    outcomes = await self._later([work for work, _ in group])
                except Exception as error:
                    _fail(group, error)
                    continue
                _deliver(group, outcomes)
        finally:
            self._waiting = None

    def _take(self) -> list[tuple[Callable[[Connection], Any], asyncio.Future[Any]]]:
        group = self._pending[: self.MAX_GROUP]
        del self._pending[: len(group)]
        return group


def _deliver(
    group: list[tuple[Callable[[Connection], Any], asyncio.Future[Any]]], outcomes: list[Outcome]
) -> None:
    for (_, done), (ok, value) in zip(group, outcomes, strict=True):
        if done.done():  # its caller went away
            continue
        if ok:
            done.set_result(value)
        else:
            done.set_exception(value)


def _fail(
    group: list[tuple[Callable[[Connection], Any], asyncio.Future[Any]]], error: BaseException
) -> None:
    """The transaction failed: each of its writers gets the error (a lone one, the error
    itself, as it would have raised it; several, a copy each)."""
    for _, done in group:
        if not done.done():
            done.set_exception(error if len(group) == 1 else _copy(error))


def _copy(error: BaseException) -> BaseException:
    """The commit's failure for each waiting writer (one exception object raised in many
    tasks would chain their tracebacks together)."""
    if isinstance(error, asyncio.CancelledError):
        return asyncio.CancelledError()
    copied = copy.copy(error)
    copied.__traceback__ = None
    return copied


def _is_busy(error: OperationalError | sqlite3.OperationalError) -> bool:
    """SQLite's SQLITE_BUSY, extended codes included (SQLITE_BUSY_RECOVERY, ...), from the
    driver (BEGIN IMMEDIATE in _write_with) or through SQLAlchemy (a statement)."""
    driver_error = error.orig if isinstance(error, OperationalError) else error
    code = getattr(driver_error, "sqlite_errorcode", None)
    return code is not None and code & 0xFF == sqlite3.SQLITE_BUSY


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade_database(url: str, revision: str = "head") -> None:
    make_sqlite_private(url)  # Alembic may be the first to open it (`chatrelay db upgrade`)
    command.upgrade(alembic_config(url), revision)
