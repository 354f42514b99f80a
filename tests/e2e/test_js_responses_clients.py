"""The AI SDK's default OpenAI model on chatrelay's ``/v1/responses``: ``openai(model)`` from
``@ai-sdk/openai`` 3 (with ``ai`` 6, as pinned in tests/js/package-lock.json) speaks the
Responses API, not Chat Completions. tests/js/responses_clients.mjs runs it on this machine's
Node against a chatrelay on the OpenAI dialect with the fake upstream behind it: a tool round
trip, a plain stream, structured output, and a second turn that sends the first answer back
as an ``item_reference`` (the SDK's default, ``store`` being true).

Each test asserts what the client got and what reached the upstream, compared with what the
SDK sent: the script reports every request body it hands to fetch. The Node check, the
``node`` fixture and the script's JSON lines are those of tests/e2e/test_js_sdk_clients.py."""

from __future__ import annotations

import json
from typing import Any

from tests.conftest import RunningRelay
from tests.e2e import test_js_sdk_clients
from tests.e2e.test_js_sdk_clients import (
    CITY,
    CITY_SCHEMA,
    JS,
    WEATHER_CALL,
    WEATHER_RESULT,
    WEATHER_TEXT,
    ClientRun,
    answers,
    client_run,
    run_script,
)
from tests.e2e.test_openai_api import api_key
from tests.fake_upstream import FakeUpstream, openai_events

SCRIPT = JS / "responses_clients.mjs"

# The same fixture (Node 20 and tests/js/node_modules, or skip; never under CI), bound by
# assignment rather than imported, so the tests' parameter of that name is not a redefinition.
node = test_js_sdk_clients.node


async def run_client(node: str, relay: RunningRelay, key: str, scenario: str) -> ClientRun:
    """Run one scenario of the script with this API key; what it reported."""
    events = await run_script(node, relay, key, scenario, SCRIPT)
    # The default model: every request went to the Responses endpoint.
    urls = {e["url"] for e in events if e["event"] == "request"}
    assert urls == {f"{relay.url}/v1/responses"}
    return client_run(events)


def user_text(text: str) -> dict[str, Any]:
    """A user message as the SDK writes it on the Responses input, and as chatrelay hands it
    to a chat upstream."""
    return {"role": "user", "content": [{"type": "text", "text": text}]}


async def test_generate_text_with_a_tool_round_trip(
    node: str, relay_for, fake: FakeUpstream
) -> None:
    answers(fake, WEATHER_CALL, WEATHER_TEXT)
    async with relay_for("openai") as relay:
        key, _ = await api_key(relay)
        run = await run_client(node, relay, key, "generate-tools")
    result = run.result
    assert result["text"] == "It is 22°C in Paris."
    assert result["finishReason"] == "stop"
    assert result["executed"] == [{"city": "Paris"}]  # the tool ran once, with these arguments
    first, second = result["steps"]
    assert first["finishReason"] == "tool-calls"
    assert first["toolCalls"] == [
        {"toolCallId": "call_w1", "toolName": "get_weather", "input": {"city": "Paris"}}
    ]
    assert first["toolResults"] == [
        {"toolCallId": "call_w1", "toolName": "get_weather", "output": WEATHER_RESULT}
    ]
    assert second["text"] == "It is 22°C in Paris."
    assert run.warnings == []

    # The SDK sent the flat Responses tool; the upstream got it in the chat form.
    assert len(fake.requests) == len(run.sent) == 2
    [tool] = run.sent[0]["tools"]
    assert tool["type"] == "function" and tool["name"] == "get_weather"
    assert fake.requests[0].json["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": tool["description"],
                "parameters": tool["parameters"],
            },
        }
    ]
    assert fake.requests[0].json["tool_choice"] == run.sent[0]["tool_choice"] == "auto"
    # Then the call and its output, sent back as Responses items, reached the upstream as an
    # assistant message with tool_calls and a tool message with the result.
    arguments = json.dumps({"city": "Paris"}, separators=(",", ":"))
    output = json.dumps(WEATHER_RESULT, separators=(",", ":"))
    assert run.sent[1]["input"][1:] == [
        {
            "type": "function_call",
            "call_id": "call_w1",
            "name": "get_weather",
            "arguments": arguments,
        },
        {"type": "function_call_output", "call_id": "call_w1", "output": output},
    ]
    assert fake.requests[1].json["messages"] == [
        user_text("What is the weather in Paris?"),
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_w1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_w1", "content": output},
    ]


