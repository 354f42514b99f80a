"""The Responses API (``/v1/responses``) driven by the official ``openai`` package, over the
fake upstream: streamed and whole, tools round trip, structured output, stored responses
(retrieve, input items, continue, cancel, delete, ``store: false``), the owner check, the
events on the wire in order, a failure mid-stream, and what a Livepeer upstream cannot carry
refused by name."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import RunningRelay
from tests.e2e.test_openai_api import api_key, client_for
from tests.fake_upstream import (
    DROP,
    MODEL,
    FakeResponse,
    FakeUpstream,
    livepeer_chunk,
    livepeer_events,
    openai_chunk,
    openai_events,
    vllm_chunk,
    vllm_tool_call_events,
)
from tests.polling import wait_until_async

GPT = "gpt-test"
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}
TWO_CALLS = [
    ("call_a1", "get_weather", ['{"ci', 'ty": "Par', 'is"}']),
    ("call_b2", "get_weather", ['{"city": ', '"Oslo"}']),
]


def sse_events(body: bytes) -> list[tuple[str, dict[str, Any]]]:
    """The (event, data) pairs of a Responses stream, as they came."""
    out = []
    for unit in body.split(b"\n\n"):
        lines = dict(
            line.split(b": ", 1) for line in unit.split(b"\n") if line and not line.startswith(b":")
        )
        if b"data" in lines:
            out.append((lines[b"event"].decode(), json.loads(lines[b"data"])))
    return out


async def post_raw(relay: RunningRelay, key: str, body: dict[str, Any]) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"}
    return await relay.client.post("/v1/responses", json=body, headers=headers)


async def test_a_whole_response_is_stored_and_read_back(relay_for, fake: FakeUpstream) -> None:
    fake.script = openai_events(["Hello", " there"])
    async with relay_for("openai") as relay:
        key, _ = await api_key(relay)
        async with client_for(relay, key) as client:
            response = await client.responses.create(
                model=GPT,
                instructions="Be brief.",
                input="Say hello",
                max_output_tokens=50,
                temperature=0.5,
                metadata={"ticket": "42"},
            )
            assert response.status == "completed"
            assert response.output_text == "Hello there"
            assert response.usage is not None
            assert (response.usage.input_tokens, response.usage.output_tokens) == (10, 2)
            assert response.metadata == {"ticket": "42"}
            assert response.instructions == "Be brief."
            again = await client.responses.retrieve(response.id)
            assert again.output_text == "Hello there" and again.status == "completed"
            assert again.output[0].id == response.output[0].id
            assert again.metadata == {"ticket": "42"} and again.max_output_tokens == 50
            items = await client.responses.input_items.list(response.id)
            assert [item.type for item in items.data] == ["message"]
            assert items.data[0].content[0].text == "Say hello"  # type: ignore[union-attr]
            # The page lists the conversation like any other.
            conversations = await relay.client.get(
                "/api/conversations", headers={"Authorization": f"Bearer {key}"}
            )
    sent = fake.requests[-1].json
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say hello"},
    ]
    assert sent["max_tokens"] == 50 and sent["temperature"] == 0.5
    assert conversations.status_code == 200, conversations.text
    titles = [c["title"] for c in conversations.json()["data"]]
    assert titles == ["Say hello"]


async def test_the_stream_is_openais_events_in_order(relay_for, fake: FakeUpstream) -> None:
    fake.script = openai_events(["Hel", "lo"])
    async with relay_for("openai") as relay:
        key, _ = await api_key(relay)
        response = await post_raw(relay, key, {"model": GPT, "input": "hi", "stream": True})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.content)
    assert [kind for kind, _ in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    assert all(kind == data["type"] for kind, data in events)
    assert b"[DONE]" not in response.content
    done = events[-1][1]["response"]
    assert done["status"] == "completed"
    assert done["output"][0]["content"][0]["text"] == "Hello"
    assert done["usage"]["output_tokens"] == 2 and done["usage"]["total_tokens"] == 12


async def test_a_function_tool_round_trip_streamed(relay_for, fake: FakeUpstream) -> None:
    """Two parallel calls split over many deltas, their outputs sent back, the final text."""
    fake.responses = [
        FakeResponse(script=vllm_tool_call_events(TWO_CALLS)),
        FakeResponse(script=openai_events(["Sunny", " in both"])),
    ]
    async with relay_for("openai") as relay:
        key, _ = await api_key(relay)
        async with client_for(relay, key) as client:
            async with client.responses.stream(
                model=GPT, input="Weather in Paris and Oslo?", tools=[WEATHER]
            ) as stream:
                arguments = [
                    event.delta
                    async for event in stream
                    if event.type == "response.function_call_arguments.delta"
                ]
                first = await stream.get_final_response()
            calls = [item for item in first.output if item.type == "function_call"]
            assert [(c.call_id, c.name, c.arguments) for c in calls] == [
                ("call_a1", "get_weather", '{"city": "Paris"}'),
                ("call_b2", "get_weather", '{"city": "Oslo"}'),
            ]
            assert "".join(arguments) == '{"city": "Paris"}{"city": "Oslo"}'
            outputs = [
                {"type": "function_call_output", "call_id": c.call_id, "output": "22C"}
                for c in calls
            ]
            second = await client.responses.create(
                model=GPT, previous_response_id=first.id, input=outputs, tools=[WEATHER]
            )
    assert second.output_text == "Sunny in both"
    assert fake.requests[0].json["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "The weather in a city",
                "parameters": WEATHER["parameters"],
                "strict": True,
            },
        }
    ]
    history = fake.requests[1].json["messages"]
    assert history[0] == {"role": "user", "content": "Weather in Paris and Oslo?"}
    assert history[1]["role"] == "assistant"
    assert [c["id"] for c in history[1]["tool_calls"]] == ["call_a1", "call_b2"]
    assert history[1]["tool_calls"][0]["function"]["arguments"] == '{"city": "Paris"}'
    assert history[2:] == [
        {"role": "tool", "tool_call_id": "call_a1", "content": "22C"},
        {"role": "tool", "tool_call_id": "call_b2", "content": "22C"},
    ]


async def test_structured_output_and_reasoning(relay_for, fake: FakeUpstream) -> None:
    fake.script = [
        vllm_chunk({"role": "assistant", "content": ""}),
        vllm_chunk({"reasoning_content": "The user wants "}),
        vllm_chunk({"reasoning_content": "a city."}),
        vllm_chunk({"content": '{"city": '}),
        vllm_chunk({"content": '"Paris"}'}),
        vllm_chunk({}, "stop"),
        b"data: [DONE]\n\n",
    ]
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    }
    async with relay_for("openai") as relay:
        key, _ = await api_key(relay)
        async with client_for(relay, key) as client:
            response = await client.responses.create(
                model=GPT,
                input="A city?",
                text={"format": {"type": "json_schema", "name": "city", "schema": schema}},
                reasoning={"effort": "low"},
            )
    assert json.loads(response.output_text) == {"city": "Paris"}
    reasoning = [item for item in response.output if item.type == "reasoning"]
    assert [s.text for s in reasoning[0].summary] == ["The user wants a city."]
    sent = fake.requests[-1].json
    assert sent["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "city", "schema": schema},
    }
    assert sent["reasoning_effort"] == "low"


async def test_store_false_keeps_nothing_but_the_ledger(relay_for, fake: FakeUpstream) -> None:
    fake.script = openai_events(["private"])
    async with relay_for("openai") as relay:
        key, _ = await api_key(relay)
        async with client_for(relay, key) as client:
            response = await client.responses.create(model=GPT, input="secret", store=False)
            assert response.output_text == "private" and response.store is False

            async def gone() -> bool:
                try:
                    await client.responses.retrieve(response.id)
                except openai.NotFoundError:
                    return True
                return False

            assert await gone()  # never stored as a response

            async def no_conversation() -> bool:
                listed = await relay.client.get(
                    "/api/conversations", headers={"Authorization": f"Bearer {key}"}
                )
                return listed.json()["data"] == []

            # Its turn is kept while it generates, then deleted once it is billed.
            await wait_until_async(no_conversation)
            usage = await relay.client.get("/api/usage", headers={"Authorization": f"Bearer {key}"})
    assert usage.status_code == 200
    assert usage.json()["used"] > 0  # billed all the same


async def test_another_owners_response_is_absent(relay_for, fake: FakeUpstream) -> None:
    fake.script = openai_events(["mine"])
    async with relay_for("openai") as relay:
        key, _ = await api_key(relay, "owner")
        other, _ = await api_key(relay, "other")
        async with client_for(relay, key) as client, client_for(relay, other) as intruder:
            response = await client.responses.create(model=GPT, input="hi")
            for call in (
                intruder.responses.retrieve(response.id),
                intruder.responses.delete(response.id),
                intruder.responses.cancel(response.id),
                intruder.responses.input_items.list(response.id),
            ):
                with pytest.raises(openai.NotFoundError) as absent:
                    await call
                assert absent.value.code == "response_not_found"
            with pytest.raises(openai.BadRequestError) as refused:
                await intruder.responses.create(
                    model=GPT, input="and?", previous_response_id=response.id
                )
            assert refused.value.code == "previous_response_not_found"
            for impossible in ("resp_doesnotexist", "resp_nul\x00id"):
                with pytest.raises(openai.NotFoundError):
                    await intruder.responses.retrieve(impossible)
            assert (await client.responses.retrieve(response.id)).output_text == "mine"


async def test_continue_branch_and_delete(relay_for, fake: FakeUpstream) -> None:
    fake.responses = [
        FakeResponse(script=openai_events(["Paris"])),
        FakeResponse(script=openai_events(["2.1 million"])),
        FakeResponse(script=openai_events(["Berlin"])),
    ]
    async with relay_for("openai") as relay:
        key, _ = await api_key(relay)
        auth = {"Authorization": f"Bearer {key}"}
        async with client_for(relay, key) as client:
            first = await client.responses.create(
                model=GPT, instructions="Answer in one word.", input="Capital of France?"
            )
            second = await client.responses.create(
                model=GPT, previous_response_id=first.id, input="Its population?"
            )
            assert second.previous_response_id == first.id
            one = (await relay.client.get("/api/conversations", headers=auth)).json()
            # A second continuation of the first response branches off in a new conversation.
            branch = await client.responses.create(
                model=GPT, previous_response_id=first.id, input="And Germany's capital?"
            )
            two = (await relay.client.get("/api/conversations", headers=auth)).json()
            deleted = await relay.client.delete(f"/v1/responses/{second.id}", headers=auth)
            with pytest.raises(openai.NotFoundError):
                await client.responses.retrieve(second.id)
            assert (await client.responses.retrieve(branch.id)).output_text == "Berlin"
            conversation = one["data"][0]["id"]
            left = await relay.client.get(f"/api/conversations/{conversation}", headers=auth)
    assert len(one["data"]) == 1 and len(two["data"]) == 2
    assert deleted.json() == {"id": second.id, "object": "response", "deleted": True}
    # The instructions go with their own request only.
    assert fake.requests[1].json["messages"] == [
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris"},
        {"role": "user", "content": "Its population?"},
    ]
    assert fake.requests[2].json["messages"] == [
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris"},
        {"role": "user", "content": "And Germany's capital?"},
    ]
    assert [m["content"] for m in left.json()["messages"]] == ["Capital of France?", "Paris"]


async def test_cancel_stops_a_response_that_is_generating(relay_for, fake: FakeUpstream) -> None:
    gate = asyncio.Event()
    fake.script = [*openai_events(["so", " far"])[:3], gate, *openai_events(["never"])[1:]]
    async with relay_for("openai", stall_timeout=60, first_token_timeout=60) as relay:
        key, _ = await api_key(relay)
        async with client_for(relay, key) as client:
            stream = await client.responses.create(model=GPT, input="go", stream=True)
            response_id = ""
            async for event in stream:
                if event.type == "response.created":
                    response_id = event.response.id
                if event.type == "response.output_text.delta" and event.delta == " far":
                    # From another connection, as a second process of the client would.
                    cancelled = await client.responses.cancel(response_id)
                    break
            gate.set()
    assert cancelled.status == "cancelled"
    assert cancelled.output_text == "so far"


async def test_a_failure_mid_stream_ends_with_response_failed(
    relay_for, fake: FakeUpstream
) -> None:
    fake.script = [*openai_events(["half"])[:2], DROP]
    async with relay_for("openai") as relay:
        key, _ = await api_key(relay)
        response = await post_raw(relay, key, {"model": GPT, "input": "hi", "stream": True})
        async with client_for(relay, key) as client:
            stream = await client.responses.create(model=GPT, input="hi", stream=True)
            with pytest.raises(openai.APIError):
                async for _ in stream:
                    pass
    events = sse_events(response.content)
    kinds = [kind for kind, _ in events]
    assert kinds[-2:] == ["error", "response.failed"]
    failed = events[-1][1]["response"]
    assert failed["status"] == "failed" and failed["error"]["message"]
    assert failed["output"][0]["content"][0]["text"] == "half"


async def test_what_cannot_be_honoured_is_refused_by_name(relay_for, fake: FakeUpstream) -> None:
    fake.script = livepeer_events(["ok"])
    image = {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo="}
    cases: list[tuple[dict[str, Any], str]] = [
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"tools": [WEATHER]}, "tools"),
        ({"text": {"format": {"type": "json_object"}}}, "text.format"),
        ({"background": True}, "background"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_text", "text": "x"}, image]}]},
            "input",
        ),
    ]
    async with relay_for() as relay:
        key, _ = await api_key(relay)
        async with client_for(relay, key) as client:
            for extra, param in cases:
                body = {"model": MODEL, "input": "x", **extra}
                with pytest.raises(openai.BadRequestError) as refused:
                    await client.responses.create(**body)
                assert refused.value.code == "unsupported_parameter", param
                assert refused.value.param == param
            plain = await client.responses.create(model=MODEL, input="hi", max_output_tokens=8)
    assert plain.output_text == "ok"
    assert len(fake.requests) == 1
    assert fake.requests[0].json["messages"] == [{"role": "user", "content": "hi"}]
    assert fake.requests[0].json["max_tokens"] == 8


async def test_a_cut_answer_is_incomplete(relay_for, fake: FakeUpstream) -> None:
    fake.script = [vllm_chunk({"role": "assistant", "content": ""}), openai_chunk("a b"),
                   openai_chunk(None, "length"), b"data: [DONE]\n\n"]  # fmt: skip
    async with relay_for("openai") as relay:
        key, _ = await api_key(relay)
        async with client_for(relay, key) as client:
            response = await client.responses.create(model=GPT, input="x", max_output_tokens=2)
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"


@pytest.fixture
async def second() -> AsyncIterator[FakeUpstream]:
    upstream = FakeUpstream()
    await upstream.start()
    yield upstream
    await upstream.close()


async def test_a_livepeer_cut_mid_answer_fails_over_within_the_response(
    relay_for, fake: FakeUpstream, second: FakeUpstream
) -> None:
    """A Livepeer gateway that ends the body early (its silent cut) is continued on the other
    gateway: the client reads one whole response, no seam, no error."""
    fake.script = [livepeer_chunk("The quick", completion_tokens=2),
                   livepeer_chunk(" brown", completion_tokens=3)]  # fmt: skip
    second.script = livepeer_events([" fox", " jumps."])
    urls = [fake.base_url, second.base_url]
    async with relay_for(livepeer_gateway_urls=urls, retry_deadline=10, max_failovers=2) as relay:
        relay.service.registry.upstreams[1].active += 1000  # the first answers first
        key, _ = await api_key(relay)
        async with client_for(relay, key) as client:
            async with client.responses.stream(
                model=MODEL, input="Tell me about the fox", max_output_tokens=50
            ) as stream:
                deltas = [
                    event.delta
                    async for event in stream
                    if event.type == "response.output_text.delta"
                ]
                final = await stream.get_final_response()
            stored = await client.responses.retrieve(final.id)
    assert "".join(deltas) == "The quick brown fox jumps."
    assert final.status == "completed" and final.output_text == "The quick brown fox jumps."
    assert stored.output_text == final.output_text and stored.status == "completed"
    assert second.requests[-1].json["max_tokens"] < 50  # what is left of the answer's budget


async def test_the_budget_holds_on_responses_too(relay_for, fake: FakeUpstream) -> None:
    fake.script = openai_events(["ok"])
    async with relay_for("openai", user_token_budget=40) as relay:
        key, _ = await api_key(relay)
        async with client_for(relay, key) as client:
            with pytest.raises(openai.RateLimitError) as refused:
                await client.responses.create(model=GPT, input="hi", max_output_tokens=500)
    assert refused.value.status_code == 429
    assert refused.value.response.headers.get("retry-after")
    assert fake.requests == []  # refused before anything was sent or stored


async def test_item_references_resolve_and_are_bounded(relay_for, fake: FakeUpstream) -> None:
    fake.script = openai_events(["Paris"])
    async with relay_for("openai") as relay:
        key, _ = await api_key(relay)
        async with client_for(relay, key) as client:
            first = await client.responses.create(model=GPT, input="Capital of France?")
            message = first.output[0].id
            await client.responses.create(
                model=GPT,
                input=[
                    {"role": "user", "content": "Capital of France?"},
                    {"type": "item_reference", "id": message},
                    {"role": "user", "content": "Sure?"},
                ],
            )
            with pytest.raises(openai.NotFoundError) as unknown:
                await client.responses.create(
                    model=GPT, input=[{"type": "item_reference", "id": message + "9"}]
                )
            many = [{"type": "item_reference", "id": f"msg_r{n}_0"} for n in range(65)]
            with pytest.raises(openai.BadRequestError) as bounded:
                await client.responses.create(model=GPT, input=many)
    assert fake.requests[-1].json["messages"] == [
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris"},
        {"role": "user", "content": "Sure?"},
    ]
    assert unknown.value.code == "item_not_found"
    assert bounded.value.code == "too_many_item_references"
