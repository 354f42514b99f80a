"""What the relay adds per chunk: latency (p50, p99) and CPU, at 100 concurrent streams.

Three processes, all on 127.0.0.1: the mock upstream (bench/mock_upstream.py), chatrelay
(`chatrelay serve` pointed at the mock with OPENAI_BASE_URL), and this load driver. Each chunk's
content is its send time, so the driver measures send-to-receive latency per chunk, first
straight from the mock (the floor) and then through the relay; the difference is what the relay
adds. The relay's CPU per chunk comes from /proc/<pid>/stat, before and after an unpaced run.

    .venv/bin/python bench/relay_latency.py [--streams 100] [--chunks 64] [--pace-ms 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import orjson

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {HOST}:{port}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def start_mock(
    pace_ms: float, stall_probability: float = 0.0
) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    mock = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "mock_upstream.py"), "--port", str(port),
         "--pace-ms", str(pace_ms), "--stall-probability", str(stall_probability)]
    )  # fmt: skip
    wait_for_port(port)
    return mock, port


def start_relay(
    upstream_port: int, data_dir: str, **extra_env: str
) -> tuple[subprocess.Popen[bytes], int]:
    """chatrelay as in production: every answer stored (SQLite in a fresh data dir)."""
    port = free_port()
    env = {**os.environ, "OPENAI_BASE_URL": f"http://{HOST}:{upstream_port}",
           "CHATRELAY_MODELS": "bench", "CHATRELAY_MAX_TOKENS_LIMIT": "100000",
           "CHATRELAY_DATA_DIR": data_dir, "CHATRELAY_WARM_MODELS": "", **extra_env}  # fmt: skip
    relay = subprocess.Popen(
        [sys.executable, "-m", "chatrelay", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(port)
    return relay, port


async def one_stream(
    session: aiohttp.ClientSession, url: str, chunks: int, latencies: list[int]
) -> int:
    body = {"model": "bench", "messages": [{"role": "user", "content": "go"}],
            "max_tokens": chunks, "stream": True}  # fmt: skip
    received = 0
    buffer = b""
    async with session.post(url, json=body) as response:
        assert response.status == 200, await response.text()
        async for data in response.content.iter_any():
            now = time.time_ns()
            buffer += data
            *events, buffer = buffer.split(b"\n\n")
            for event in events:
                # The data line, after an "id:" line now that the relay numbers its events.
                _, found, rest = event.partition(b"data: {")
                if not found:
                    continue
                obj = orjson.loads(b"{" + rest)
                for choice in obj.get("choices", ()):
                    content = choice["delta"].get("content", "").strip()
                    if content.isdigit():
                        latencies.append(now - int(content))
                        received += 1
    return received


async def run_load(
    url: str, streams: int, chunks: int, spread: float = 0.0
) -> tuple[list[int], int, float]:
    """``streams`` concurrent answers; their starts spread evenly over ``spread`` seconds, so
    that paced chunks of different streams do not all fall due at the same instant."""
    latencies: list[int] = []
    connector = aiohttp.TCPConnector(limit=0)

    async def staggered(index: int) -> int:
        await asyncio.sleep(spread * index / streams)
        return await one_stream(session, url, chunks, latencies)

    async with aiohttp.ClientSession(connector=connector) as session:
        # One answer first, so that all the others come from one known browser (its cookie),
        # as a person's would: the cost of making a guest is not the relay's per-answer cost.
        await one_stream(session, url, 1, [])
        started = time.perf_counter()
        counts = await asyncio.gather(*(staggered(i) for i in range(streams)))
        elapsed = time.perf_counter() - started
    return latencies, sum(counts), elapsed


def quantiles_ms(values: list[int]) -> tuple[float, float]:
    ordered = sorted(values)
    p50 = statistics.median(ordered) / 1e6
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] / 1e6
    return p50, p99


def measure(args: argparse.Namespace) -> None:
    mock, mock_port = start_mock(args.pace_ms)
    relay, relay_port = start_relay(mock_port, tempfile.mkdtemp(prefix="chatrelay-bench-"))
    direct_url = f"http://{HOST}:{mock_port}/v1/chat/completions"
    relay_url = f"http://{HOST}:{relay_port}/api/chat"
    try:
        asyncio.run(run_load(relay_url, 4, 4))  # warm up: imports, connection pools
        print(f"{args.streams} concurrent streams x {args.chunks} chunks, paced {args.pace_ms} ms")
        print(f"{'path':<8} {'chunks':>7} {'p50 ms':>8} {'p99 ms':>8}")
        results = {}
        for _ in range(args.rounds):
            for name, url in (("direct", direct_url), ("relay", relay_url)):
                latencies, count, _ = asyncio.run(
                    run_load(url, args.streams, args.chunks, spread=args.pace_ms / 1000)
                )
                results.setdefault(name, []).extend(latencies)
                p50, p99 = quantiles_ms(latencies)
                print(f"{name:<8} {count:>7} {p50:>8.3f} {p99:>8.3f}")
        d50, d99 = quantiles_ms(results["direct"])
        r50, r99 = quantiles_ms(results["relay"])
        print(f"relay adds per chunk: p50 {r50 - d50:.3f} ms, p99 {r99 - d99:.3f} ms")
    finally:
        relay.terminate()
        mock.terminate()
        relay.wait()
        mock.wait()

    # CPU: unpaced runs of short and long answers; the relay's own CPU time splits into a
    # cost per answer (identity, stored question and answer) and a cost per relayed chunk.
    mock, mock_port = start_mock(0)
    relay, relay_port = start_relay(mock_port, tempfile.mkdtemp(prefix="chatrelay-bench-"))
    relay_url = f"http://{HOST}:{relay_port}/api/chat"
    try:
        asyncio.run(run_load(relay_url, 4, 4))
        runs = []
        for chunks in (args.cpu_chunks // 4, args.cpu_chunks):
            before = cpu_seconds(relay.pid)
            _, count, elapsed = asyncio.run(run_load(relay_url, args.streams, chunks))
            used = cpu_seconds(relay.pid) - before
            runs.append((count, used))
            print(
                f"unpaced, {chunks} chunks/answer: {count} chunks in {elapsed:.2f} s "
                f"({count / elapsed:,.0f} chunks/s); relay CPU {used:.2f} s "
                f"= {used / count * 1e6:.1f} us per chunk all included"
            )
        (short_count, short_cpu), (long_count, long_cpu) = runs
        per_chunk = (long_cpu - short_cpu) / (long_count - short_count)
        per_answer = (short_cpu - per_chunk * short_count) / args.streams
        print(
            f"relay CPU: {per_chunk * 1e6:.1f} us per chunk + {per_answer * 1e3:.2f} ms per answer"
        )
    finally:
        relay.terminate()
        mock.terminate()
        relay.wait()
        mock.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--chunks", type=int, default=64)
    parser.add_argument("--pace-ms", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--cpu-chunks", type=int, default=2000)
    measure(parser.parse_args())


if __name__ == "__main__":
    main()
