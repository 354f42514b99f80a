"""The JavaScript clients people put in front of an OpenAI-compatible server, on chatrelay's
``/v1`` (issue 20, items 7 and 10): the AI SDK (``ai`` 6 with ``@ai-sdk/openai`` 3, its Chat
Completions model) and the ``openai`` package, as pinned in tests/js/package-lock.json, run
on this machine's Node by tests/js/sdk_clients.mjs against a chatrelay on the OpenAI dialect
with the fake upstream behind it.

Each test asserts what the client got (its text, its tool calls and what its tools were
called with, its parsed object, the error it raised) and what reached the upstream, compared
with what the SDK sent: the script reports every request body it hands to fetch."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RunningRelay
from tests.e2e.test_openai_api import api_key
from tests.fake_upstream import (
    DROP,
    FakeResponse,
    FakeUpstream,
    Step,
    openai_events,
    vllm_tool_call_events,
)

JS = Path(__file__).parent.parent / "js"
SCRIPT = JS / "sdk_clients.mjs"
PACKAGES = ("ai", "@ai-sdk/openai", "openai", "zod")
MODEL = "gpt-test"


def skip_or_fail(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI must run the JavaScript SDK tests")
    pytest.skip(reason)


@pytest.fixture
def node() -> str:
    """Node 20 or later with tests/js/node_modules (``npm ci`` in tests/js): without them
    these tests skip, except under CI, where they must run."""
    path = shutil.which("node")
    version = subprocess.run([path, "--version"], capture_output=True, text=True) if path else None
    if path is None or version is None or int(version.stdout.strip("v\n").split(".")[0]) < 20:
        skip_or_fail("Node.js 20 or later is not installed")
    assert path is not None
    for package in PACKAGES:
        if not (JS / "node_modules" / package / "package.json").exists():
            skip_or_fail(f"{JS / 'node_modules' / package} is missing: run 'npm ci' in tests/js")
    return path


@dataclass
class ClientRun:
    sent: list[dict[str, Any]]  # each request body, as the SDK handed it to fetch
    result: dict[str, Any]  # what the client got
    warnings: list[dict[str, Any]]  # the AI SDK's warnings


async def run_client(node: str, relay: RunningRelay, scenario: str) -> ClientRun:
    key, _ = await api_key(relay)
    return client_run(await run_script(node, relay, key, scenario))


async def run_script(
    node: str, relay: RunningRelay, key: str, scenario: str, script: Path = SCRIPT
) -> list[dict[str, Any]]:
    """Run one scenario of a script in tests/js against the relay with this key: the events
    it reported (each request body, warnings, the result last)."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "SDK_SCENARIO": scenario,
        "RELAY_BASE_URL": f"{relay.url}/v1",
        "RELAY_API_KEY": key,
        "RELAY_MODEL": MODEL,
    }
    process = await asyncio.create_subprocess_exec(
        node, str(script), env=env, stdout=asyncio.subprocess.PIPE, cwd=JS
    )
    try:
        async with asyncio.timeout(60):
            stdout, _ = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    events = [json.loads(line) for line in stdout.splitlines()]
    assert events and events[-1]["event"] == "result", events
    assert process.returncode == 0
    return events


def client_run(events: list[dict[str, Any]]) -> ClientRun:
    return ClientRun(
        sent=[e["body"] for e in events if e["event"] == "request"],
        result=events[-1],
        warnings=[e for e in events if e["event"] == "warnings"],
    )


def answers(fake: FakeUpstream, *scripts: list[Step]) -> None:
    fake.responses = [FakeResponse(script=script) for script in scripts]


# The fake's answers: a tool call streamed as vLLM streams it, then the text after it.

WEATHER_CALL = vllm_tool_call_events([("call_w1", "get_weather", ['{"ci', 'ty": "Pa', 'ris"}'])])
WEATHER_TEXT = openai_events(["It is 22°C", " in Paris."])
PARALLEL_CALLS = vllm_tool_call_events(
    [
        ("call_w1", "get_weather", ['{"ci', 'ty": "Paris"}']),
        ("call_t2", "get_time", ['{"timezone"', ': "Asia/Tokyo"}']),
    ]
)

