"""What the limits add to a chat request: rate limit + stream slot + budget reservation at the
start, and settlement at the end, in process and in Redis.

Two measurements:

1. The checks alone: ``Quotas.admit`` + ``reserve`` + ``settle`` for one request, timed one at a
   time (latency) and 50 at a time (what a busy process sees), for each backend.
2. Whole requests: short answers through `chatrelay serve` (against bench/mock_upstream.py),
   with limits off, in process and in Redis; the difference of the medians is the added
   latency as a client sees it (noisier: it includes everything else a request does).

    .venv/bin/python bench/limits_overhead.py [--requests 2000] [--redis redis://127.0.0.1:6379/0]

Redis must be running for its rows (they are skipped otherwise); keys go under a prefix of
their own and are removed afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parent))
from chatrelay.config import Settings
from chatrelay.limits.admission import Caller
from chatrelay.limits.periods import PeriodWindow
from chatrelay.limits.quotas import Quotas
from chatrelay.limits.redis_backend import RedisLimits
from chatrelay.upstreams.chunk import Usage
from chatrelay.upstreams.dialects import UpstreamMessage
from relay_latency import ROOT, free_port, start_mock, wait_for_port

MESSAGES: list[UpstreamMessage] = [{"role": "user", "content": "How much does this cost?"}]
LIMITS = {
    "rate_limit": "100000000/minute",
    "max_streams_per_ip": 1_000_000,
    "guest_token_budget": 10**12,
}


async def no_usage_yet(user_id: str, window: PeriodWindow) -> int:
    return 0


def quotas_for(redis_url: str | None, prefix: str) -> Quotas:
    settings = Settings(**LIMITS, redis_url=redis_url, redis_prefix=prefix)  # type: ignore[arg-type]
    if redis_url is None:
        from chatrelay.limits.budget import MemoryBudgetStore
        from chatrelay.limits.rate import MemoryRateLimiter
        from chatrelay.limits.streams import MemoryStreamSlots

        return Quotas(
            settings,
            budgets=MemoryBudgetStore(),
            rates=MemoryRateLimiter(),
            streams=MemoryStreamSlots(),
            ledger=no_usage_yet,
        )
    redis = RedisLimits.connect(redis_url, prefix=prefix, timeout=1)
    return Quotas(
        settings,
        budgets=redis.budgets,
        rates=redis.rates,
        streams=redis.streams,
        ledger=no_usage_yet,
        redis=redis,
    )


async def one_request(quotas: Quotas, user: int) -> tuple[float, float]:
    """(seconds before the upstream could be called, seconds to settle at the end)."""
    caller = Caller(f"usr_bench{user}", 10**12, f"10.0.{user // 256}.{user % 256}")
    began = time.perf_counter()
    admission = await quotas.admit(owner_id=caller.user_id, caller=caller)
    await quotas.reserve(admission, messages=MESSAGES, max_tokens=256)
    admitted = time.perf_counter()
    await quotas.settle(
        admission, usage=Usage(12, 200), text="x", messages=MESSAGES, upstream="bench"
    )
    return admitted - began, time.perf_counter() - admitted


def describe(name: str, samples: list[float]) -> str:
    us = sorted(s * 1e6 for s in samples)
    p99 = us[min(len(us) - 1, int(len(us) * 0.99))]
    mean, p50 = statistics.fmean(us), us[len(us) // 2]
    return f"{name:<38} mean {mean:7.1f} µs  p50 {p50:7.1f}  p99 {p99:7.1f}"


async def bench_checks(redis_url: str | None, requests: int) -> None:
    prefix = f"chatrelay-bench-{uuid.uuid4().hex[:8]}:"
    quotas = quotas_for(redis_url, prefix)
    label = "redis" if redis_url else "in-process"
    try:
        for user in range(100):  # warm up: connections, scripts loaded, accounts seeded
            await one_request(quotas, user)
        serial = [await one_request(quotas, i % 100) for i in range(requests)]
        print(describe(f"{label}: admit+reserve (serial)", [a for a, _ in serial]))
        print(describe(f"{label}: settle (serial)", [s for _, s in serial]))
        began = time.perf_counter()
        parallel: list[tuple[float, float]] = []

        async def worker(offset: int) -> None:
            for i in range(requests // 50):
                parallel.append(await one_request(quotas, (offset + i) % 100))

        await asyncio.gather(*(worker(w) for w in range(50)))
        elapsed = time.perf_counter() - began
        print(describe(f"{label}: admit+reserve (50 at once)", [a for a, _ in parallel]))
        print(describe(f"{label}: settle (50 at once)", [s for _, s in parallel]))
        print(f"{label}: {len(parallel) / elapsed:,.0f} requests/s through the checks, 50 at once")
    finally:
        if quotas.redis is not None:
            keys = [k async for k in quotas.redis.client.scan_iter(match=f"{prefix}*")]
            if keys:
                await quotas.redis.client.delete(*keys)
        await quotas.close()


def start_relay(
    upstream_port: int, env: dict[str, str], data_dir: str
) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    relay = subprocess.Popen(
        [sys.executable, "-m", "chatrelay", "serve", "--port", str(port)],
        env={
            "PATH": os.environ.get("PATH", ""),
            "OPENAI_BASE_URL": f"http://127.0.0.1:{upstream_port}",
            "CHATRELAY_MODELS": "bench",
            "CHATRELAY_DATA_DIR": data_dir,
            "CHATRELAY_WARM_MODELS": "",
            **env,
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )
    wait_for_port(port)
    return relay, port


async def one_chat(client: httpx.AsyncClient) -> float:
    began = time.perf_counter()
    async with client.stream(
        "POST", "/api/chat", json={"messages": MESSAGES, "max_tokens": 1}
    ) as r:
        await r.aread()
    assert r.status_code == 200, r.status_code
    return time.perf_counter() - began


async def bench_requests(redis_url: str | None, requests: int) -> None:
    """All variants side by side, one request to each in turn, so drift hits them alike."""
    mock, mock_port = start_mock(0)
    prefix = f"chatrelay-bench-{uuid.uuid4().hex[:8]}:"
    on = {f"CHATRELAY_{k.upper()}": str(v) for k, v in LIMITS.items()}
    variants: dict[str, dict[str, str]] = {"limits off": {}, "in-process limits": on}
    if redis_url:
        redis_env = {"CHATRELAY_REDIS_URL": redis_url, "CHATRELAY_REDIS_PREFIX": prefix}
        variants["redis limits"] = {**on, **redis_env}
    relays: list[subprocess.Popen[bytes]] = []
    clients: dict[str, httpx.AsyncClient] = {}
    samples: dict[str, list[float]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory() as data_dirs:
        try:
            for name, env in variants.items():
                data_dir = str(Path(data_dirs) / name.replace(" ", "-"))
                relay, port = start_relay(mock_port, env, data_dir)
                relays.append(relay)
                clients[name] = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30)
            for i in range(requests + 50):
                for name, client in clients.items():
                    took = await one_chat(client)
                    if i >= 50:  # the first ones warm everything up
                        samples[name].append(took)
        finally:
            for client in clients.values():
                await client.aclose()
            for process in [*relays, mock]:
                process.terminate()
                process.wait()
            if redis_url:
                redis = aioredis.Redis.from_url(redis_url)
                keys = [k async for k in redis.scan_iter(match=f"{prefix}*")]
                if keys:
                    await redis.delete(*keys)
                await redis.aclose()
    for name, taken in samples.items():
        print(describe(f"request, {name}", taken))
    base = statistics.median(samples["limits off"])
    for name, taken in samples.items():
        if name != "limits off":
            added = (statistics.median(taken) - base) * 1e6
            print(f"added by {name}: {added:+.0f} µs per request (median)")


async def redis_or_none(url: str) -> str | None:
    client = aioredis.Redis.from_url(url, socket_connect_timeout=0.5)
    try:
        await client.ping()
        return url
    except (OSError, aioredis.ConnectionError):
        print(f"(no Redis at {url}: its rows are skipped)")
        return None
    finally:
        await client.aclose()


async def main(args: argparse.Namespace) -> None:
    redis_url = await redis_or_none(args.redis)
    print(f"The checks alone, {args.requests} requests per row:")
    run: list[Callable[[], Awaitable[None]]] = [lambda: bench_checks(None, args.requests)]
    if redis_url:
        run.append(lambda: bench_checks(redis_url, args.requests))
    for step in run:
        await step()
    print(f"\nWhole requests (1-token answers, one at a time), {args.http_requests} per row:")
    await bench_requests(redis_url, args.http_requests)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--http-requests", type=int, default=300)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    asyncio.run(main(parser.parse_args()))