async def test_stream_text(node: str, relay_for, fake: FakeUpstream) -> None:
    answers(fake, openai_events(["Hel", "lo", " there"], usage=(10, 0)))
    async with relay_for("openai") as relay:
        key, _ = await api_key(relay)
        run = await run_client(node, relay, key, "stream-text")
    result = run.result
    parts = result["parts"]
    assert [p["text"] for p in parts if p["type"] == "text-delta"] == ["Hel", "lo", " there"]
    assert result["text"] == "Hello there"
    assert result["errors"] == []
    assert [p["type"] for p in parts] == [
        "start",
        "start-step",
        "text-start",
        "text-delta",
        "text-delta",
        "text-delta",
        "text-end",
        "finish-step",
        "finish",
    ]
    assert parts[-1] == {"type": "finish", "finishReason": "stop"}
    assert result["finishReason"] == "stop"
    # The fake reported 10 prompt tokens, and one completion token per delta.
    assert result["usage"] == {"inputTokens": 10, "outputTokens": 3}
    assert run.warnings == []
    [sent] = run.sent
    assert sent["stream"] is True
    assert fake.requests[0].json["messages"] == [user_text("Say hello.")]


async def test_generate_object(node: str, relay_for, fake: FakeUpstream) -> None:
    text = json.dumps(CITY)
    answers(fake, openai_events([text[:20], text[20:45], text[45:]]))
    async with relay_for("openai") as relay:
        key, _ = await api_key(relay)
        run = await run_client(node, relay, key, "generate-object")
    assert run.result["object"] == CITY
    assert run.result["finishReason"] == "stop"
    assert run.warnings == []
    # The SDK put the schema in text.format; the upstream got it as a json_schema format.
    [sent] = run.sent
    assert sent["text"]["format"] == {
        "type": "json_schema",
        "strict": True,
        "name": "city",
        "schema": CITY_SCHEMA,
    }
    assert fake.requests[0].json["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "city", "schema": CITY_SCHEMA, "strict": True},
    }


async def test_a_second_turn_resolves_the_item_reference(
    node: str, relay_for, fake: FakeUpstream
) -> None:
    answers(fake, openai_events(["Paris"]), openai_events(["2.1 million"]))
    async with relay_for("openai") as relay:
        key, _ = await api_key(relay)
        run = await run_client(node, relay, key, "multi-turn")
        stored = await relay.client.get(
            f"/v1/responses/{run.result['first']['responseId']}",
            headers={"Authorization": f"Bearer {key}"},
        )
    first, second = run.result["first"], run.result["second"]
    assert first["text"] == "Paris"
    assert second == {"text": "2.1 million", "finishReason": "stop"}
    assert run.warnings == []
    # The SDK kept the answer's item id, and sent the answer back as a reference to it
    # (store is not set, so the SDK takes it as true and sends no `store` key).
    [message] = first["responseMessages"]
    [part] = message["content"]
    item_id = part["providerOptions"]["openai"]["itemId"]
    assert stored.json()["output"][0]["id"] == item_id
    assert len(run.sent) == len(fake.requests) == 2
    assert "store" not in run.sent[1]
    assert run.sent[1]["input"][1] == {"type": "item_reference", "id": item_id}
    # chatrelay looked the item up: the upstream saw the assistant's text in the history.
    assert fake.requests[1].json["messages"] == [
        user_text("Capital of France?"),
        {"role": "assistant", "content": "Paris"},
        user_text("Its population?"),
    ]
