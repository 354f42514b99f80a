"""Two real `chatrelay serve` processes sharing one Redis and one PostgreSQL enforce one
budget and one rate limit, and a killed process's holds expire with their leases."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_crash_recovery import start_server_process
from tests.fake_upstream import FakeUpstream, livepeer_chunk, livepeer_events
from tests.limits_helpers import ask, needed, usage_of
from tests.polling import wait_until
from tests.sse_client import read_answer

pytestmark = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
QUESTION = "Shared?"


@contextlib.asynccontextmanager
async def two_servers(
    fake: FakeUpstream, database_url: str, redis: dict[str, str], tmp_path: Path, **env: str
) -> AsyncIterator[list[tuple[asyncio.subprocess.Process, str]]]:
    base = {
        "PATH": os.environ.get("PATH", ""),
        "LIVEPEER_GATEWAY_URL": fake.base_url,
        "CHATRELAY_DATABASE_URL": database_url,
        "CHATRELAY_REDIS_URL": redis["redis_url"],
        "CHATRELAY_REDIS_PREFIX": redis["redis_prefix"],
        # One secret everywhere, so a session cookie from one process works on the other.
        "CHATRELAY_SECRET_KEY": "shared-secret-for-both-processes",
        "CHATRELAY_RETRY_DEADLINE": "0",
        **env,
    }
    servers: list[tuple[asyncio.subprocess.Process, str]] = []
    try:
        # One after the other: the first one migrates the fresh database.
        for name in ("a", "b"):
            servers.append(
                await start_server_process({**base, "CHATRELAY_DATA_DIR": str(tmp_path / name)})
            )
        yield servers
    finally:
        for process, _ in servers:
            if process.returncode is None:
                process.terminate()
                await process.wait()


async def test_two_processes_share_one_budget(
    fake: FakeUpstream, database_url: str, redis_limits: dict[str, str], tmp_path: Path
) -> None:
    gate = asyncio.Event()
    fake.script = [livepeer_chunk("Hi"), gate, *livepeer_events([" all"])]
    each = needed(QUESTION, 50)
    budget = {"CHATRELAY_GUEST_TOKEN_BUDGET": str(5 * each)}
    async with two_servers(fake, database_url, redis_limits, tmp_path, **budget) as servers:
        (_, url_a), (_, url_b) = servers
        async with httpx.AsyncClient(base_url=url_a, timeout=15) as a:
            await a.post("/api/auth/guest")  # one guest, known to both through the shared database
            async with httpx.AsyncClient(base_url=url_b, timeout=15, cookies=a.cookies) as b:
                clients = [a, b] * 15
                requests = [
                    c.build_request("POST", "/api/chat", json=ask(QUESTION, 50)) for c in clients
                ]
                responses = await asyncio.gather(
                    *(c.send(r, stream=True) for c, r in zip(clients, requests, strict=True))
                )
                admitted = [r for r in responses if r.status_code == 200]
                refused = [r for r in responses if r.status_code != 200]
                # Each process got 15: with budgets of their own they would admit 5 each.
                assert len(admitted) == 5
                assert {r.status_code for r in refused} == {429}
                for response in refused:
                    await response.aread()
                    assert response.json()["error"]["code"] == "budget_exceeded"
                    await response.aclose()
                # (Each process also warms the model up at start: those ask for 1 token.)
                asked = [r for r in fake.requests if r.json["max_tokens"] == 50]
                assert len(asked) == 5
                gate.set()
                for response in admitted:
                    assert (await read_answer(response)).text == "Hi all"
                    await response.aclose()
                await wait_until(lambda: fake.active == 0)
                report_a, report_b = await usage_of(a), await usage_of(b)
    assert report_a == report_b
    assert report_a["reserved"] == 0
    assert report_a["used"] == 5 * 43


async def test_two_processes_share_one_rate_limit(
    fake: FakeUpstream, database_url: str, redis_limits: dict[str, str], tmp_path: Path
) -> None:
    fake.script = livepeer_events(["ok"])
    limit = {"CHATRELAY_RATE_LIMIT": "4/minute"}
    async with two_servers(fake, database_url, redis_limits, tmp_path, **limit) as servers:
        urls = [url for _, url in servers] * 10
        clients = [httpx.AsyncClient(base_url=url, timeout=15) for url in urls]
        try:
            responses = await asyncio.gather(
                *(c.post("/api/chat", json=ask("hi", 8)) for c in clients)
            )
        finally:
            await asyncio.gather(*(c.aclose() for c in clients))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 4 + [429] * 16
    assert {r.json()["error"]["code"] for r in responses if r.status_code == 429} == {
        "rate_limited"
    }


async def test_a_killed_process_holds_are_released_by_lease_expiry(
    fake: FakeUpstream, database_url: str, redis_limits: dict[str, str], tmp_path: Path
) -> None:
    gate = asyncio.Event()
    fake.script = [livepeer_chunk("never finished"), gate]
    settings: dict[str, Any] = {
        "CHATRELAY_GUEST_TOKEN_BUDGET": "100000",
        "CHATRELAY_MAX_STREAMS_PER_IP": "1",
        "CHATRELAY_BUDGET_LEASE": "1",
    }
    async with two_servers(fake, database_url, redis_limits, tmp_path, **settings) as servers:
        (process_a, url_a), (_, url_b) = servers
        async with httpx.AsyncClient(base_url=url_a, timeout=15) as a:
            response = await a.send(
                a.build_request("POST", "/api/chat", json=ask(QUESTION, 50)), stream=True
            )
            assert response.status_code == 200
            async with httpx.AsyncClient(base_url=url_b, timeout=15, cookies=a.cookies) as b:
                # Held across processes: B sees A's reservation and A's stream slot...
                assert (await usage_of(b))["reserved"] == needed(QUESTION, 50)
                # ...and outlives several lease periods while A renews it.
                await asyncio.sleep(2.5)
                assert (await usage_of(b))["reserved"] == needed(QUESTION, 50)
                busy = await b.post("/api/chat", json=ask(QUESTION, 50))
                assert busy.status_code == 429 and busy.json()["error"]["code"] == "rate_limited"

                process_a.send_signal(signal.SIGKILL)  # no settlement runs
                await process_a.wait()
                with contextlib.suppress(httpx.HTTPError):
                    await response.aclose()
                for _ in range(50):  # the lease is 1 s
                    if (await usage_of(b))["reserved"] == 0:
                        break
                    await asyncio.sleep(0.1)
                assert (await usage_of(b))["reserved"] == 0
                fake.script = livepeer_events(["after the crash"])
                async with b.stream("POST", "/api/chat", json=ask(QUESTION, 50)) as again:
                    assert again.status_code == 200  # the stream slot expired too
                    assert (await read_answer(again)).text == "after the crash"
