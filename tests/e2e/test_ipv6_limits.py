"""IPv6 clients are limited per network, a /64 by default (issue 21 item 7): one host is
commonly given a whole /64, so per-address limits counted per exact address limited nothing.
Clients are named by X-Forwarded-For from the trusted loopback proxy, on a real server."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from chatrelay.limits.client_ip import limit_key
from tests.fake_upstream import FakeUpstream, livepeer_chunk, livepeer_events
from tests.limits_helpers import ask, limits_backend
from tests.sse_client import read_answer

__all__ = ["limits_backend"]  # a fixture, imported to be used here

ONE_64 = [f"2001:db8:1:2:{i:x}::{i + 1:x}" for i in range(60)]  # 60 addresses of one /64
ELSEWHERE = "2001:db8:1:3::1"  # the next /64


def client_at(relay: Any, address: str, **options: Any) -> httpx.AsyncClient:
    # Loopback is a trusted proxy by default: X-Forwarded-For names the client's address.
    return httpx.AsyncClient(
        base_url=relay.url, timeout=10, headers={"x-forwarded-for": address}, **options
    )


@pytest.mark.parametrize(
    ("client", "prefix", "key"),
    [
        ("2001:db8:1:2:3:4:5:6", 64, "2001:db8:1:2::/64"),
        ("2001:db8:1:2:3:4:5:6", 48, "2001:db8:1::/48"),
        ("2001:db8:1:2:3:4:5:6", 128, "2001:db8:1:2:3:4:5:6/128"),
        ("::ffff:198.51.100.7", 64, "198.51.100.7"),  # an IPv4 client on a dual stack
        ("198.51.100.7", 64, "198.51.100.7"),
        ("testclient", 64, "testclient"),  # not an address: itself
        (None, 64, None),
    ],
)
def test_what_an_address_counts_as(client: str | None, prefix: int, key: str | None) -> None:
    assert limit_key(client, ipv6_prefix=prefix) == key


async def test_one_64_shares_one_rate_limit(
    relay_for, fake: FakeUpstream, limits_backend: dict[str, Any]
) -> None:
    """The review's run: 60 addresses of one /64 got 60 requests past a 40/10s limit (here a
    minute, so that a slow machine's 60 requests still fall in one window)."""
    fake.script = livepeer_events(["ok"])
    async with relay_for(rate_limit="40/minute", **limits_backend) as relay:
        async with client_at(relay, ONE_64[0]) as first:
            assert (await first.post("/api/auth/guest")).status_code == 201
            cookies = first.cookies  # one guest: only the address changes
        statuses = []
        for address in ONE_64:
            async with client_at(relay, address, cookies=cookies) as client:
                statuses.append((await client.post("/api/chat", json=ask("hi", 4))).status_code)
        assert statuses == [200] * 40 + [429] * 20
        async with client_at(relay, ELSEWHERE, cookies=cookies) as other:
            assert (await other.post("/api/chat", json=ask("hi", 4))).status_code == 200


async def test_the_prefix_is_configurable(relay_for, fake: FakeUpstream) -> None:
    fake.script = livepeer_events(["ok"])
    async with relay_for(rate_limit="1/minute", ipv6_prefix=128) as relay:
        async with client_at(relay, ONE_64[0]) as first:
            assert (await first.post("/api/auth/guest")).status_code == 201
            cookies = first.cookies
        for address in ONE_64[:3]:  # each exact address its own limit
            async with client_at(relay, address, cookies=cookies) as client:
                assert (await client.post("/api/chat", json=ask("hi", 4))).status_code == 200


async def test_one_64_shares_its_stream_slots(
    relay_for, fake: FakeUpstream, limits_backend: dict[str, Any]
) -> None:
    gate = asyncio.Event()
    fake.script = [livepeer_chunk("Hi"), gate, *livepeer_events([" there"])]
    async with relay_for(max_streams_per_ip=2, **limits_backend) as relay:
        async with client_at(relay, ONE_64[0]) as first:
            assert (await first.post("/api/auth/guest")).status_code == 201
            cookies = first.cookies
        clients = [client_at(relay, address, cookies=cookies) for address in ONE_64[:5]]
        streams = [c.stream("POST", "/api/chat", json=ask("hi", 4)) for c in clients]
        responses = [await s.__aenter__() for s in streams]  # in turn: slots fill in order
        assert [r.status_code for r in responses] == [200, 200, 429, 429, 429]
        for refused in responses[2:]:
            await refused.aread()
            assert refused.json()["error"]["code"] == "rate_limited"
            assert "CHATRELAY_MAX_STREAMS_PER_IP" in refused.json()["error"]["message"]
        gate.set()
        assert [(await read_answer(r)).text for r in responses[:2]] == ["Hi there"] * 2
        for stream in streams:
            await stream.__aexit__(None, None, None)
        for client in clients:
            await client.aclose()


async def test_one_64_shares_one_sign_in_throttle(
    relay_for, limits_backend: dict[str, Any]
) -> None:
    async with relay_for(sign_in_max_failures=3, **limits_backend) as relay:
        statuses = []
        for i, address in enumerate(ONE_64[:6]):
            async with client_at(relay, address) as client:
                wrong = {"username": f"someone{i}", "password": "guess"}
                statuses.append((await client.post("/api/auth/login", json=wrong)).status_code)
        assert statuses == [401, 401, 401, 429, 429, 429]
        async with client_at(relay, ELSEWHERE) as other:
            wrong = {"username": "someone-else", "password": "guess"}
            assert (await other.post("/api/auth/login", json=wrong)).status_code == 401
