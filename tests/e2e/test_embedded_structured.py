"""The embedded model as a peer for structured output and tools.

First what the llama-cpp-python dialect sends and reads (no server); then, marked ``slow``,
the real llama.cpp server with the bundled SmolLM2 behind chatrelay (no upstream configured),
driven by the official ``openai`` package: JSON mode, a JSON schema, forced tool calls, what
``tool_choice: "auto"`` does with this chat format, and what is refused by name.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import openai
import orjson
import pytest
import pytest_asyncio
from openai.types.chat import ChatCompletionMessageFunctionToolCall

from chatrelay.answers.carriage import cannot_carry
from chatrelay.config import EMBEDDED_MODEL, Settings
from chatrelay.errors import ChatRelayError
from chatrelay.upstreams.client import Upstream, UpstreamConfig
from chatrelay.upstreams.dialects import DIALECTS, GenerationParams
from chatrelay.upstreams.llama_server import LlamaServerDialect
from chatrelay.upstreams.stream import Timeouts
from tests.conftest import RunningRelay, serve
from tests.e2e.test_openai_api import api_key, client_for

WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
TIME_TOOL: Any = {"type": "function", "function": {"name": "get_time"}}
PERSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


# --- What the dialect sends (no server) ---------------------------------------------------


def text(words: str) -> dict[str, str]:
    return {"type": "text", "text": words}


def sent(messages: list[dict[str, Any]], extra: dict[str, Any], **params: Any) -> Any:
    body = LlamaServerDialect().body(
        EMBEDDED_MODEL, messages, GenerationParams(max_tokens=32, extra=extra, **params)
    )
    return orjson.loads(body)


def test_the_dialect_is_registered_by_its_name() -> None:
    assert isinstance(DIALECTS["llama-cpp-python"], LlamaServerDialect)


def test_messages_go_as_its_server_takes_them() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    messages: list[dict[str, Any]] = [
        {"role": "developer", "content": [text("Be "), text("brief.")]},
        {"role": "system", "content": [text("Rules.")]},
        {"role": "user", "content": [text("Weather?")], "name": "ann"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": [text("22C")]},
        {"role": "assistant", "content": [{"type": "refusal", "refusal": "No."}]},
    ]  # fmt: skip
    assert sent(messages, {})["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "system", "content": "Rules."},
        {"role": "user", "content": "Weather?", "name": "ann"},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "22C"},
        {"role": "assistant", "content": "No."},
    ]


def test_a_user_message_with_an_image_keeps_its_parts() -> None:
    # Never reached through the local model (text_only: carriage refuses it by name); were it
    # sent, the server must see the image, not a message without it.
    parts = [text("What is this?"), {"type": "image_url", "image_url": {"url": "http://x/y.png"}}]
    assert sent([{"role": "user", "content": parts}], {})["messages"][0]["content"] == parts


def test_fields_are_translated_to_their_equivalents() -> None:
    extra = {
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "person", "strict": True, "schema": PERSON_SCHEMA},
        },
        "tools": [TIME_TOOL],
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "stream_options": {"include_usage": True},
        "seed": 7,
        "stop": ["\n\n"],
    }
    body = sent(
        [{"role": "user", "content": "hi"}],
        extra,
        max_tokens_field="max_completion_tokens",
        temperature=0.0,
    )
    assert body == {
        "model": EMBEDDED_MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "max_tokens": 32,
        "temperature": 0.0,
        "response_format": {"type": "json_object", "schema": PERSON_SCHEMA},
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_time",
                    "parameters": {"type": "object", "properties": {}},
                },
            }
        ],
        "tool_choice": {"type": "function", "function": {"name": "get_time"}},
        "seed": 7,
        "stop": ["\n\n"],
    }


def test_json_object_and_named_choices_go_as_they_came() -> None:
    extra = {
        "response_format": {"type": "json_object"},
        "tools": [WEATHER_TOOL, TIME_TOOL],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    }
    body = sent([{"role": "user", "content": "hi"}], extra)
    assert body["response_format"] == {"type": "json_object"}
    assert body["tool_choice"] == extra["tool_choice"]
    assert body["tools"][0] == WEATHER_TOOL
    any_json = {"type": "json_schema", "json_schema": {"name": "any"}}
    plain = sent([{"role": "user", "content": "hi"}], {"response_format": any_json})
    assert plain["response_format"] == {"type": "json_object"}


# --- What the dialect reads (no server) ---------------------------------------------------


def forced_call_events(answer_id: str, pieces: list[str]) -> list[str]:
    """llama-cpp-python's stream of a forced call (llama_chat_format.py
    _convert_completion_to_chat_function, as recorded from the real server): every delta
    repeats id, type and name, beside a legacy function_call."""
    head = {"id": answer_id, "object": "chat.completion.chunk", "created": 1, "model": "m"}
    call_id = f"call__0_get_weather_{answer_id}"

    def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
        choice = {"index": 0, "finish_reason": finish, "logprobs": None, "delta": delta}
        return json.dumps({**head, "choices": [choice]})

    empty = {"role": None, "content": None, "function_call": None, "tool_calls": None}
    events = [chunk({**empty, "role": "assistant"})]
    for piece in pieces:
        function = {"name": "get_weather", "arguments": piece}
        call = {"index": 0, "id": call_id, "type": "function", "function": function}
        events.append(chunk({**empty, "function_call": function, "tool_calls": [call]}))
    return [*events, chunk(empty, "tool_calls"), "[DONE]"]


def test_a_forced_call_is_read_as_openai_streams_one() -> None:
    dialect = LlamaServerDialect()
    events = forced_call_events("chatcmpl-a", ['{"city"', ': "Paris"', "}"])
    chunks = [dialect.parse_event(event) for event in events]
    deltas = [c.delta for c in chunks]
    assert deltas == [
        None,
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call__0_get_weather_chatcmpl-a",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city"'},
                }
            ]
        },
        {"tool_calls": [{"index": 0, "function": {"arguments": ': "Paris"'}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": "}"}}]},
        None,
        None,
    ]
    assert [c.finish_reason for c in chunks] == [None, None, None, None, "tool_calls", None]
    assert chunks[-1].done


def test_a_call_cut_by_max_tokens_ends_with_length() -> None:
    dialect = LlamaServerDialect()
    # Two answers interleaved, as two streams at once are: each is read on its own.
    cut = forced_call_events("chatcmpl-cut", ['{"city"', ': "Par'])
    whole = forced_call_events("chatcmpl-whole", ['{"city"', ': "Oslo"}'])
    finishes: dict[str, list[str | None]] = {"cut": [], "whole": []}
    for a, b in zip(cut, whole, strict=True):
        finishes["cut"].append(dialect.parse_event(a).finish_reason)
        second = dialect.parse_event(b)
        finishes["whole"].append(second.finish_reason)
        if second.delta and len(finishes["whole"]) == 2:
            assert second.delta["tool_calls"][0]["id"] == "call__0_get_weather_chatcmpl-whole"
    assert finishes["cut"] == [None, None, None, "length", None]
    assert finishes["whole"] == [None, None, None, "tool_calls", None]


# --- What its upstream is asked to carry (no server) --------------------------------------


def embedded_upstream() -> Upstream:
    config = UpstreamConfig(
        name="embedded",
        dialect="llama-cpp-python",
        base_url="http://127.0.0.1:9",
        models=(EMBEDDED_MODEL,),
        text_only=True,
    )
    return Upstream(config, timeouts=Timeouts(1, 1, 1))


def refusal(extra: dict[str, Any]) -> ChatRelayError | None:
    return cannot_carry(embedded_upstream(), [{"role": "user", "content": "hi"}], extra)


@pytest.mark.parametrize(
    "extra",
    [
        {"stream_options": {"include_usage": True}, "user": "u", "n": 1, "store": False},
        {"tools": [WEATHER_TOOL, TIME_TOOL], "tool_choice": "auto", "parallel_tool_calls": True},
        {"tools": [TIME_TOOL], "tool_choice": "required"},
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "p", "schema": PERSON_SCHEMA},
            }
        },
        {"seed": 1, "stop": "x", "logprobs": True, "top_logprobs": 2, "logit_bias": {"1": -5}},
        {"min_p": 0.1, "repeat_penalty": 1.2, "presence_penalty": 0.5, "frequency_penalty": 0.5},
    ],
)
def test_what_it_carries(extra: dict[str, Any]) -> None:
    assert refusal(extra) is None


@pytest.mark.parametrize(
    ("extra", "param", "words"),
    [
        ({"service_tier": "flex"}, "service_tier", "the field 'service_tier'"),
        ({"reasoning_effort": "low"}, "reasoning_effort", "the field 'reasoning_effort'"),
        ({"store": True}, "store", "the field 'store'"),
        ({"functions": [WEATHER_TOOL["function"]]}, "functions", "legacy field 'functions'"),
        (
            {"tools": [WEATHER_TOOL, TIME_TOOL], "tool_choice": "required"},
            "tool_choice",
            "more than one tool",
        ),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "r", "schema": {"$ref": "https://x/s.json"}},
                }
            },
            "response_format",
            "grammar cannot enforce",
        ),
    ],
)
def test_what_it_refuses_by_name(extra: dict[str, Any], param: str, words: str) -> None:
    problem = refusal(extra)
    assert problem is not None and problem.status == 400
    assert problem.code == "unsupported_parameter" and problem.param == param
    assert words in problem.message and "'embedded'" in problem.message


def test_images_are_refused_by_name() -> None:
    image = {"type": "image_url", "image_url": {"url": "http://x/y.png"}}
    problem = cannot_carry(embedded_upstream(), [{"role": "user", "content": [image]}], {})
    assert problem is not None and problem.param == "messages[0].content[0]"


# --- The real server (slow) ----------------------------------------------------------------

# The relay and its llama.cpp server are started once for these tests, in one event loop.
in_module_loop = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def embedded(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[RunningRelay, str]]:
    """A relay with no upstream configured: the embedded model answers."""
    settings = Settings(max_tokens_limit=128, data_dir=tmp_path_factory.mktemp("embedded"))
    async with serve(settings) as relay:
        [upstream] = relay.service.registry.serving(EMBEDDED_MODEL)
        assert upstream.config.dialect == "llama-cpp-python" and upstream.config.text_only
        key, _ = await api_key(relay)
        yield relay, key


def sdk(embedded: tuple[RunningRelay, str]) -> openai.AsyncOpenAI:
    relay, key = embedded
    return client_for(relay, key).with_options(timeout=60)


def ask(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


@pytest.mark.slow
@in_module_loop
async def test_json_mode_answers_json(embedded: tuple[RunningRelay, str]) -> None:
    async with sdk(embedded) as client:
        answer = await client.chat.completions.create(
            model=EMBEDDED_MODEL,
            messages=ask('Reply with a JSON object with one key "ok" set to true.'),
            response_format={"type": "json_object"},
            max_tokens=48,
            temperature=0,
        )
    choice = answer.choices[0]
    assert choice.finish_reason == "stop"
    assert isinstance(json.loads(choice.message.content or ""), dict)


@pytest.mark.slow
@in_module_loop
async def test_a_json_schema_is_followed(embedded: tuple[RunningRelay, str]) -> None:
    async with sdk(embedded) as client:
        stream = await client.chat.completions.create(
            model=EMBEDDED_MODEL,
            messages=ask("Who was Ada Lovelace? Answer as JSON."),
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "person", "strict": True, "schema": PERSON_SCHEMA},
            },
            max_tokens=64,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop"
    person = json.loads(text)
    # The schema by hand (jsonschema is not installed): exactly these keys, of these types.
    assert set(person) == {"name", "age"}
    assert isinstance(person["name"], str)
    assert isinstance(person["age"], int) and not isinstance(person["age"], bool)
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens > 0


@pytest.mark.slow
@in_module_loop
async def test_a_named_tool_choice_makes_a_call(embedded: tuple[RunningRelay, str]) -> None:
    # The SDK's stream helper assembles the deltas as OpenAI's are assembled: a name or id
    # repeated in every delta would come out repeated ("get_weatherget_weather...").
    async with sdk(embedded) as client:
        async with client.chat.completions.stream(
            model=EMBEDDED_MODEL,
            messages=ask("What is the weather in Paris?"),
            tools=[WEATHER_TOOL],
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
            max_tokens=48,
            temperature=0,
        ) as stream:
            final = await stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    message = choice.message
    assert message.function_call is None
    [call] = message.tool_calls or []
    assert call.type == "function" and call.function.name == "get_weather"
    assert call.id.startswith("call_") and "get_weather" not in call.id.replace(
        "get_weather", "", 1
    )
    arguments = json.loads(call.function.arguments)
    assert set(arguments) == {"city"} and isinstance(arguments["city"], str)


@pytest.mark.slow
@in_module_loop
async def test_required_with_one_tool_makes_a_call(embedded: tuple[RunningRelay, str]) -> None:
    async with sdk(embedded) as client:
        answer = await client.chat.completions.create(
            model=EMBEDDED_MODEL,
            messages=ask("What time is it?"),
            tools=[TIME_TOOL],  # without parameters: OpenAI's "no arguments"
            tool_choice="required",
            max_tokens=16,
            temperature=0,
        )
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls or []
    assert isinstance(call, ChatCompletionMessageFunctionToolCall)
    assert call.function.name == "get_time" and json.loads(call.function.arguments) == {}


@pytest.mark.slow
@in_module_loop
async def test_a_call_cut_by_max_tokens_says_length(embedded: tuple[RunningRelay, str]) -> None:
    async with sdk(embedded) as client:
        answer = await client.chat.completions.create(
            model=EMBEDDED_MODEL,
            messages=ask("What is the weather in Paris?"),
            tools=[WEATHER_TOOL],
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
            max_tokens=3,
            temperature=0,
        )
    choice = answer.choices[0]
    assert choice.finish_reason == "length"
    [call] = choice.message.tool_calls or []
    assert isinstance(call, ChatCompletionMessageFunctionToolCall)
    with pytest.raises(json.JSONDecodeError):
        json.loads(call.function.arguments)


@pytest.mark.slow
@in_module_loop
async def test_auto_tool_choice_answers_in_text(embedded: tuple[RunningRelay, str]) -> None:
    # SmolLM2's chat template does not render tools and the server's handler parses no calls
    # out of text: with "auto" (the default when tools are sent) the answer is text.
    async with sdk(embedded) as client:
        answer = await client.chat.completions.create(
            model=EMBEDDED_MODEL,
            messages=ask("What is the weather in Paris?"),
            tools=[WEATHER_TOOL],
            max_tokens=16,
            temperature=0,
        )
    choice = answer.choices[0]
    assert choice.message.tool_calls is None
    assert choice.message.content and choice.finish_reason in ("stop", "length")


@pytest.mark.slow
@in_module_loop
async def test_a_tool_round_trip_is_answered(embedded: tuple[RunningRelay, str]) -> None:
    # What its server refuses as sent (a developer message, content null beside tool_calls,
    # content parts in system and tool messages) goes translated, and is answered.
    async with sdk(embedded) as client:
        first = await client.chat.completions.create(
            model=EMBEDDED_MODEL,
            messages=ask("What is the weather in Paris?"),
            tools=[WEATHER_TOOL],
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
            max_tokens=32,
            temperature=0,
        )
        message = first.choices[0].message
        [call] = message.tool_calls or []
        history: list[Any] = [
            {"role": "developer", "content": [text("Answer in one sentence.")]},
            *ask("What is the weather in Paris?"),
            message.model_dump(exclude_none=True) | {"content": None},
            {"role": "tool", "tool_call_id": call.id, "content": [text("22C, sunny")]},
        ]
        second = await client.chat.completions.create(
            model=EMBEDDED_MODEL,
            messages=history,
            tools=[WEATHER_TOOL],
            max_tokens=16,
            temperature=0,
        )
    assert second.choices[0].message.content
    assert second.choices[0].finish_reason in ("stop", "length")


@pytest.mark.slow
@in_module_loop
@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"service_tier": "flex"}, "service_tier"),
        ({"tools": [WEATHER_TOOL, TIME_TOOL], "tool_choice": "required"}, "tool_choice"),
        (
            {"functions": [WEATHER_TOOL["function"]], "function_call": {"name": "get_weather"}},
            "functions",
        ),
    ],
)
async def test_what_it_cannot_carry_is_refused_by_name(
    embedded: tuple[RunningRelay, str], extra: dict[str, Any], param: str
) -> None:
    async with sdk(embedded) as client:
        with pytest.raises(openai.BadRequestError) as refused:
            await client.chat.completions.create(
                model=EMBEDDED_MODEL, messages=ask("hi"), max_tokens=8, extra_body=extra
            )
    error = refused.value
    assert error.code == "unsupported_parameter" and error.param == param
    assert "'embedded'" in error.message
