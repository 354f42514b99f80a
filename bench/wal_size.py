"""How long SQLite's WAL grows under small writes while readers keep reading.

    .venv/bin/python bench/wal_size.py [--runs 6] [--writes 3000] [--readers 2]
        [--src PATH]

Each run writes ``--writes`` rows of 4,000 bytes through ``Database.write(small=True)`` (a
request's writes, on the event loop) while ``--readers`` tasks run short read transactions
back to back, as requests do, and prints the WAL file's size at the end: its high-water mark,
since SQLite reuses the file from its start and never shrinks it. ``--src`` measures another
tree (a ``git worktree`` of an earlier commit). Run it beside a CPU hog or two to see a busy
server: checkpoints are then more often overtaken by the readers.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from pathlib import Path


async def one_run(directory: Path, writes: int, readers: int) -> int:
    from sqlalchemy import text

    from chatrelay.store import database

    database.CHECKPOINT_EVERY = 50  # as the test (tests/e2e/test_database_writes.py): sooner
    path = directory / "chatrelay.db"
    db = database.Database(f"sqlite+aiosqlite:///{path}")
    await db.write(lambda c: c.execute(text("CREATE TABLE scratch (payload BLOB)")))
    row = text("INSERT INTO scratch (payload) VALUES (:p)")

    done = asyncio.Event()

    async def read_until_done() -> None:  # short read transactions, as requests make
        while not done.is_set():
            async with db.read() as session:
                await session.execute(text("SELECT count(*) FROM scratch"))

    reading = [asyncio.create_task(read_until_done()) for _ in range(readers)]
    try:
        for _ in range(writes):
            await db.write(lambda c: c.execute(row, {"p": b"x" * 4000}), small=True)
            await asyncio.sleep(0)
        return path.with_name(path.name + "-wal").stat().st_size
    finally:
        done.set()  # each reader ends its transaction, not cancelled in the middle of it
        await asyncio.gather(*reading)
        await db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--writes", type=int, default=3000)
    parser.add_argument("--readers", type=int, default=2)
    parser.add_argument("--src", help="another tree's src directory")
    args = parser.parse_args()
    if args.src:
        sys.path.insert(0, args.src)
    sizes = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as directory:
            sizes.append(asyncio.run(one_run(Path(directory), args.writes, args.readers)))
    written = args.writes * 4000 / 1e6
    print(
        f"{written:.0f} MB written; WAL at the end, MB: "
        + ", ".join(f"{s / 1e6:.1f}" for s in sizes)
    )
    print(f"median {statistics.median(sizes) / 1e6:.1f} MB, largest {max(sizes) / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
