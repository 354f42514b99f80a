"""Re-attaching across instances: resume latency, events lost or duplicated, Redis memory.

Two `chatrelay serve` processes share one PostgreSQL database and one Redis, in front of the
mock upstream (bench/mock_upstream.py, whose every token is its send time, so order and
uniqueness can be checked). Answers start on instance A; the driver reads a few events, drops
the connection, and resumes on the other instance with `Last-Event-ID`, again and again until
`[DONE]`, each time after ``--gap-ms`` offline (so that there are events to replay); at least
``--resumes`` times in all. It prints:

- resume latency: from sending the resume request to its first replayed event (p50, p99);
- events lost or duplicated: each answer's tokens must be exactly the mock's, in order;
- Redis memory per active answer (`MEMORY USAGE` of the answers' streams while they run).

    .venv/bin/python bench/resume.py [--answers 40] [--chunks 200] [--resumes 1000] [--gap-ms 50]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable

import aiohttp
import asyncpg
import orjson
import redis.asyncio as aioredis

from relay_latency import HOST, start_mock, start_relay

POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/0"


class Answer:
    def __init__(self) -> None:
        self.tokens: list[int] = []
        self.last_id = "0"
        self.done = False


async def timed(
    response: aiohttp.ClientResponse, on_first: Callable[[], None]
) -> AsyncIterator[bytes]:
    """The response's bytes; ``on_first`` is called when the first of them arrive."""
    async for data in response.content.iter_any():
        if on_first is not None:
            on_first()
            on_first = None  # type: ignore[assignment]
        yield data


async def read_events(stream: AsyncIterator[bytes], answer: Answer, limit: int | None) -> None:
    """Read events into ``answer``; stop after ``limit`` content events (a dropped client)."""
    buffer, seen = b"", 0
    async for data in stream:
        buffer += data
        *events, buffer = buffer.split(b"\n\n")
        for event in events:
            fields = dict(line.split(b": ", 1) for line in event.split(b"\n") if b": " in line)
            if b"id" in fields:
                answer.last_id = fields[b"id"].decode()
            payload = fields.get(b"data", b"")
            if payload == b"[DONE]":
                answer.done = True
                return
            if payload.startswith(b"{"):
                for choice in orjson.loads(payload).get("choices", ()):
                    content = choice["delta"].get("content", "").strip()
                    if content.isdigit():
                        answer.tokens.append(int(content))
                        seen += 1
            if limit is not None and seen >= limit:
                return


async def one_answer(
    session: aiohttp.ClientSession,
    urls: list[str],
    chunks: int,
    pace: int,
    latencies: list[float],
    active: set[str],
    gap: float,
    local: list[float],
) -> Answer:
    answer = Answer()
    body = {
        "model": "bench",
        "messages": [{"role": "user", "content": f"chunks={chunks} pace={pace}"}],
    }
    async with session.post(f"{urls[0]}/api/chat", json=body) as response:
        assert response.status == 200, await response.text()
        message_id = response.headers["X-Message-Id"]
        active.add(message_id)
        await read_events(response.content.iter_any(), answer, random.randint(1, 8))
    turn = 1
    while not answer.done:
        # Offline for a moment: events are missed, and the resume's first event is a replay.
        await asyncio.sleep(gap)
        url = f"{urls[turn % 2]}/api/messages/{message_id}/stream"
        sent = time.perf_counter()
        async with session.get(url, headers={"Last-Event-ID": answer.last_id}) as response:
            assert response.status == 200, await response.text()
            target = latencies if turn % 2 else local
            stream = timed(response, lambda at=sent, to=target: to.append(time.perf_counter() - at))
            await read_events(stream, answer, random.randint(1, 8))
        turn += 1
    active.discard(message_id)
    return answer


async def sample_redis(
    prefix: str, active: set[str], samples: list[int], stop: asyncio.Event
) -> None:
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        while not stop.is_set():
            for message_id in list(active)[:20]:
                used = await client.memory_usage(f"{prefix}answer:{message_id}", samples=0)
                if used:
                    samples.append(int(used))
            await asyncio.sleep(0.2)
    finally:
        await client.aclose()


