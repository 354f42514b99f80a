"""What each open stream holds, by package: reads the snapshots the ``memory-top`` experiment
(bench/systems.py) leaves in $TMPDIR and divides the growth since start-up by the streams.

    .venv/bin/python bench/compare.py --concurrency 128 --chunks 24 --pace-ms 500 \\
        --systems chatrelay:memory-top --no-litellm --non-streaming "" --unpaced "" --no-report
    .venv/bin/python bench/memory_breakdown.py --streams 128

Run slowly paced (tracemalloc slows the server several times over); the figures include the
answers that finished during the run and are still kept for re-attaching clients.
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import tempfile
import tracemalloc


def owner(filename: str) -> str:
    """``chatrelay/chat/job.py``, or the package (``aiohttp``), or the stdlib module."""
    for marker in ("src/chatrelay/", "site-packages/", "python3.11/"):
        if marker in filename:
            rest = filename.split(marker, 1)[1]
            return "chatrelay/" + rest if marker == "src/chatrelay/" else rest.split("/")[0]
    return filename


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--streams", type=int, required=True, help="the C of the run")
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    pattern = os.path.join(tempfile.gettempdir(), "chatrelay-memory-*.txt.snapshot")
    latest = max(glob.glob(pattern), key=os.path.getmtime)
    peak = tracemalloc.Snapshot.load(latest)
    start = tracemalloc.Snapshot.load(latest.removesuffix(".snapshot") + ".first")
    growth = peak.compare_to(start, "filename")
    by_owner: collections.Counter[str] = collections.Counter()
    for stat in growth:
        name = owner(stat.traceback[0].filename)
        if name != "tracemalloc.py":  # the measuring itself
            by_owner[name] += stat.size_diff
    total = sum(by_owner.values())
    ours = sum(v for k, v in by_owner.items() if k.startswith("chatrelay/"))
    print(f"{total / args.streams / 1024:.1f} KiB traced per stream ({latest})")
    print(f"{ours / args.streams / 1024:.1f} KiB of it chatrelay's own code\n")
    for name, size in by_owner.most_common(args.top):
        print(f"{size / args.streams:8.0f} B  {name}")


if __name__ == "__main__":
    main()
