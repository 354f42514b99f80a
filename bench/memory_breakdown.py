"""What each open stream holds: the resident size it adds (``--rss``), or, with tracemalloc
in chatrelay's process (the study bench/studies/memory_top.py), the Python
objects it holds, by package and by line.

    .venv/bin/python bench/memory_breakdown.py [--streams 128] [--top 25]
    .venv/bin/python bench/memory_breakdown.py --rss [--streams 512]
    .venv/bin/python bench/memory_breakdown.py --finished [--streams 128]

``--finished``: what each answer still holds once all the streams have ended (the answers
are kept a while for re-attaching clients; the idle upstream connections are counted too).

One measurement with no stream open after a warm-up run (every lazy import, cache and pool
done), one in the middle of a run that holds ``--streams`` streams open at once (slowly
paced, all started within 2 s: tracemalloc slows the server several times over), and the
growth between the two divided by the streams. The idle measurement still holds the
warm-up's finished answers (kept for re-attaching): the figure is what one more open stream
adds to a warmed-up server. (``make bench`` counts differently: the peak of a run of
back-to-back answers, finished ones kept meanwhile, over the size before the first run.)
"""

from __future__ import annotations

import argparse
import collections
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from compare import run_driver
from systems import System, start_chatrelay, start_mock

PACE_MS, CHUNKS = 250.0, 40  # a 10 s answer: the measurement is taken half-way through
RAMP_S = float(__import__("os").environ.get("RAMP_S", "2"))
T = TypeVar("T")


def owner(filename: str) -> str:
    """``chatrelay/answers/answer.py``, or the package (``aiohttp``), or the stdlib module."""
    for marker in ("src/chatrelay/", "site-packages/", "python3.11/"):
        if marker in filename:
            rest = filename.split(marker, 1)[1]
            return "chatrelay/" + rest if marker == "src/chatrelay/" else rest.split("/")[0]
    return filename


def snapshot(system: System, name: str) -> tracemalloc.Snapshot:
    """Has the server dump a snapshot (the study ``memory-top``), and loads it."""
    assert system.process is not None
    base = Path(tempfile.gettempdir(), f"chatrelay-memory-{system.process.pid}.{name}")
    request, result = Path(f"{base}.request"), Path(f"{base}.snapshot")
    result.unlink(missing_ok=True)
    request.touch()
    while request.exists():
        time.sleep(0.1)
    loaded = tracemalloc.Snapshot.load(str(result))
    result.unlink()
    return loaded


def idle_and_open(
    system: System, mock: System, streams: int, measure: Callable[[str], T]
) -> tuple[T, T, T]:
    """``measure`` after a warm-up, with ``streams`` streams open, and once they have ended."""
    system.refresh_pids()
    run_driver(
        system, mock, concurrency=32, requests_per_client=1, chunks=4, pace_ms=10, chunk_bytes=20
    )
    idle = measure("idle")
    load = threading.Thread(
        target=run_driver,
        args=(system, mock),
        kwargs={
            "concurrency": streams,
            "requests_per_client": 1,
            "chunks": CHUNKS,
            "pace_ms": PACE_MS,
            "chunk_bytes": 20,
            "ramp_s": RAMP_S,
        },
    )
    load.start()
    time.sleep(CHUNKS * PACE_MS / 1000 / 2 + 2)  # every stream open, none finished
    held = measure("open")
    load.join()
    return idle, held, measure("after")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--streams", type=int, default=128, help="streams held open")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument(
        "--rss", action="store_true", help="no tracemalloc: the resident size per open stream"
    )
    parser.add_argument(
        "--finished",
        action="store_true",
        help="what each answer still holds once its stream has ended (kept for re-attaching)",
    )
    args = parser.parse_args()
    mock = start_mock(pace_ms=PACE_MS, chunks=CHUNKS)
    system = start_chatrelay(mock, prelude="" if args.rss else "memory-top")
    try:
        if args.rss:
            idle, held, after = idle_and_open(system, mock, args.streams, lambda _: system.rss())
            n = args.streams
            print(f"resident: idle {idle} KB, {n} streams open {held} KB, after {after} KB")
            print(
                f"{(held - idle) / n:.1f} KB per open stream; {(after - idle) / n:.1f} KB per "
                "stream still held once they have ended (finished answers, freed memory kept)"
            )
        else:
            start, peak, after = idle_and_open(
                system, mock, args.streams, lambda name: snapshot(system, name)
            )
            what = "finished answer" if args.finished else "open stream"
            report(after if args.finished else peak, start, args.streams, args.top, what)
    finally:
        system.stop()
        mock.stop()


def report(
    held: tracemalloc.Snapshot, idle: tracemalloc.Snapshot, streams: int, top: int, what: str
) -> None:
    by_owner: collections.Counter[str] = collections.Counter()
    for stat in held.compare_to(idle, "filename"):
        name = owner(stat.traceback[0].filename)
        if name != "tracemalloc.py":  # the measuring itself
            by_owner[name] += stat.size_diff
    total = sum(by_owner.values())
    ours = sum(v for k, v in by_owner.items() if k.startswith("chatrelay/"))
    print(f"{total / streams / 1024:.1f} KiB traced per {what} ({streams} of them)")
    print(f"{ours / streams / 1024:.1f} KiB of it chatrelay's own code\n")
    for name, size in by_owner.most_common(top):
        print(f"{size / streams:8.0f} B  {name}")
    print("\nby line:")
    for stat in held.compare_to(idle, "lineno")[:top]:
        frame = stat.traceback[0]
        where = f"{'/'.join(Path(frame.filename).parts[-2:])}:{frame.lineno}"
        size, count = stat.size_diff / streams, stat.count_diff / streams
        print(f"{size:8.0f} B {count:5.1f} objects  {where}")


if __name__ == "__main__":
    main()
