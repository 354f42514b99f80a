"""Livepeer answers are never silently cut: a gateway's clean end of body without a finish
chunk is a failure (continued elsewhere, or ended with an error and stored as such), a "stop"
at max_tokens is "length", top_k is carried, every stream has keep-alive comments, and a
configuration pointing nowhere answers 502 at once."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import httpx
import openai
import pytest

from chatrelay.sse import SSEDecoder
from tests.conftest import RunningRelay
from tests.e2e.test_openai_api import api_key, client_for
from tests.fake_upstream import (
    MODEL,
    FakeResponse,
    FakeUpstream,
    livepeer_chunk,
    livepeer_cut,
    livepeer_events,
    openai_events,
)
from tests.polling import wait_until
from tests.sse_client import DONE, StreamedAnswer, read_answer, user


async def chat(relay: RunningRelay, body: dict[str, Any]) -> tuple[httpx.Response, StreamedAnswer]:
    async with relay.client.stream("POST", "/api/chat", json=body) as response:
        assert response.status_code == 200, await response.aread()
        return response, await read_answer(response)


async def stored(relay: RunningRelay, response: httpx.Response) -> dict[str, Any]:
    conversation = response.headers["x-conversation-id"]
    listing = (await relay.client.get(f"/api/conversations/{conversation}")).json()
    message: dict[str, Any] = listing["messages"][-1]
    return message


# ------------------------------------------------------------------ a cut is not an ending


async def test_a_clean_cut_is_an_error_never_a_complete_answer(
    relay_for, fake: FakeUpstream
) -> None:
    fake.script = livepeer_cut(["[lp] Live", "peer", " hear"])
    async with relay_for() as relay:  # no failover allowed: nothing can continue it
        response, answer = await chat(relay, user("x"))
        message = await stored(relay, response)
    assert answer.text == "[lp] Livepeer hear"
    [error] = answer.errors
    assert error["code"] == "upstream_cut"
    assert "cut" in error["message"]
    assert answer.events[-1] == DONE
    assert all(c["choices"][0]["finish_reason"] is None for c in answer.chunks if c["choices"])
    assert message["status"] == "error"
    assert message["content"] == "[lp] Livepeer hear"
    assert message["completion_tokens"] == 3  # the cut attempt's usage is counted


async def test_a_cut_on_the_only_gateway_is_continued_there(relay_for, fake: FakeUpstream) -> None:
    # The network routes the retry to another orchestrator: the same gateway continues.
    fake.responses = [
        FakeResponse(script=livepeer_cut(["The quick", " brown"])),
        FakeResponse(script=livepeer_events([" fox."])),
    ]
    async with relay_for(max_failovers=2, retry_deadline=10) as relay:
        response, answer = await chat(relay, {**user("fox?"), "max_tokens": 50})
        message = await stored(relay, response)
    assert answer.text == "The quick brown fox."
    assert answer.errors == []
    assert answer.final["choices"][0]["finish_reason"] == "stop"
    assert len(fake.requests) == 2
    continued = fake.requests[1].json
    assert continued["messages"][-2]["content"] == "The quick brown"
    assert continued["max_tokens"] == 50 - 2
    assert message["status"] == "complete"
    assert message["content"] == "The quick brown fox."
    assert message["completion_tokens"] == 2 + 1  # both attempts


async def test_cut_after_every_failover_ends_with_the_cut(relay_for, fake: FakeUpstream) -> None:
    fake.script = livepeer_cut(["again"])
    async with relay_for(max_failovers=1, retry_deadline=10) as relay:
        response, answer = await chat(relay, user("x"))
        message = await stored(relay, response)
    assert [e["code"] for e in answer.errors] == ["upstream_cut"]
    assert answer.text == "againagain"
    assert message["status"] == "error" and message["content"] == "againagain"
    assert message["completion_tokens"] == 2
    assert len(fake.requests) == 2


async def test_the_old_format_done_is_an_ending(relay_for, fake: FakeUpstream) -> None:
    fake.script = [
        b'data: {"chunk":"Old"}\n\n',
        b'data: {"chunk":" times"}\n\n',
        b'data: {"chunk":"[DONE]","tokens_used":2,"done":true}\n\n',
    ]
    async with relay_for() as relay:
        response, answer = await chat(relay, user("x"))
        message = await stored(relay, response)
    assert answer.text == "Old times" and answer.errors == []
    assert message["status"] == "complete"


# ------------------------------------------------------------------ length, top_k


async def test_stop_at_max_tokens_is_length(relay_for, fake: FakeUpstream) -> None:
    fake.responses = [FakeResponse(tokens=["one", " two", " three", " four"])]
    async with relay_for() as relay:
        response, cut_short = await chat(relay, {**user("count"), "max_tokens": 3})
        short = await stored(relay, response)
        response, whole = await chat(relay, {**user("count"), "max_tokens": 10})
        full = await stored(relay, response)
        key, _ = await api_key(relay)
        async with client_for(relay, key) as client:
            completion = await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "count"}], max_tokens=2
            )
            stream = await client.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": "count"}],
                max_tokens=2,
                stream=True,
            )
            reasons = [c.choices[0].finish_reason async for c in stream if c.choices]
    assert cut_short.text == "one two three"
    assert cut_short.final["choices"][0]["finish_reason"] == "length"
    assert short["finish_reason"] == "length" and short["status"] == "complete"
    assert whole.text == "one two three four"
    assert whole.final["choices"][0]["finish_reason"] == "stop"
    assert full["finish_reason"] == "stop"
    assert completion.choices[0].finish_reason == "length"
    assert completion.choices[0].message.content == "one two"
    assert reasons[-1] == "length"


async def test_top_k_reaches_livepeer_and_openai_only_when_sent(
    relay_for, fake: FakeUpstream
) -> None:
    fake.script = livepeer_events(["ok"])
    async with relay_for() as relay:
        await chat(relay, {**user("x"), "top_k": 40})
        assert fake.requests[-1].json["top_k"] == 40
        await chat(relay, {**user("x"), "top_k": -1})
        assert fake.requests[-1].json["top_k"] == -1
        key, _ = await api_key(relay)
        async with client_for(relay, key) as client:
            await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "x"}], extra_body={"top_k": 5}
            )
            assert fake.requests[-1].json["top_k"] == 5
            for bad in (0, -2, 1.5, "3"):
                with pytest.raises(openai.BadRequestError) as refused:
                    await client.chat.completions.create(
                        model=MODEL,
                        messages=[{"role": "user", "content": "x"}],
                        extra_body={"top_k": bad},
                    )
                assert refused.value.status_code == 400
        for bad in (0, -5):
            response = await relay.client.post("/api/chat", json={**user("x"), "top_k": bad})
            assert response.status_code == 422
            assert "top_k" in response.text
    fake.script = openai_events(["ok"])
    async with relay_for("openai") as relay:
        await chat(relay, {**user("x"), "model": "gpt-test"})
        assert "top_k" not in fake.requests[-1].json
        await chat(relay, {**user("x"), "model": "gpt-test", "top_k": 8})
        assert fake.requests[-1].json["top_k"] == 8


# ------------------------------------------------------------------ keep-alive


async def raw_events(response: httpx.Response, into: list[str]) -> None:
    """Every SSE unit as the client receives it: ``:comment`` for comments, else the data."""
    decoder = SSEDecoder()
    buffer = b""
    async for data in response.aiter_raw():
        buffer += data
        *units, buffer = buffer.split(b"\n\n")
        for unit in units:
            if unit.startswith(b":"):
                into.append(unit.decode())
            else:
                for event in decoder.feed(unit + b"\n\n"):
                    into.append(event.data)


async def test_keep_alive_comments_while_a_cold_model_loads_and_between_tokens(
    relay_for, fake: FakeUpstream
) -> None:
    cold, between = asyncio.Event(), asyncio.Event()
    fake.responses = [
        FakeResponse(
            hold_headers=cold,
            script=[livepeer_chunk("Warm", completion_tokens=1), between,
                    *livepeer_events(["Warm", " now"])[1:]],
        )
    ]  # fmt: skip
    async with relay_for(keepalive_interval=0.1, stream_start_wait=0.05) as relay:
        received: list[str] = []
        async with relay.client.stream("POST", "/api/chat", json=user("x")) as response:
            reading = asyncio.create_task(raw_events(response, received))
            await wait_until(lambda: received.count(": keep-alive") >= 3)
            assert not any(e.startswith("{") and "Warm" in e for e in received)
            cold.set()
            await wait_until(lambda: any("Warm" in e for e in received))
            seen = received.count(": keep-alive")
            await wait_until(lambda: received.count(": keep-alive") >= seen + 3)
            between.set()
            await reading
    assert received[-1] == DONE
    # The stall timer (60 s here) and the first-token timer were not fooled by comments:
    # the answer is whole and ends normally.
    assert '"finish_reason":"stop"' in received[-2]
    text = "".join(e for e in received if e.startswith("{") and '"content":"' in e)
    assert "Warm" in text and " now" in text


async def test_keep_alive_does_not_reset_the_stall_timer(relay_for, fake: FakeUpstream) -> None:
    fake.script = [livepeer_chunk("Hello"), asyncio.Event()]  # then nothing, ever
    async with relay_for(keepalive_interval=0.05, stall_timeout=0.5) as relay:
        received: list[str] = []
        async with relay.client.stream("POST", "/api/chat", json=user("x")) as response:
            await raw_events(response, received)
    assert received.count(": keep-alive") >= 2
    assert received[-1] == DONE
    assert '"upstream_stall"' in received[-2]


async def test_sdk_and_reattach_streams_carry_keep_alives(relay_for, fake: FakeUpstream) -> None:
    gate = asyncio.Event()
    fake.script = [livepeer_chunk("Slow", completion_tokens=1), gate,
                   *livepeer_events(["Slow", " answer"])[1:]]  # fmt: skip
    async with relay_for(keepalive_interval=0.1, finished_job_ttl=30) as relay:
        key, _ = await api_key(relay)
        async with client_for(relay, key) as client:
            stream = await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "x"}], stream=True
            )
            message_id = stream.response.headers["x-message-id"]
            received: list[str] = []
            headers = {"Authorization": f"Bearer {key}"}
            async with relay.client.stream(
                "GET", f"/api/messages/{message_id}/stream", headers=headers
            ) as attached:
                reading = asyncio.create_task(raw_events(attached, received))
                await wait_until(lambda: received.count(": keep-alive") >= 2)
                gate.set()
                text = "".join(
                    [c.choices[0].delta.content or "" async for c in stream if c.choices]
                )
                await reading
    assert text == "Slow answer"  # the SDK skipped the comments it was sent
    assert received[-1] == DONE


# ------------------------------------------------------------------ a dead configuration


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.mark.parametrize("where", ["refused", "no_such_host"])
async def test_a_dead_gateway_url_answers_502_at_once(relay_for, where: str) -> None:
    url = {
        "refused": f"http://127.0.0.1:{closed_port()}",
        "no_such_host": "http://gateway.invalid",  # .invalid never resolves (RFC 6761)
    }[where]
    # Retries and the start wait are long: were the refusal retried like a busy gateway, the
    # answer would be a 200 stream with a late error event, not an HTTP 502.
    settings = {"retry_deadline": 60, "stream_start_wait": 30, "breaker_failures": 2}
    async with relay_for(livepeer_gateway_urls=[url], **settings) as relay:
        ready = await relay.client.get("/readyz")
        assert ready.status_code == 503
        assert "has answered" in ready.json()["checks"]["upstreams"]
        for _ in range(4):  # also once the breaker is open
            response = await relay.client.post("/api/chat", json=user("x"))
            assert response.status_code == 502, response.text
            error = response.json()["error"]
            assert error["code"] == "upstream_unreachable"
            assert url.split("//")[1] in error["message"]
            assert "LIVEPEER_GATEWAY_URL" in error["message"]
        key, _ = await api_key(relay)
        async with client_for(relay, key) as client:
            with pytest.raises(openai.APIStatusError) as refused:
                await client.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": "x"}], stream=True
                )
        assert refused.value.status_code == 502
        assert "LIVEPEER_GATEWAY_URL" in refused.value.message
        # The question was accepted, so it is kept (with the failed answer).
        listing = (await relay.client.get("/api/conversations")).json()["data"]
        assert len(listing) == 4


async def test_a_dead_gateway_beside_a_live_one_is_skipped(relay_for, fake: FakeUpstream) -> None:
    fake.script = livepeer_events(["alive"])
    urls = [f"http://127.0.0.1:{closed_port()}", fake.base_url]
    async with relay_for(livepeer_gateway_urls=urls, retry_deadline=10) as relay:
        for _ in range(3):
            _, answer = await chat(relay, user("x"))
            assert answer.text == "alive"
        assert (await relay.client.get("/readyz")).status_code == 200


async def test_readyz_waits_for_an_upstream_to_answer(relay_for, fake: FakeUpstream) -> None:
    fake.script = livepeer_events(["ok"])
    async with relay_for() as relay:
        ready = await relay.client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"]["upstreams"] == "ok"