# The tool as the AI SDK sends it (its zod schema as JSON Schema).
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city now",
        "parameters": {
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
WEATHER_RESULT = {"city": "Paris", "temperature": 22, "unit": "C"}


@pytest.mark.parametrize("scenario", ["ai-generate-tools", "ai-stream-tools"])
async def test_ai_sdk_tool_round_trip(
    node: str, relay_for, fake: FakeUpstream, scenario: str
) -> None:
    answers(fake, WEATHER_CALL, WEATHER_TEXT)
    async with relay_for("openai") as relay:
        run = await run_client(node, relay, scenario)
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
    if scenario == "ai-stream-tools":
        parts = result["parts"]
        assert result["errors"] == []
        assert [p["type"] for p in parts if p["type"] in ("tool-call", "finish")] == [
            "tool-call",
            "finish",
        ]
        arguments = "".join(p["delta"] for p in parts if p["type"] == "tool-input-delta")
        assert arguments == '{"city": "Paris"}'
        texts = [p["text"] for p in parts if p["type"] == "text-delta"]
        assert "".join(texts) == "It is 22°C in Paris."

    # The upstream got the tools and the choice as the SDK sent them...
    assert len(fake.requests) == len(run.sent) == 2
    asked = fake.requests[0].json
    assert run.sent[0]["tools"] == [WEATHER_TOOL]
    assert run.sent[0]["tool_choice"] == "auto"
    assert asked["tools"] == run.sent[0]["tools"]
    assert asked["tool_choice"] == run.sent[0]["tool_choice"]
    # ...and then the call and its result, as the SDK sent them back.
    history = fake.requests[1].json["messages"]
    assert history == run.sent[1]["messages"]
    assert history[1:] == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_w1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {
            "role": "tool",
            "tool_call_id": "call_w1",
            "content": json.dumps(WEATHER_RESULT, separators=(",", ":")),
        },
    ]


CITY = {"name": "Paris", "country": "France", "landmarks": ["Louvre", "Eiffel Tower"]}
CITY_SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "country": {"type": "string"},
        "landmarks": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["name", "country", "landmarks"],
    "additionalProperties": False,
}


@pytest.mark.parametrize("scenario", ["ai-generate-object", "ai-output-object"])
async def test_ai_sdk_structured_output(
    node: str, relay_for, fake: FakeUpstream, scenario: str
) -> None:
    text = json.dumps(CITY)
    answers(fake, openai_events([text[:20], text[20:45], text[45:]]))
    async with relay_for("openai") as relay:
        run = await run_client(node, relay, scenario)
    got = run.result["object" if scenario == "ai-generate-object" else "output"]
    assert got == CITY
    assert run.result["finishReason"] == "stop"
    assert run.warnings == []
    # The schema reached the upstream as the SDK sent it: a strict json_schema format.
    [sent] = run.sent
    assert sent["response_format"] == {
        "type": "json_schema",
        "json_schema": {"schema": CITY_SCHEMA, "strict": True, "name": "city"},
    }
    assert fake.requests[0].json["response_format"] == sent["response_format"]


ERROR_FRAME = (
    b'data: {"error":{"message":"CUDA out of memory","type":"server_error","param":null,'
    b'"code":null}}\n\n'
)
# Two text deltas, then the upstream fails: with OpenAI's error frame, or by hanging up.
# Each with the code chatrelay's error frame gives it.
STARTED = openai_events(["Hel", "lo"])[:3]
FAILURES = {
    "error-frame": ([*STARTED, ERROR_FRAME, b"data: [DONE]\n\n"], "upstream_stream_error"),
    "dropped": ([*STARTED, DROP], "upstream_disconnect"),
}


@pytest.mark.parametrize("failure", list(FAILURES))
async def test_ai_sdk_surfaces_an_error_after_the_stream_started(
    node: str, relay_for, fake: FakeUpstream, failure: str
) -> None:
    script, code = FAILURES[failure]
    answers(fake, script)
    async with relay_for("openai") as relay:
        run = await run_client(node, relay, "ai-stream-error")
    parts = run.result["parts"]
    assert [p["text"] for p in parts if p["type"] == "text-delta"] == ["Hel", "lo"]
    [error] = [p["error"] for p in parts if p["type"] == "error"]
    # The AI SDK hands on the frame's error object as it is.
    assert set(error["plain"]) == {"message", "type", "param", "code"}
    assert error["plain"]["type"] == "upstream_error"
    assert error["plain"]["code"] == code
    assert_names_the_failure(error["plain"]["message"], failure, fake)
    assert parts[-1] == {"type": "finish", "finishReason": "error"}
    assert run.result["finishReason"] == "error"
    assert run.result["errors"] == [error]  # and onError saw it


