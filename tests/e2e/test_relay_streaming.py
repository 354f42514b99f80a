"""The relay end to end over real sockets: fake upstream ▶ chatrelay (uvicorn) ▶ HTTP client."""

from __future__ import annotations

import asyncio

from tests.fake_upstream import (
    DROP,
    MODEL,
    FakeUpstream,
    livepeer_chunk,
    livepeer_events,
    openai_events,
    paced,
    split_every,
)
from tests.sse_client import DONE, events_of, read_answer, user


async def test_livepeer_stream_becomes_openai_chunks(fake: FakeUpstream, relay_for) -> None:
    fake.script = livepeer_events(["Live", "peer", " says", " hi"])
    async with relay_for("livepeer", livepeer_api_key="lp-secret") as relay:
        async with relay.client.stream("POST", "/api/chat", json=user("hello")) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["cache-control"] == "no-cache"
            assert response.headers["x-accel-buffering"] == "no"
            message_id = response.headers["x-message-id"]
            answer = await read_answer(response)

    assert answer.text == "Livepeer says hi"
    assert answer.events[-1] == DONE
    assert all(c["object"] == "chat.completion.chunk" for c in answer.chunks)
    assert all(c["id"] == f"chatcmpl-{message_id}" for c in answer.chunks)
    assert answer.chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    # Livepeer's finish_reason "" must never leak: null until the last chunk.
    assert [c["choices"][0]["finish_reason"] for c in answer.chunks[:-1]] == [None] * 5
    assert answer.final["choices"][0]["finish_reason"] == "stop"
    assert answer.final["usage"] == {
        "prompt_tokens": 42,
        "completion_tokens": 4,
        "total_tokens": 46,
    }
    sent = fake.requests[-1]
    assert sent.path == "/llm"
    assert sent.json == {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": 512,
        "stream": True,
    }
    assert sent.headers["Authorization"] == "Bearer lp-secret"


async def test_openai_dialect_asks_for_usage_and_reads_done(fake: FakeUpstream, relay_for) -> None:
    fake.script = openai_events(["Hi", " there"], usage=(7, 0))
    async with relay_for("openai", openai_api_key="sk-test") as relay:
        body = {**user("hey"), "model": "gpt-test", "max_tokens": 20, "temperature": 0.5}
        async with relay.client.stream("POST", "/api/chat", json=body) as response:
            answer = await read_answer(response)
    assert answer.text == "Hi there"
    assert answer.final["choices"][0]["finish_reason"] == "stop"
    assert answer.final["usage"]["completion_tokens"] == 2
    sent = fake.requests[-1]
    assert sent.path == "/v1/chat/completions"
    assert sent.json["stream_options"] == {"include_usage": True}
    assert sent.json["max_tokens"] == 20 and sent.json["temperature"] == 0.5
    assert sent.headers["Authorization"] == "Bearer sk-test"


async def test_openai_base_url_ending_in_v1_is_not_doubled(fake: FakeUpstream, relay_for) -> None:
    fake.script = openai_events(["ok"])
    async with relay_for("openai", openai_base_url=fake.base_url + "/v1/") as relay:
        async with relay.client.stream("POST", "/api/chat", json=user("x")) as response:
            assert (await read_answer(response)).text == "ok"
    assert fake.requests[-1].path == "/v1/chat/completions"


async def test_events_split_across_tcp_writes(fake: FakeUpstream, relay_for) -> None:
    tokens = ["Ça", " va", " 🙂", " bien", "\n", "!"]
    fake.script = paced(split_every(livepeer_events(tokens), 7), 0.002)
    async with relay_for() as relay:
        async with relay.client.stream("POST", "/api/chat", json=user("x")) as response:
            answer = await read_answer(response)
    assert answer.text == "Ça va 🙂 bien\n!"
    assert answer.final["choices"][0]["finish_reason"] == "stop"


