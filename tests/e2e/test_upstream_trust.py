"""An upstream is not trusted further than the request it was sent: max_tokens is enforced
on it, a chunk of any shape is read or skipped (never an internal error), its usage is not
believed past what can be, and its response head and event lines are bounded. Fake
upstreams on real sockets (a raw one for what aiohttp would not send), the real relay."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from chatrelay.answers import rich as rich_module
from chatrelay.answers.attempt import MAX_TOKEN_COUNT, MAX_TOKENS_SLACK
from chatrelay.upstreams.exchange import MAX_RESPONSE_HEAD
from tests.fake_upstream import (
    FakeUpstream,
    livepeer_chunk,
    openai_chunk,
    openai_events,
    vllm_chunk,
)
from tests.limits_helpers import ask, ledger, usage_of
from tests.polling import wait_until
from tests.sse_client import DONE, read_answer, user

QUESTION = "Count to three thousand."


def content_events(answer: Any) -> int:
    return sum(
        1
        for chunk in answer.chunks
        for choice in chunk.get("choices", ())
        if choice["delta"].get("content")
    )


async def stored_answer(relay, response) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    conversation = response.headers["x-conversation-id"]
    body = (await relay.client.get(f"/api/conversations/{conversation}")).json()
    message: dict[str, Any] = body["messages"][-1]
    return message


# --------------------------------------------------------------------------- max_tokens


@pytest.mark.parametrize("dialect", ["livepeer", "openai"])
async def test_an_upstream_that_ignores_max_tokens_is_cut_and_billed_no_more(
    relay_for, fake: FakeUpstream, dialect: str
) -> None:
    held = asyncio.Event()  # never set: what follows is the upstream still going
    words = [f" w{i}" for i in range(3000)]
    if dialect == "livepeer":  # usage in every chunk, counting on past max_tokens
        steps: list[Any] = [livepeer_chunk(w, completion_tokens=i + 1) for i, w in enumerate(words)]
    else:
        steps = [openai_chunk(w) for w in words]
    fake.script = [*steps[:200], held, *steps[200:]]
    async with relay_for(dialect, guest_token_budget=100_000) as relay:
        async with relay.client.stream("POST", "/api/chat", json=ask(QUESTION, 8)) as response:
            assert response.status_code == 200
            answer = await read_answer(response)
        # The upstream request was closed, not left to run on to the end.
        await wait_until(lambda: fake.disconnected_at is not None)
        await wait_until(lambda: not relay.service.answers)
        stored = await stored_answer(relay, response)
        [row] = await ledger(relay.context.db)
        report = await usage_of(relay.client)
    assert fake.requests[0].json["max_tokens"] == 8
    assert content_events(answer) == 8 + MAX_TOKENS_SLACK
    assert answer.errors == [] and answer.events[-1] == DONE
    assert answer.final["choices"][0]["finish_reason"] == "length"
    assert stored["content"] == answer.text and stored["finish_reason"] == "length"
    assert row.completion_tokens == 8  # billed no more than it allowed
    assert report["used"] == row.prompt_tokens + 8


async def test_an_upstream_that_keeps_to_max_tokens_is_not_cut(
    relay_for, fake: FakeUpstream
) -> None:
    # A role chunk, then max_tokens tokens and the slack's (a token split in two events, say).
    fake.script = openai_events([f" t{i}" for i in range(8 + MAX_TOKENS_SLACK)], usage=None)
    async with relay_for("openai") as relay:
        async with relay.client.stream("POST", "/api/chat", json=ask(QUESTION, 8)) as response:
            answer = await read_answer(response)
    assert content_events(answer) == 8 + MAX_TOKENS_SLACK and answer.errors == []
    assert answer.final["choices"][0]["finish_reason"] == "stop"


async def test_usage_past_belief_is_bounded(relay_for, fake: FakeUpstream) -> None:
    lies = [
        b'data: {"choices":[{"delta":{"content":"ok"},"finish_reason":"stop"}],'
        b'"usage":{"prompt_tokens":-100000,"completion_tokens":100005}}\n\n',
        b"data: [DONE]\n\n",
    ]
    huge = [
        b'data: {"choices":[{"delta":{"content":"ok"},"finish_reason":"stop"}],'
        b'"usage":{"prompt_tokens":1e30,"completion_tokens":900000000000}}\n\n',
        b"data: [DONE]\n\n",
    ]
    async with relay_for("openai", guest_token_budget=100_000) as relay:
        fake.script = lies
        async with relay.client.stream("POST", "/api/chat", json=ask(QUESTION, 8)) as response:
            await read_answer(response)
        await wait_until(lambda: not relay.service.answers)
        # A negative count would be a credit: it is none, and the completion is max_tokens.
        assert (await usage_of(relay.client))["used"] == 8
        fake.script = huge
        async with relay.client.stream("POST", "/api/chat", json=ask(QUESTION, 8)) as response:
            await read_answer(response)
        await wait_until(lambda: not relay.service.answers)
        stored = await stored_answer(relay, response)
        rows = await ledger(relay.context.db)
    assert [(r.prompt_tokens, r.completion_tokens) for r in rows] == [
        (0, 8),
        (MAX_TOKEN_COUNT, 8),
    ]
    assert (stored["prompt_tokens"], stored["completion_tokens"]) == (MAX_TOKEN_COUNT, 8)


# --------------------------------------------------------------------------- chunk shapes

# JSON that is not a chunk, each between good chunks (fewer than MAX_MALFORMED_EVENTS).
BAD_CHUNKS: list[Any] = [
    {"choices": "abc"},
    {"choices": 5},
    {"choices": True},
    {"choices": {"0": {"delta": {"content": "x"}}}},
    {"choices": [5]},
    {"choices": ["text"]},
    {"choices": [{"delta": [1, 2]}]},
    {"choices": [{"delta": "text"}]},
    {"choices": [{"delta": {"content": 5}}]},
    {"choices": [{"delta": {"content": ["x"], "reasoning_content": "r"}}]},
    {"choices": [{"delta": {"content": "x"}, "finish_reason": 7}]},
    {"choices": [{"delta": {"content": "x"}, "finish_reason": {"why": "stop"}}]},
    {"choices": [{"delta": {"tool_calls": "call it"}}]},
    {"choices": [{"delta": {"tool_calls": [5]}}]},
    {"choices": [{"delta": {"function_call": "f"}}]},
    {"choices": [], "usage": {"prompt_tokens": "many"}},
    {"choices": [], "usage": {"prompt_tokens": [1]}},
]


@pytest.mark.parametrize("dialect", ["livepeer", "openai"])
async def test_malformed_chunks_of_any_shape_are_skipped(
    relay_for, fake: FakeUpstream, dialect: str
) -> None:
    bad = [b"data: " + orjson.dumps(obj) + b"\n\n" for obj in BAD_CHUNKS]
    # A string usage is no usage: read, not skipped.
    fake.script = [
        openai_chunk("good"),
        *bad,
        b'data: {"choices":[],"usage":"lots"}\n\n',
        *openai_events([" and fine"], usage=(10, 0)),
    ]
    async with relay_for(dialect) as relay:
        async with relay.client.stream("POST", "/api/chat", json=user("x")) as response:
            answer = await read_answer(response)
        await wait_until(lambda: not relay.service.answers)
        stored = await stored_answer(relay, response)
    assert answer.errors == [] and answer.text == "good and fine"
    for chunk in answer.chunks:  # what was relayed is all of the right shape
        for choice in chunk["choices"]:
            assert isinstance(choice["delta"].get("content", ""), str | None)
    assert answer.final["choices"][0]["finish_reason"] == "stop"
    assert stored["status"] == "complete" and stored["content"] == "good and fine"


async def test_an_internal_error_is_told_without_its_text(
    relay_for, fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: Any, delta: Any) -> None:
        raise RuntimeError("secret-internal-detail at /srv/chatrelay")

    monkeypatch.setattr(rich_module.RichParts, "take", broken)  # a bug, wherever it may be
    call = {"index": 0, "id": "c1", "type": "function", "function": {"name": "f"}}
    fake.script = [vllm_chunk({"tool_calls": [call]}), *openai_events(["x"])]
    async with relay_for("openai", detailed_errors=True) as relay:
        async with relay.client.stream("POST", "/api/chat", json=user("x")) as response:
            answer = await read_answer(response)
        stored = await stored_answer(relay, response)
    [error] = answer.errors
    assert error["code"] == "internal_error"
    assert "secret" not in error["message"] and "/srv" not in error["message"]
    assert "secret" not in (stored.get("error") or "")


# --------------------------------------------------------------------------- sizes


async def test_an_event_line_that_never_ends_fails_the_upstream(
    relay_for, fake: FakeUpstream
) -> None:
    held = asyncio.Event()  # never set: the upstream is still sending its one line
    piece = b"x" * 65536
    fake.script = [openai_chunk("Hi"), b"data: " + piece, *[piece] * 40, held]  # 2.5 MiB
    async with relay_for("openai", detailed_errors=True) as relay:
        async with relay.client.stream("POST", "/api/chat", json=user("x")) as response:
            answer = await read_answer(response)
        await wait_until(lambda: fake.disconnected_at is not None)
    [error] = answer.errors
    assert error["code"] == "upstream_bad_event"
    assert "a line longer than 1 MiB" in error["message"]
    assert answer.text == "Hi"


class RawUpstream:
    """A server that answers every request with a head that goes on and on: a status line,
    then one header whose value never ends (``endless``), or thousands of headers."""

    def __init__(self, *, endless: bool) -> None:
        self.endless = endless
        self.sent = 0
        self.connections = 0
        self.closed = asyncio.Event()
        self.server: asyncio.Server | None = None
        self.url = ""

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nX-Junk: ")
            for _ in range(10_000):  # 640 MiB, if nobody stops it
                if self.endless:
                    piece = b"a" * 65536
                else:
                    piece = b"".join(b"\r\nX-%d: %s" % (i, b"b" * 50) for i in range(1000))
                writer.write(piece)
                await writer.drain()
                self.sent += len(piece)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.closed.set()
            writer.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture
async def raw_upstreams() -> AsyncIterator[list[RawUpstream]]:
    made: list[RawUpstream] = []
    yield made
    for upstream in made:
        await upstream.close()


@pytest.mark.parametrize("endless", [True, False], ids=["one_endless_header", "many_headers"])
async def test_a_response_head_past_its_bound_fails_over(
    relay_for, fake: FakeUpstream, raw_upstreams: list[RawUpstream], endless: bool
) -> None:
    raw = RawUpstream(endless=endless)
    raw_upstreams.append(raw)
    await raw.start()
    # Alone, it is an upstream failure the client is told of, the connection dropped.
    async with relay_for(
        "livepeer", livepeer_gateway_urls=[raw.url], detailed_errors=True
    ) as relay:
        response = await relay.client.post("/api/chat", json=user("x"))
        await asyncio.wait_for(raw.closed.wait(), 10)
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "upstream_bad_response"
    assert f"response headers larger than {MAX_RESPONSE_HEAD // 1024} KiB" in error["message"]
    # What the relay took in before it hung up is bounded (the kernel's buffers aside).
    assert raw.sent < 16 * 1024 * 1024
    # With another upstream of the model, the request fails over to it like any failure.
    fake.script = [livepeer_chunk("fine"), livepeer_chunk("", "stop")]
    settings = {
        "livepeer_gateway_urls": [raw.url, fake.base_url],
        "retry_deadline": 10,
        "max_failovers": 2,
    }
    async with relay_for(**settings) as relay:
        for _ in range(40):  # the pick is random among equals: until the raw one was asked
            async with relay.client.stream("POST", "/api/chat", json=user("x")) as response:
                assert response.status_code == 200
                answer = await read_answer(response)
            assert answer.text == "fine" and answer.errors == []
            if raw.connections >= 2:
                break
    assert raw.connections >= 2