@pytest.mark.parametrize("failure", list(FAILURES))
async def test_openai_js_raises_an_error_after_the_stream_started(
    node: str, relay_for, fake: FakeUpstream, failure: str
) -> None:
    script, code = FAILURES[failure]
    answers(fake, script)
    async with relay_for("openai") as relay:
        run = await run_client(node, relay, "openai-stream-error")
    assert run.result["deltas"] == ["Hel", "lo"]
    thrown = run.result["thrown"]
    assert thrown["isAPIError"] is True
    assert thrown["constructor"] == "APIError"
    assert thrown["type"] == "upstream_error"
    assert thrown["code"] == code
    assert_names_the_failure(thrown["message"], failure, fake)


def assert_names_the_failure(message: str, failure: str, fake: FakeUpstream) -> None:
    upstream = f"Upstream 'openai' ({fake.base_url}/v1/chat/completions)"
    if failure == "error-frame":
        assert message == f"{upstream} reported an error mid-answer: CUDA out of memory."
    else:
        assert message.startswith(f"{upstream} dropped the connection mid-answer"), message


PARALLEL_TOOL_CALLS = [
    {
        "id": "call_w1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
    },
    {
        "id": "call_t2",
        "type": "function",
        "function": {"name": "get_time", "arguments": '{"timezone": "Asia/Tokyo"}'},
    },
]


async def test_openai_js_stream_helper_accumulates_parallel_tool_calls(
    node: str, relay_for, fake: FakeUpstream
) -> None:
    answers(fake, PARALLEL_CALLS)
    async with relay_for("openai") as relay:
        run = await run_client(node, relay, "openai-stream-tools")
    result = run.result
    assert result["finishReason"] == "tool_calls"
    message = result["message"]
    assert message["role"] == "assistant"
    assert message["content"] is None
    assert message["tool_calls"] == PARALLEL_TOOL_CALLS
    assert result["argumentsDone"] == [
        {"index": i, "name": call["function"]["name"], "arguments": call["function"]["arguments"]}
        for i, call in enumerate(PARALLEL_TOOL_CALLS)
    ]
    assert result["usage"]["completion_tokens"] == 12
    [sent] = run.sent
    assert fake.requests[0].json["tools"] == sent["tools"]
    assert [t["function"]["name"] for t in sent["tools"]] == ["get_weather", "get_time"]


async def test_openai_js_run_tools_round_trip_with_parallel_calls(
    node: str, relay_for, fake: FakeUpstream
) -> None:
    answers(fake, PARALLEL_CALLS, openai_events(["22°C in Paris,", " 18:00 in Tokyo."]))
    async with relay_for("openai") as relay:
        run = await run_client(node, relay, "openai-run-tools")
    result = run.result
    assert result["content"] == "22°C in Paris, 18:00 in Tokyo."
    assert result["executed"] == [
        {"name": "get_weather", "args": {"city": "Paris"}},
        {"name": "get_time", "args": {"timezone": "Asia/Tokyo"}},
    ]
    assert result["messages"][1]["tool_calls"] == PARALLEL_TOOL_CALLS
    # Both calls and both results went back upstream as the SDK sent them.
    assert len(fake.requests) == len(run.sent) == 2
    history = fake.requests[1].json["messages"]
    assert history == run.sent[1]["messages"]
    assert [m["role"] for m in history] == ["user", "assistant", "tool", "tool"]
    assert [c["id"] for c in history[1]["tool_calls"]] == ["call_w1", "call_t2"]
    assert [m["tool_call_id"] for m in history[2:]] == ["call_w1", "call_t2"]
    assert fake.requests[0].json["tools"] == run.sent[0]["tools"]
    assert fake.requests[0].json["tool_choice"] == run.sent[0]["tool_choice"] == "auto"