async def test_first_token_reaches_client_before_upstream_finishes(
    fake: FakeUpstream, relay_for
) -> None:
    gate = asyncio.Event()
    fake.script = [livepeer_chunk("first"), gate, *livepeer_events(["second"])]
    async with relay_for() as relay:
        async with relay.client.stream("POST", "/api/chat", json=user("x")) as response:
            events = events_of(response)
            seen = []
            async for event in events:
                seen.append(event)
                if event["choices"][0]["delta"].get("content"):
                    break
            assert seen[-1]["choices"][0]["delta"]["content"] == "first"
            assert fake.finished_at is None  # the upstream is still held at the gate
            gate.set()
            rest = [event async for event in events]
    assert rest[-1] == DONE
    assert fake.finished_at is not None


async def test_old_livepeer_chunk_format(fake: FakeUpstream, relay_for) -> None:
    fake.script = [
        b'data: {"chunk":"Old"}\n\n',
        b'data: {"chunk":" school"}\n\n',
        b'data: {"chunk":"[DONE]","tokens_used":2,"done":true}\n\n',
    ]
    async with relay_for() as relay:
        async with relay.client.stream("POST", "/api/chat", json=user("x")) as response:
            answer = await read_answer(response)
    assert answer.text == "Old school"
    assert answer.final["usage"]["completion_tokens"] == 2


async def test_keepalive_comments_are_ignored(fake: FakeUpstream, relay_for) -> None:
    fake.script = [b": keep-alive\n\n", *livepeer_events(["a"]), b": bye\n\n"]
    async with relay_for() as relay:
        async with relay.client.stream("POST", "/api/chat", json=user("x")) as response:
            assert (await read_answer(response)).text == "a"


async def test_error_event_after_200_ends_stream_with_error(fake: FakeUpstream, relay_for) -> None:
    fake.script = [livepeer_chunk("Half"), b'data: {"error":"CUDA out of memory"}\n\n']
    async with relay_for() as relay:
        async with relay.client.stream("POST", "/api/chat", json=user("x")) as response:
            assert response.status_code == 200
            answer = await read_answer(response)
    assert answer.text == "Half"
    assert answer.events[-1] == DONE
    [error] = answer.errors
    assert "CUDA out of memory" in error["message"]
    assert error["code"] == "upstream_stream_error"


async def test_connection_dropped_mid_answer_ends_with_error(fake: FakeUpstream, relay_for) -> None:
    fake.script = [livepeer_chunk("Part"), 0.05, DROP]
    async with relay_for() as relay:
        async with relay.client.stream("POST", "/api/chat", json=user("x")) as response:
            answer = await read_answer(response)
    assert answer.text == "Part"
    [error] = answer.errors
    assert error["code"] in ("upstream_disconnect", "upstream_cut")
    assert answer.events[-1] == DONE


async def test_stall_mid_answer_ends_with_error(fake: FakeUpstream, relay_for) -> None:
    never = asyncio.Event()
    fake.script = [livepeer_chunk("Hello"), b": still here\n\n", never]
    # The stall timer takes over from the first-token timer at the first token: were it
    # not so, nothing would end this answer before pytest-timeout.
    async with relay_for(stall_timeout=0.3, first_token_timeout=3600) as relay:
        async with relay.client.stream("POST", "/api/chat", json=user("x")) as response:
            answer = await read_answer(response)
    assert answer.text == "Hello"
    [error] = answer.errors
    assert error["code"] == "upstream_stall"
    assert "CHATRELAY_STALL_TIMEOUT" in error["message"]


async def test_first_token_timeout_ends_with_error(fake: FakeUpstream, relay_for) -> None:
    never = asyncio.Event()
    fake.script = [b": loading\n\n", never]
    async with relay_for(first_token_timeout=0.3) as relay:
        async with relay.client.stream("POST", "/api/chat", json=user("x")) as response:
            answer = await read_answer(response)
    [error] = answer.errors
    assert error["code"] == "upstream_first_token_timeout"
    assert "cold model" in error["message"]
