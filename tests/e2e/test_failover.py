"""Several upstreams: retries before the first byte, mid-answer failover, breakers, warming.

Each test puts one fault (or a combination) on fake upstreams speaking the Livepeer wire and
asserts exactly what the client receives and what is stored.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from chatrelay.answers.failover import CONTINUE_INSTRUCTION
from chatrelay.config import Settings
from chatrelay.upstreams.registry import UpstreamRegistry, remote_upstream_configs
from tests.fake_upstream import (
    DROP,
    FakeResponse,
    FakeUpstream,
    livepeer_chunk,
    livepeer_events,
    paced,
)
from tests.polling import wait_until
from tests.ports import free_port
from tests.sse_client import DONE, read_answer, user

MODEL = "meta-llama/Meta-Llama-3.1-8B-Instruct"


@pytest.fixture
async def second() -> AsyncIterator[FakeUpstream]:
    upstream = FakeUpstream()
    await upstream.start()
    yield upstream
    await upstream.close()


def two(first: FakeUpstream, other: FakeUpstream, **settings: object) -> dict[str, object]:
    """Settings for two gateways, tried in order (equal weights, equal load: random pick,
    so the first is made the only fresh choice by failing or by `avoid`)."""
    return {
        "livepeer_gateway_urls": [first.base_url, other.base_url],
        "retry_deadline": 10,
        "max_failovers": 2,
        **settings,
    }


async def ask(relay, body=None):  # type: ignore[no-untyped-def]
    async with relay.client.stream("POST", "/api/chat", json=body or user("x")) as response:
        answer = await read_answer(response) if response.status_code == 200 else None
        if answer is None:
            await response.aread()
        return response, answer


async def stored_answer(relay, response) -> dict:  # type: ignore[no-untyped-def]
    conversation = response.headers["x-conversation-id"]
    return (await relay.client.get(f"/api/conversations/{conversation}")).json()["messages"][-1]


@pytest.mark.parametrize(
    "fault",
    ["refused", "502", "stall_before_first_token", "401_is_not_retried"],
)
async def test_a_failing_upstream_is_retried_on_the_other(
    relay_for, fake: FakeUpstream, second: FakeUpstream, fault: str
) -> None:
    second.script = livepeer_events(["from", " B"])
    fake.script = livepeer_events(["from", " A"])
    urls = [fake.base_url, second.base_url]
    if fault == "refused":
        urls[0] = f"http://127.0.0.1:{free_port()}"
    elif fault in ("502", "401_is_not_retried"):
        status = 502 if fault == "502" else 401
        fake.fail(status, {"error": {"message": f"gateway says {status}"}})
    else:
        fake.script = [b": loading\n\n", asyncio.Event()]
    settings = {"livepeer_gateway_urls": urls, "retry_deadline": 10, "first_token_timeout": 0.3}
    async with relay_for(**settings) as relay:
        # Pin the order: the faulty one must be tried first.
        relay.service.registry.upstreams[1].active += 1000
        response, answer = await ask(relay)
        relay.service.registry.upstreams[1].active -= 1000
        if fault == "401_is_not_retried":
            assert response.status_code == 502
            assert "gateway says 401" in response.json()["error"]["message"]
            assert second.requests == []  # never asked: the request itself was refused
            return
        stored = await stored_answer(relay, response)
    assert answer is not None and answer.text == "from B"
    assert answer.errors == [] and answer.events[-1] == DONE
    assert stored["status"] == "complete" and stored["upstream"] == "livepeer-2"


async def test_503_then_healthy_on_the_only_upstream(relay_for, fake: FakeUpstream) -> None:
    loading = FakeResponse(status=503, body=b'{"error":{"message":"Service Unavailable Error"}}',
                           content_type="application/json")  # fmt: skip
    fake.responses = [loading, loading, FakeResponse(script=livepeer_events(["ready"]))]
    async with relay_for(retry_deadline=10) as relay:
        started = time.monotonic()
        _, answer = await ask(relay)
        waited = time.monotonic() - started
    assert answer is not None and answer.text == "ready"
    assert len(fake.requests) == 3
    assert waited >= 0.5 + 1.0  # backed off 0.5 s, then 1 s: the model was loading


async def test_429_retry_after_is_honoured(relay_for, fake: FakeUpstream) -> None:
    busy = FakeResponse(status=429, body=b'{"error":{"message":"slow down"}}',
                        content_type="application/json", headers={"Retry-After": "1"})  # fmt: skip
    fake.responses = [busy, FakeResponse(script=livepeer_events(["ok"]))]
    async with relay_for(retry_deadline=10) as relay:
        started = time.monotonic()
        _, answer = await ask(relay)
    assert answer is not None and answer.text == "ok"
    assert time.monotonic() - started >= 1.0


@pytest.mark.parametrize("fault", ["stall", "abrupt_close", "error_event", "cut", "eof"])
async def test_mid_answer_failure_continues_on_another_upstream(
    relay_for, fake: FakeUpstream, second: FakeUpstream, fault: str
) -> None:
    first_part = [livepeer_chunk("The quick", completion_tokens=2),
                  livepeer_chunk(" brown", completion_tokens=3)]  # fmt: skip
    tail = {
        "stall": [asyncio.Event()],
        "abrupt_close": [DROP],
        "error_event": [b'data: {"error":"orchestrator unloaded the model"}\n\n'],
        "cut": [],  # a go-livepeer gateway ends the body cleanly when its orchestrator breaks
        "eof": [],
    }[fault]
    fake.script = first_part + tail
    second.script = livepeer_events([" fox", " jumps."])
    dialect = {"livepeer_gateway_urls": [fake.base_url, second.base_url]}
    if fault == "eof":  # an OpenAI-dialect server that just stops: not a finished answer
        dialect = {"livepeer_gateway_urls": [], "upstreams": [
            {"name": "a", "dialect": "openai", "base_url": fake.base_url, "models": [MODEL]},
            {"name": "b", "dialect": "livepeer", "base_url": second.base_url, "models": [MODEL]},
        ]}  # fmt: skip
        fake.script = [
            b'data: {"choices":[{"index":0,"delta":{"content":"The quick"}}]}\n\n',
            b'data: {"choices":[{"index":0,"delta":{"content":" brown"}}]}\n\n',
        ]
    async with relay_for(**dialect, retry_deadline=10, max_failovers=2, stall_timeout=0.3) as relay:
        relay.service.registry.upstreams[1].active += 1000  # the first answers first
        response, answer = await ask(relay, {**user("Tell me about the fox"), "max_tokens": 50})
        relay.service.registry.upstreams[1].active -= 1000
        stored = await stored_answer(relay, response)

    assert answer is not None
    assert answer.text == "The quick brown fox jumps."  # one answer, no seam, no error
    assert answer.errors == [] and answer.events[-1] == DONE
    assert answer.final["choices"][0]["finish_reason"] == "stop"
    continued = second.requests[-1].json
    assert continued["messages"][-2:] == [
        {"role": "assistant", "content": "The quick brown"},
        {"role": "user", "content": CONTINUE_INSTRUCTION},
    ]
    assert continued["messages"][0] == {"role": "user", "content": "Tell me about the fox"}
    assert continued["max_tokens"] < 50  # what is left of the budget for the answer
    assert stored["content"] == "The quick brown fox jumps."
    assert stored["status"] == "complete"
    assert stored["upstream"] in ("livepeer,livepeer-2", "a,b")
    if fault != "eof":  # the usage of both attempts is counted
        assert stored["completion_tokens"] == 3 + 2


async def test_when_every_attempt_fails_the_stream_ends_with_an_error(
    relay_for, fake: FakeUpstream, second: FakeUpstream
) -> None:
    fake.script = [livepeer_chunk("Half"), DROP]
    second.script = [livepeer_chunk(" more"), DROP]
    async with relay_for(**two(fake, second, max_failovers=1)) as relay:
        response, answer = await ask(relay)
        stored = await stored_answer(relay, response)
    assert answer is not None
    assert answer.text in ("Half more", " moreHalf")
    [error] = answer.errors
    assert error["code"] == "upstream_disconnect"
    assert answer.events[-1] == DONE
    assert stored["status"] == "error" and stored["content"] == answer.text


async def test_malformed_lines_among_good_ones_are_skipped(relay_for, fake: FakeUpstream) -> None:
    fake.script = [livepeer_chunk("good"), b"data: {not json\n\n", b"data: [1,2]\n\n",
                   *livepeer_events([" and fine"])]  # fmt: skip
    async with relay_for() as relay:
        _, answer = await ask(relay)
    assert answer is not None and answer.text == "good and fine" and answer.errors == []


async def test_breaker_opens_and_traffic_goes_elsewhere(
    relay_for, fake: FakeUpstream, second: FakeUpstream
) -> None:
    fake.fail(502, {"error": {"message": "Internal Server Error"}})
    second.script = livepeer_events(["ok"])
    async with relay_for(**two(fake, second, breaker_failures=2, breaker_cooldown=60)) as relay:
        for _ in range(40):  # the pick is random among equals: until the bad one failed twice
            _, answer = await ask(relay)
            assert answer is not None and answer.text == "ok"  # the user never noticed
            if len(fake.requests) == 2:
                break
        assert relay.service.registry.breakers["livepeer"].state == "open"
        for _ in range(6):
            _, answer = await ask(relay)
            assert answer is not None and answer.text == "ok"
        models = (await relay.client.get("/api/models")).json()["data"]
    assert len(fake.requests) == 2  # after two failures nobody is sent there any more
    assert all(m["status"] != "unavailable" for m in models)


async def test_model_status_and_readiness(relay_for, fake: FakeUpstream) -> None:
    gate = asyncio.Event()
    fake.script = [gate, *livepeer_events(["hi"])]

    def status_of(listing: dict) -> str:  # type: ignore[type-arg]
        return next(m["status"] for m in listing["data"] if m["id"] == MODEL)

    async with relay_for(breaker_failures=1, breaker_cooldown=60) as relay:
        assert status_of((await relay.client.get("/api/models")).json()) == "cold"
        assert (await relay.client.get("/readyz")).status_code == 200
        asking = asyncio.create_task(ask(relay))
        await wait_until(lambda: len(fake.requests) == 1)
        assert status_of((await relay.client.get("/api/models")).json()) == "warming"
        gate.set()
        await asking
        listing = (await relay.client.get("/api/models")).json()
        warm = next(m for m in listing["data"] if m["id"] == MODEL)
        assert warm["status"] == "warm" and warm["first_token_latency"] > 0

        fake.fail(502, {"error": {"message": "down"}})
        await ask(relay)  # one failure opens the breaker (threshold 1)
        assert status_of((await relay.client.get("/api/models")).json()) == "unavailable"
        ready = await relay.client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["upstreams"].startswith("none usable")
        refused = await relay.client.post("/api/chat", json=user("x"))
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "upstream_unavailable"
        assert int(refused.headers["retry-after"]) > 0


async def test_warm_models_get_a_one_token_request_at_start(relay_for, fake: FakeUpstream) -> None:
    fake.script = livepeer_events(["Hi"])
    async with relay_for(warm_models=[MODEL]) as relay:
        await wait_until(lambda: relay.service.registry.model_status(MODEL) == "warm")
        assert (await relay.client.get("/api/models")).json()["data"][0]["status"] == "warm"
    warming = fake.requests[0].json
    assert warming["max_tokens"] == 1 and warming["model"] == MODEL


async def test_a_warm_up_answered_with_an_error_event_leaves_the_model_cold(
    relay_for, fake: FakeUpstream
) -> None:
    fake.script = [b'data: {"error": {"message": "model failed to load"}}\n\n']
    async with relay_for(warm_models=[MODEL]) as relay:
        await wait_until(lambda: len(fake.requests) >= 1)
        await asyncio.sleep(0.2)
        assert relay.service.registry.model_status(MODEL) != "warm"
        listed = (await relay.client.get("/api/models")).json()["data"][0]
        assert listed["status"] != "warm" and listed["first_token_latency"] is None


async def test_health_check_half_opens_a_recovered_upstream(relay_for, fake: FakeUpstream) -> None:
    fake.fail(502, {"error": {"message": "down"}})
    async with relay_for(breaker_failures=1, breaker_cooldown=600, health_interval=0.1) as relay:
        await ask(relay)
        breaker = relay.service.registry.breakers["livepeer"]
        await wait_until(lambda: breaker.state == "half_open")
        fake.script = paced(livepeer_events(["back"]), 0.001)
        _, answer = await ask(relay)
        assert answer is not None and answer.text == "back"
        assert breaker.state == "closed"


def test_toml_config_declares_any_number_of_upstreams(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEY_FOR_B", "secret-b")
    config = tmp_path / "chatrelay.toml"
    config.write_text(
        """