async def run(args: argparse.Namespace, urls: list[str], prefix: str) -> None:
    latencies: list[float] = []  # resumes on B, the other instance (through Redis)
    local: list[float] = []  # resumes on A, where the answer runs (its own memory)
    answers: list[Answer] = []
    memory: list[int] = []
    active: set[str] = set()
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_redis(prefix, active, memory, stop))
    connector = aiohttp.TCPConnector(limit=0)
    jar = aiohttp.CookieJar(unsafe=True)  # cookies for 127.0.0.1, shared by both ports
    started = time.perf_counter()
    async with aiohttp.ClientSession(connector=connector, cookie_jar=jar) as session:
        async with session.post(f"{urls[0]}/api/auth/guest") as me:  # one guest for every answer
            assert me.status == 201, me.status
        while len(latencies) < args.resumes:
            batch = await asyncio.gather(
                *(
                    one_answer(
                        session,
                        urls,
                        args.chunks,
                        args.pace_ms,
                        latencies,
                        active,
                        args.gap_ms / 1000,
                        local,
                    )
                    for _ in range(args.answers)
                )
            )
            answers += batch
    stop.set()
    await sampler
    elapsed = time.perf_counter() - started
    lost = duplicated = disordered = 0
    for answer in answers:
        distinct = set(answer.tokens)
        duplicated += len(answer.tokens) - len(distinct)
        lost += args.chunks - len(distinct)
        disordered += answer.tokens != sorted(answer.tokens)
    ms = sorted(x * 1000 for x in latencies)
    print(f"answers: {len(answers)} x {args.chunks} chunks every {args.pace_ms} ms, "
          f"{args.answers} at a time, in {elapsed:.1f} s")  # fmt: skip
    print(f"resumes on the other instance (B, through Redis): {len(ms)}, with Last-Event-ID")
    print(f"resume latency (request to first replayed event): p50 {statistics.median(ms):.2f} ms, "
          f"p99 {ms[int(len(ms) * 0.99) - 1]:.2f} ms, max {ms[-1]:.2f} ms")  # fmt: skip
    if local:
        here = sorted(x * 1000 for x in local)
        p99 = here[int(len(here) * 0.99) - 1]
        print(f"  for comparison, {len(here)} resumes on the instance that runs the answer: "
              f"p50 {statistics.median(here):.2f} ms, p99 {p99:.2f} ms")  # fmt: skip
    print(f"events lost: {lost}, duplicated: {duplicated}, answers out of order: {disordered}")
    if memory:
        print(f"Redis memory per active answer: median {statistics.median(memory) / 1024:.1f} KiB, "
              f"max {max(memory) / 1024:.1f} KiB (MEMORY USAGE of its stream, "
              f"{len(memory)} samples)")  # fmt: skip


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--answers", type=int, default=40, help="answers at a time")
    parser.add_argument("--chunks", type=int, default=200)
    parser.add_argument("--pace-ms", type=int, default=10)
    parser.add_argument("--resumes", type=int, default=1000)
    parser.add_argument("--gap-ms", type=int, default=50, help="offline time before a resume")
    args = parser.parse_args()
    database = f"chatrelay_bench_{uuid.uuid4().hex[:8]}"
    prefix = f"chatrelay-bench-{uuid.uuid4().hex[:8]}:"
    admin = await asyncpg.connect(POSTGRES_ADMIN)
    await admin.execute(f'CREATE DATABASE "{database}"')
    processes: list[subprocess.Popen[bytes]] = []
    try:
        mock, mock_port = start_mock(args.pace_ms)
        processes.append(mock)
        env = {
            "CHATRELAY_DATABASE_URL": f"postgresql+asyncpg://postgres@127.0.0.1:5432/{database}",
            "CHATRELAY_REDIS_URL": REDIS_URL,
            "CHATRELAY_REDIS_PREFIX": prefix,
            "CHATRELAY_SECRET_KEY": "bench-secret-shared-by-both",
        }
        urls = []
        with tempfile.TemporaryDirectory() as data:
            for name in ("a", "b"):
                relay, port = start_relay(mock_port, os.path.join(data, name), **env)
                processes.append(relay)
                urls.append(f"http://{HOST}:{port}")
                await asyncio.sleep(1.0)  # the first one migrates the database
            await run(args, urls, prefix)
    finally:
        for process in processes:
            process.terminate()
            process.wait()
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.close()
        client = aioredis.Redis.from_url(REDIS_URL)
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


if __name__ == "__main__":
    asyncio.run(main())
