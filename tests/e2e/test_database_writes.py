"""SQLite writes: a request's small writes run on the event loop itself, yet the loop never
waits for another process's write lock, and the WAL is still checkpointed (store/database.py)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import Connection, text
from sqlalchemy.exc import IntegrityError

from chatrelay.store import database
from chatrelay.store.database import Database


def insert_row(payload: bytes, threads: list[str]):  # type: ignore[no-untyped-def]
    def work(connection: Connection) -> None:
        threads.append(threading.current_thread().name)
        connection.execute(text("INSERT INTO scratch (payload) VALUES (:p)"), {"p": payload})

    return work


async def scratch_database(tmp_path: Path) -> tuple[Database, Path]:
    path = tmp_path / "chatrelay.db"
    db = Database(f"sqlite+aiosqlite:///{path}")
    await db.write(lambda c: c.execute(text("CREATE TABLE scratch (payload BLOB)")))
    return db, path


def rows(path: Path) -> int:
    with sqlite3.connect(path) as connection:
        return int(connection.execute("SELECT count(*) FROM scratch").fetchone()[0])


async def test_a_small_write_runs_on_the_loop_and_waits_for_another_process_off_it(
    tmp_path: Path,
) -> None:
    db, path = await scratch_database(tmp_path)
    threads: list[str] = []
    try:
        await db.write(insert_row(b"first", threads), small=True)
        assert threads == [threading.current_thread().name]  # no hop to the writer thread

        # Another process (a CLI command, a second instance) holds the write lock for a while.
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        write = asyncio.create_task(db.write(insert_row(b"second", threads), small=True))
        started = time.monotonic()
        for _ in range(20):  # the loop goes on meanwhile: it does not wait for the lock
            await asyncio.sleep(0.01)
        # Had SQLite's busy handler held the loop, these turns would have waited for it: the
        # writer's busy timeout (30 s). Half of it is no margin a loaded machine can miss.
        assert time.monotonic() - started < 15
        assert not write.done()
        other.execute("COMMIT")
        other.close()
        await asyncio.wait_for(write, 10)
        assert threads[-1].startswith("sqlite-writer")
        assert rows(path) == 2
    finally:
        await db.close()


async def test_small_writes_keep_the_wal_bounded_while_others_read(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setattr(database, "CHECKPOINT_EVERY", 50)
    db, path = await scratch_database(tmp_path)
    threads: list[str] = []

    done = asyncio.Event()

    async def read_until_done() -> None:  # short read transactions, as requests make
        while not done.is_set():
            async with db.read() as session:
                await session.execute(text("SELECT count(*) FROM scratch"))

    readers = [asyncio.create_task(read_until_done()) for _ in range(2)]
    try:
        for _ in range(3000):
            await db.write(insert_row(b"x" * 4000, threads), small=True)
            await asyncio.sleep(0)
        assert rows(path) == 3000
        assert set(threads) == {threading.current_thread().name}
        # ~12 MB written. Left to itself the loop's connection never checkpoints, and
        # checkpoints now and then are overtaken by the readers' snapshots: either way the WAL
        # would hold most of it.
        wal = path.with_name(path.name + "-wal").stat().st_size
        assert wal < 8_000_000, wal
    finally:
        # Each reader ends its transaction: cancelled in the middle of one, a reader could
        # still be rolling back on the driver's thread when the database closes.
        done.set()
        await asyncio.gather(*readers)
        await db.close()


@pytest.mark.parametrize("small", [True, False], ids=["on-the-loop", "on-the-writer-thread"])
async def test_a_write_whose_commit_fails_lets_go_of_the_lock(tmp_path: Path, small: bool) -> None:
    """A failed COMMIT (here a deferred foreign key; on a server a full disk) is rolled back:
    the write lock is free for other processes and the next write goes through."""
    db, path = await scratch_database(tmp_path)

    def make_tables(connection: Connection) -> None:
        connection.execute(text("CREATE TABLE parent (id INTEGER PRIMARY KEY)"))
        connection.execute(
            text(
                "CREATE TABLE child (parent_id INTEGER "
                "REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)"
            )
        )

    def orphan(connection: Connection) -> None:
        connection.execute(text("INSERT INTO child (parent_id) VALUES (999)"))

    try:
        await db.write(make_tables)
        with pytest.raises(IntegrityError):  # checked at COMMIT, not at the INSERT
            await db.write(orphan, small=small)
        other = sqlite3.connect(path, isolation_level=None, timeout=0)
        other.execute("BEGIN IMMEDIATE")  # "database is locked" if the failed write held on
        other.execute("ROLLBACK")
        other.close()
        await db.write(insert_row(b"after", []), small=small)
        assert rows(path) == 1
        with sqlite3.connect(path) as reader:
            assert reader.execute("SELECT count(*) FROM child").fetchone()[0] == 0
    finally:
        await db.close()


async def test_small_writes_asked_together_commit_together_and_fail_alone(
    database_url: str,
) -> None:
    """A burst of small writes (answers admitted together) is one transaction, each write in a
    savepoint: the one that fails fails alone, the others are committed when they return."""
    db = Database(database_url)
    try:
        await db.write(
            lambda c: c.execute(text("CREATE TABLE scratch (payload VARCHAR(20) UNIQUE)"))
        )
        transactions: list[object] = []  # the objects, kept alive: their ids stay unique

        def insert(payload: str):  # type: ignore[no-untyped-def]
            def work(connection: Connection) -> str:
                transactions.append(connection.get_transaction())
                connection.execute(text("INSERT INTO scratch VALUES (:p)"), {"p": payload})
                return payload

            return work

        await db.write(insert("taken"), small=True)
        payloads = [f"row {n}" for n in range(20)]
        payloads.insert(7, "taken")  # a duplicate: this one fails
        outcomes = await asyncio.gather(
            *(db.write(insert(p), small=True) for p in payloads), return_exceptions=True
        )
        async with db.read() as session:
            stored = set((await session.execute(text("SELECT payload FROM scratch"))).scalars())
    finally:
        await db.close()
    assert isinstance(outcomes[7], IntegrityError)
    assert [o for n, o in enumerate(outcomes) if n != 7] == [p for p in payloads if p != "taken"]
    assert stored == set(payloads)
    # The 21 writes asked together: one transaction.
    assert len({id(t) for t in transactions[1:]}) == 1 and len(transactions) == 22