default_max_tokens = 256

[[upstreams]]
name = "lp-a"
dialect = "livepeer"
base_url = "http://127.0.0.1:9001"
weight = 3

[[upstreams]]
name = "vllm-b"
dialect = "openai"
base_url = "http://127.0.0.1:9002/v1"
api_key_env = "KEY_FOR_B"
models = ["meta-llama/Meta-Llama-3.1-8B-Instruct", "local/other"]
"""
    )
    settings = Settings.load(config)
    assert settings.default_max_tokens == 256
    configs = {c.name: c for c in remote_upstream_configs(settings)}
    assert configs["lp-a"].weight == 3 and configs["lp-a"].dialect == "livepeer"
    assert MODEL in configs["lp-a"].models
    assert configs["vllm-b"].api_key == "secret-b"
    registry = UpstreamRegistry.from_settings(settings)
    assert [u.config.name for u in registry.serving(MODEL)] == ["lp-a", "vllm-b"]
    assert [u.config.name for u in registry.serving("local/other")] == ["vllm-b"]
    # Weighted least-busy: with 3 streams on lp-a and 1 on vllm-b, both are equally loaded.
    lp_a, vllm_b = registry.serving(MODEL)
    lp_a.active, vllm_b.active = 4, 1
    assert registry.pick(MODEL) is vllm_b
    lp_a.active = 2
    assert registry.pick(MODEL) is lp_a
