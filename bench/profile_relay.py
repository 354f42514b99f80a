"""Where chatrelay's CPU goes under load: py-spy samples ``chatrelay serve`` (native frames
too; by default only the thread holding the GIL, which is where Python burns CPU) while the
load driver streams C answers at once through it, configured as in bench/compare.py (stored
answers, quotas, metrics).

    .venv/bin/python bench/profile_relay.py [--concurrency 128] [--seconds 8] [--pace-ms 20]
    .venv/bin/python bench/profile_relay.py --arrival burst --concurrency 256 --chunks 1

``--arrival burst`` asks the C answers at one instant, burst after burst (bench/load_driver.py):
with one-chunk answers, what is left is admission, storing and billing (issue 25).

Prints the functions with the most samples, by self time (the leaf frame) and by inclusive
time (anywhere on the stack), and the share by source file; writes the same summary to
bench/results/profile-<UTC time>.txt (the raw collapsed stacks go to a .raw file beside it,
for speedscope or flamegraph.pl).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from burst import GUEST_LIMIT
from compare import RESULTS, run_driver
from systems import start_chatrelay, start_mock

# py-spy's frame: "function (file.py:line)"; lines are dropped so that a function is one row.
FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]*)(?::\d+)?\)$")


def frame_name(frame: str) -> tuple[str, str]:
    match = FRAME.match(frame.strip())
    if not match:
        return frame.strip(), "?"
    path = match["file"]
    for marker in ("site-packages/", "src/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{match['func']} ({path})", path


def summarise(raw: Path, top: int) -> str:
    self_time: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    by_file: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [frame_name(f) for f in stack.split(";") if f]
        # The thread name py-spy puts first is no frame of its own.
        frames = [f for f in frames if not f[0].startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        self_time[frames[-1][0]] += count
        by_file[frames[-1][1]] += count
        for name in {name for name, _ in frames}:
            inclusive[name] += count

    def table(title: str, counter: collections.Counter[str]) -> list[str]:
        rows = [f"{title} (of {total} samples)"]
        rows += [f"{100 * n / total:6.1f}%  {name}" for name, n in counter.most_common(top)]
        return [*rows, ""]

    return "\n".join(
        table("self time by function", self_time)
        + table("inclusive time by function", inclusive)
        + table("self time by file", by_file)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--concurrency", type=int, default=128)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--pace-ms", type=float, default=20.0)
    parser.add_argument("--chunks", type=int, default=64)
    parser.add_argument("--rate", type=int, default=200, help="samples per second")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument(
        "--non-streaming", action="store_true", help="whole answers: the per-request cost alone"
    )
    parser.add_argument("--prelude", default="", help="studies or src=PATH, as in compare.py")
    parser.add_argument("--bytes", type=int, default=20, help="text bytes of a chunk")
    parser.add_argument(
        "--arrival", choices=("spread", "burst"), default="spread", help="as in load_driver.py"
    )
    parser.add_argument(
        "--cookieless", action="store_true", help="POST /api/chat with no cookie: a guest each"
    )
    parser.add_argument(
        "--kind", choices=("text", "tool", "logprobs"), default="text", help="what each chunk is"
    )
    parser.add_argument(
        "--all-threads",
        action="store_true",
        help="sample every thread, idle ones too (default: only the thread "
        "holding the GIL, i.e. where Python spends CPU)",
    )
    args = parser.parse_args()
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    mock = start_mock(pace_ms=args.pace_ms, chunks=args.chunks)
    relay = start_chatrelay(mock, prelude=args.prelude, **GUEST_LIMIT)
    if args.cookieless:
        base = relay.url.rsplit("/v1/", 1)[0]
        relay = dataclasses.replace(relay, url=f"{base}/api/chat", api_key=None)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    RESULTS.mkdir(parents=True, exist_ok=True)
    raw = RESULTS / f"profile-{stamp}.raw"
    try:
        run_driver(
            relay, mock, concurrency=8, requests_per_client=2, chunks=8, pace_ms=1, chunk_bytes=20
        )
        assert relay.process is not None
        spy = subprocess.Popen(
            [
                py_spy,
                "record",
                "--native",
                "--rate",
                str(args.rate),
                "--format",
                "raw",
                "--output",
                str(raw),
                "--pid",
                str(relay.process.pid),
                "--duration",
                str(args.seconds),
                *([] if args.all_threads else ["--gil"]),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        duration = args.chunks * args.pace_ms / 1000
        # A burst of C admissions takes about C ms: enough of them to fill the sampling.
        least = max(duration, args.concurrency / 1000) if args.arrival == "burst" else 0.1
        per_client = max(1, round(args.seconds / max(duration, least)))
        figures = run_driver(
            relay,
            mock,
            concurrency=args.concurrency,
            requests_per_client=per_client,
            chunks=args.chunks,
            pace_ms=args.pace_ms,
            chunk_bytes=args.bytes,
            non_streaming=args.non_streaming,
            kind=args.kind,
            arrival=args.arrival,
        )
        _, spy_err = spy.communicate()
        if spy.returncode != 0:
            raise SystemExit(f"py-spy failed: {spy_err.decode()[-2000:]}")
    finally:
        relay.stop()
        mock.stop()
    threads = "every thread" if args.all_threads else "the thread holding the GIL"
    head = f"chatrelay under py-spy --native at {args.rate} Hz ({threads}): C={args.concurrency}, "
    if args.prelude:
        head += f"experiment {args.prelude!r}, "
    if args.cookieless:
        head += "POST /api/chat without a cookie (a new guest each), "
    if args.arrival == "burst":
        admitted = (figures.get("admissions_per_s") or {}).get("p50")
        head += f"bursts of {args.concurrency} at once, {admitted} admitted/s (median); "
    if args.non_streaming:
        head += (
            f"whole answers of {args.chunks} chunks; {figures['completed']} requests, CPU "
            f"{figures.get('cpu_ms_per_request')} ms per request (profiler attached)\n\n"
        )
    else:
        head += (
            f"{args.chunks} chunks paced {args.pace_ms:g} ms; {figures['no_stall']}/"
            f"{figures['requests']} streams without stall, {figures['chunks']} chunks, CPU "
            f"{figures.get('cpu_ms_per_1k_chunks')} ms per 1,000 chunks (profiler attached), "
            f"chunk latency p50 {figures['latency_ms']['p50']} ms\n\n"
        )
    text = head + summarise(raw, args.top)
    (RESULTS / f"profile-{stamp}.txt").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
