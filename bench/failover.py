"""Failover figures: how long a stall costs, and how many answers survive a faulty upstream.

1. Stall to continued token: upstream A stalls after a few chunks, B is healthy. The client
   measures the gap between the last chunk before the stall and the first continued chunk;
   minus CHATRELAY_STALL_TIMEOUT (the time the relay must wait to call it a stall), that is
   what failing over costs.
2. Survival: three upstreams, one of which stalls at a random chunk in half of its answers;
   N answers (default 1,000) at a bounded concurrency; how many complete without an error.

All processes on 127.0.0.1: the mocks (bench/mock_upstream.py), chatrelay, this driver.

    .venv/bin/python bench/failover.py [--answers 1000] [--concurrency 50]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time

import aiohttp
import orjson

from relay_latency import HOST, start_mock, start_relay


async def one_answer(session: aiohttp.ClientSession, url: str, chunks: int) -> tuple[bool, float]:
    """(completed without error, longest gap between two content chunks in seconds)."""
    body = {"model": "bench", "messages": [{"role": "user", "content": "go"}], "max_tokens": chunks}
    buffer, last, longest, ok = b"", None, 0.0, False
    async with session.post(url, json=body) as response:
        if response.status != 200:
            return False, 0.0
        async for data in response.content.iter_any():
            buffer += data
            *events, buffer = buffer.split(b"\n\n")
            for event in events:
                # The data line, after an "id:" line now that the relay numbers its events.
                _, found, rest = event.partition(b"data: {")
                if not found:
                    continue
                obj = orjson.loads(b"{" + rest)
                if "error" in obj:
                    return False, longest
                for choice in obj.get("choices", ()):
                    if choice["delta"].get("content"):
                        now = time.monotonic()
                        if last is not None:
                            longest = max(longest, now - last)
                        last = now
                    if choice.get("finish_reason"):
                        ok = True
    return ok, longest


async def many(url: str, answers: int, concurrency: int, chunks: int) -> list[tuple[bool, float]]:
    gate = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        await one_answer(session, url, 1)  # one browser identity for all

        async def bounded() -> tuple[bool, float]:
            async with gate:
                return await one_answer(session, url, chunks)

        return await asyncio.gather(*(bounded() for _ in range(answers)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--answers", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--chunks", type=int, default=32)
    parser.add_argument("--stall-timeout", type=float, default=0.5)
    args = parser.parse_args()

    faulty, faulty_port = start_mock(5, stall_probability=1.0)
    healthy, healthy_port = start_mock(5)
    flaky, flaky_port = start_mock(5, stall_probability=0.5)
    healthy2, healthy2_port = start_mock(5)
    processes = [faulty, healthy, flaky, healthy2]
    common = {
        "CHATRELAY_STALL_TIMEOUT": str(args.stall_timeout),
        "CHATRELAY_MAX_FAILOVERS": "3",
        "CHATRELAY_BREAKER_FAILURES": "1000000",
        "CHATRELAY_RETRY_DEADLINE": "30",
    }
    try:
        # 1. A always stalls after a few chunks; B is healthy.
        relay, port = start_relay(
            healthy_port, tempfile.mkdtemp(prefix="chatrelay-bench-"),
            LIVEPEER_GATEWAY_URL=f"http://{HOST}:{faulty_port}", OPENAI_BASE_URL="",
            CHATRELAY_UPSTREAMS=orjson.dumps([
                {"name": "b", "dialect": "openai", "base_url": f"http://{HOST}:{healthy_port}",
                 "models": ["bench"], "weight": 0.001}]).decode(),
            **common,
        )  # fmt: skip
        processes.append(relay)
        results = asyncio.run(many(f"http://{HOST}:{port}/api/chat", 40, 5, args.chunks))
        # Answers that began on B never stalled; those that began on A show the stall gap.
        gaps = [gap - args.stall_timeout for ok, gap in results if ok and gap > args.stall_timeout]
        print(
            f"stall -> continued token: {len(gaps)} answers continued after a stall "
            f"({sum(ok for ok, _ in results)}/40 completed); added beyond the "
            f"{args.stall_timeout} s stall timeout: median {statistics.median(gaps) * 1000:.1f} ms"
            f", max {max(gaps) * 1000:.1f} ms"
        )
        relay.terminate()
        relay.wait()

        # 2. Three upstreams, one stalls at random in half of its answers.
        relay, port = start_relay(
            healthy_port, tempfile.mkdtemp(prefix="chatrelay-bench-"),
            LIVEPEER_GATEWAY_URL=f"http://{HOST}:{flaky_port},http://{HOST}:{healthy2_port}",
            OPENAI_BASE_URL=f"http://{HOST}:{healthy_port}",
            **common,
        )  # fmt: skip
        processes.append(relay)
        started = time.monotonic()
        results = asyncio.run(
            many(f"http://{HOST}:{port}/api/chat", args.answers, args.concurrency, args.chunks)
        )
        completed = sum(ok for ok, _ in results)
        stalled = sum(ok and gap > args.stall_timeout for ok, gap in results)
        print(
            f"one of three upstreams stalls at random: {completed}/{args.answers} answers "
            f"completed ({stalled} of them after a failover) in {time.monotonic() - started:.1f} s"
        )
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait()


if __name__ == "__main__":
    main()
