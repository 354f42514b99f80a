"""Per-IP rate limits and concurrent streams over real sockets (in process and in Redis), the
client address behind trusted proxies, and sign-in throttling shared through Redis."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from chatrelay.limits.redis_backend import RedisSignInThrottle
from tests.fake_upstream import FakeUpstream, livepeer_chunk, livepeer_events
from tests.limits_helpers import ask, chat_text, limits_backend
from tests.polling import wait_until
from tests.ports import free_port
from tests.sse_client import events_of, read_answer

__all__ = ["limits_backend"]  # a fixture, imported to be used here


async def post_status(client: httpx.AsyncClient, body: dict[str, Any], **kw: Any) -> int:
    async with client.stream("POST", "/api/chat", json=body, **kw) as response:
        await response.aread()
        return response.status_code


async def test_parallel_requests_get_exactly_the_rate(
    relay_for, fake: FakeUpstream, limits_backend: dict[str, Any]
) -> None:
    fake.script = livepeer_events(["ok"])
    async with relay_for(rate_limit="5/minute", **limits_backend) as relay:
        # Fifty different users (no shared cookie) from one address: the limit is the address's.
        clients = [httpx.AsyncClient(base_url=relay.url, timeout=10) for _ in range(50)]
        try:
            responses = await asyncio.gather(
                *(c.post("/api/chat", json=ask("hi", 8)) for c in clients)
            )
        finally:
            await asyncio.gather(*(c.aclose() for c in clients))
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [200] * 5 + [429] * 45
        refused = next(r for r in responses if r.status_code == 429)
        error = refused.json()["error"]
        assert error["code"] == "rate_limited" and error["type"] == "rate_limit_error"
        assert "5/minute" in error["message"] and "CHATRELAY_RATE_LIMIT" in error["message"]
        assert 55 <= int(refused.headers["retry-after"]) <= 60
        assert len(fake.requests) == 5


async def test_stream_slots_are_freed_when_the_job_ends_not_on_disconnect(
    relay_for, fake: FakeUpstream, limits_backend: dict[str, Any]
) -> None:
    gate = asyncio.Event()
    fake.script = [livepeer_chunk("held"), gate, *livepeer_events([" done"])]
    async with relay_for(max_streams_per_ip=2, **limits_backend) as relay:
        client = relay.client
        first = await client.send(
            client.build_request("POST", "/api/chat", json=ask("a", 8)), stream=True
        )
        second = await client.send(
            client.build_request("POST", "/api/chat", json=ask("b", 8)), stream=True
        )
        assert (first.status_code, second.status_code) == (200, 200)
        third = await client.post("/api/chat", json=ask("c", 8))
        assert third.status_code == 429
        assert third.json()["error"]["code"] == "rate_limited"
        assert "CHATRELAY_MAX_STREAMS_PER_IP" in third.json()["error"]["message"]
        assert third.headers["retry-after"] == "2"
        # Hanging up does not free a slot: the answer is still being generated (and paid for).
        await anext(aiter(events_of(first)))
        await first.aclose()
        assert (await client.post("/api/chat", json=ask("d", 8))).status_code == 429
        gate.set()
        assert (await read_answer(second)).text == "held done"
        await second.aclose()
        await wait_until(lambda: not relay.service.answers)
        fake.script = livepeer_events(["free"])
        assert await chat_text(client, ask("e", 8)) == "free"


async def test_forwarded_for_counts_only_from_trusted_proxies(
    relay_for, fake: FakeUpstream
) -> None:
    fake.script = livepeer_events(["ok"])

    def via(*hops: str) -> dict[str, str]:
        return {"x-forwarded-for": ", ".join(hops)}

    async with relay_for(rate_limit="1/minute", trusted_proxies="127.0.0.1") as relay:
        send = relay.client.post
        assert (
            await send("/api/chat", json=ask("a", 8), headers=via("203.0.113.1"))
        ).status_code == 200
        assert (
            await send("/api/chat", json=ask("b", 8), headers=via("203.0.113.2"))
        ).status_code == 200
        # A client cannot escape its limit by writing its own hops to the left...
        spoofed = await send("/api/chat", json=ask("c", 8), headers=via("9.9.9.9", "203.0.113.1"))
        assert spoofed.status_code == 429
        # ...and the proxy itself (no header) is a client of its own.
        assert (await send("/api/chat", json=ask("d", 8))).status_code == 200

    async with relay_for(rate_limit="1/minute", trusted_proxies="") as relay:
        send = relay.client.post
        assert (
            await send("/api/chat", json=ask("a", 8), headers=via("203.0.113.1"))
        ).status_code == 200
        # Not a trusted proxy: the header is ignored, and both are the socket's peer.
        refused = await send("/api/chat", json=ask("b", 8), headers=via("203.0.113.2"))
        assert refused.status_code == 429


async def test_forwarded_proto_is_believed_from_trusted_proxies_only(
    relay_for, fake: FakeUpstream
) -> None:
    async with relay_for(trusted_proxies="") as relay:
        response = await relay.client.post(
            "/api/auth/guest", headers={"x-forwarded-proto": "https"}
        )
        assert "Secure" not in response.headers["set-cookie"]
    async with relay_for() as relay:  # loopback is trusted by default
        response = await relay.client.post(
            "/api/auth/guest", headers={"x-forwarded-proto": "https"}
        )
        assert "Secure" in response.headers["set-cookie"]


async def test_sign_in_failures_are_counted_across_processes_through_redis(
    relay_for, fake: FakeUpstream, redis_limits: dict[str, str]
) -> None:
    settings = {**redis_limits, "sign_in_max_failures": 3}
    async with relay_for(**settings) as one, relay_for(**settings) as two:
        assert isinstance(one.context.auth.sign_in_throttle._inner, RedisSignInThrottle)
        wrong = {"username": "nobody", "password": "not the password"}
        for relay in (one, two, one):
            assert (await relay.client.post("/api/auth/login", json=wrong)).status_code == 401
        throttled = await two.client.post("/api/auth/login", json=wrong)
        assert throttled.status_code == 429
        assert throttled.json()["error"]["code"] == "too_many_attempts"
        assert 0 < int(throttled.headers["retry-after"]) <= 900


async def test_sign_in_with_redis_down_fails_closed(relay_for, fake: FakeUpstream) -> None:
    down = {"redis_url": f"redis://127.0.0.1:{free_port()}/0", "redis_timeout": 0.5}
    async with relay_for(**down) as relay:
        response = await relay.client.post(
            "/api/auth/login", json={"username": "ann", "password": "whatever it is"}
        )
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "limits_unavailable"
