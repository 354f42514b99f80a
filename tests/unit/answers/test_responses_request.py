"""A Responses API request in Chat Completions' terms (answers/responses_request.py and
responses_input.py), on its own: the request shapes of openai-wire.md 4.1 and 4.5."""

from __future__ import annotations

from typing import Any

import pytest

from chatrelay.answers.responses_request import chat_form, item_references
from chatrelay.errors import ChatRelayError

WEATHER_TOOL = {
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


def refusal(body: dict[str, Any], **kwargs: Any) -> ChatRelayError:
    with pytest.raises(ChatRelayError) as caught:
        chat_form(body, **kwargs)
    return caught.value


def test_a_string_input_is_one_user_message_and_the_defaults_are_openais() -> None:
    form = chat_form({"model": "m", "input": "Tell me a joke."})
    assert form.model == "m"
    assert form.messages == [{"role": "user", "content": "Tell me a joke."}]
    assert form.extra == {}
    assert (form.max_tokens, form.temperature, form.top_p) == (None, None, None)
    assert form.store is True and form.stream is False and form.previous_response_id is None
    assert form.echo["store"] is True and form.echo["parallel_tool_calls"] is True
    assert form.echo["tool_choice"] == "auto" and form.echo["tools"] == []
    assert form.echo["text"] == {"format": {"type": "text"}}


def test_message_items_with_text_and_an_image_become_chat_content_parts() -> None:
    form = chat_form({
        "model": "m",
        "input": [
            {"role": "developer", "content": [{"type": "input_text", "text": "Be terse."}]},
            {"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "What is in this picture?"},
                {"type": "input_image", "image_url": "data:image/png;base64,iVBOR",
                 "detail": "low"},
                {"type": "input_file", "file_data": "data:application/pdf;base64,JVBE",
                 "filename": "a.pdf"},
            ]},
        ],
    })  # fmt: skip
    assert form.messages == [
        {"role": "developer", "content": "Be terse."},
        {"role": "user", "content": [
            {"type": "text", "text": "What is in this picture?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR",
                                                "detail": "low"}},
            {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBE",
                                      "filename": "a.pdf"}},
        ]},
    ]  # fmt: skip


def test_the_ai_sdks_history_reads_as_chat_history() -> None:
    # openai-wire.md 4.5: what @ai-sdk/openai sends, assistant history in output_text parts.
    form = chat_form({
        "model": "m",
        "input": [
            {"role": "system", "content": "You are helpful."},
            {"role": "user", "content": [{"type": "input_text", "text": "Hi"}]},
            {"role": "assistant", "content": [{"type": "output_text", "text": "Hello!"}],
             "id": "msg_x_0"},
            {"role": "user", "content": [{"type": "input_text", "text": "Again"}]},
        ],
    })  # fmt: skip
    assert form.messages == [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": [{"type": "text", "text": "Again"}]},
    ]


def test_a_function_call_round_trip_is_an_assistant_tool_call_and_a_tool_message() -> None:
    form = chat_form({
        "model": "m",
        "tools": [WEATHER_TOOL],
        "input": [
            {"role": "user", "content": "Weather in Paris?"},
            {"type": "function_call", "id": "fc_x_0", "call_id": "call_1",
             "name": "get_weather", "arguments": '{"city":"Paris"}'},
            {"type": "function_call_output", "call_id": "call_1", "output": "22C"},
        ],
    })  # fmt: skip
    assert form.messages == [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "22C"},
    ]  # fmt: skip
    assert form.extra["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "description": "The weather in a city",
        "parameters": WEATHER_TOOL["parameters"], "strict": True}}]  # fmt: skip
    assert form.echo["tools"] == [WEATHER_TOOL]  # the response repeats the flat shape


def test_two_parallel_calls_make_one_assistant_message_after_its_text() -> None:
    form = chat_form({
        "model": "m",
        "input": [
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {"role": "assistant", "content": [{"type": "output_text", "text": "Checking."}]},
            {"type": "function_call", "call_id": "call_a", "name": "get_weather",
             "arguments": '{"city":"Paris"}'},
            {"type": "function_call", "call_id": "call_b", "name": "get_weather",
             "arguments": '{"city":"Rome"}'},
            {"type": "function_call_output", "call_id": "call_a", "output": "22C"},
            {"type": "function_call_output", "call_id": "call_b",
             "output": [{"type": "input_text", "text": "25C"}]},
        ],
    })  # fmt: skip
    assert form.messages[1:] == [
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "call_a", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
            {"id": "call_b", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'}},
        ]},
        {"role": "tool", "tool_call_id": "call_a", "content": "22C"},
        {"role": "tool", "tool_call_id": "call_b", "content": "25C"},  # a string: portable
    ]  # fmt: skip


def test_a_reasoning_item_rides_on_the_assistant_message_after_it() -> None:
    form = chat_form({
        "model": "m",
        "input": [
            {"role": "user", "content": "2+2?"},
            {"type": "reasoning", "id": "rs_x_0",
             "summary": [{"type": "summary_text", "text": "Add them."}]},
            {"type": "function_call", "call_id": "call_1", "name": "add",
             "arguments": '{"a":2,"b":2}'},
            {"type": "function_call_output", "call_id": "call_1", "output": "4"},
        ],
    })  # fmt: skip
    assert form.messages[1]["reasoning_content"] == "Add them."
    assert form.messages[1]["tool_calls"][0]["id"] == "call_1"


def test_instructions_lead_as_a_system_message_but_are_not_part_of_the_input() -> None:
    form = chat_form({"model": "m", "instructions": "Answer in French.", "input": "Hello"})
    assert form.messages == [
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": "Hello"},
    ]
    assert form.input_messages == [{"role": "user", "content": "Hello"}]
    assert form.echo["instructions"] == "Answer in French."


def test_text_format_json_schema_becomes_the_nested_response_format() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"],
              "additionalProperties": False}  # fmt: skip
    text = {"format": {"type": "json_schema", "name": "answer", "schema": schema, "strict": True},
            "verbosity": "low"}  # fmt: skip
    form = chat_form({"model": "m", "input": "x", "text": text})
    assert form.extra == {
        "response_format": {"type": "json_schema",
                            "json_schema": {"name": "answer", "schema": schema, "strict": True}},
        "verbosity": "low",
    }  # fmt: skip
    assert form.echo["text"] == text
    json_object = chat_form(
        {"model": "m", "input": "x", "text": {"format": {"type": "json_object"}}}
    )
    assert json_object.extra == {"response_format": {"type": "json_object"}}
    plain = chat_form({"model": "m", "input": "x", "text": {"format": {"type": "text"}}})
    assert plain.extra == {}  # what chat answers without asking


def test_the_other_fields_map_to_their_chat_names() -> None:
    form = chat_form({
        "model": "m", "input": "x", "max_output_tokens": 300, "temperature": 0.2, "top_p": 0.9,
        "tools": [WEATHER_TOOL], "tool_choice": {"type": "function", "name": "get_weather"},
        "parallel_tool_calls": False, "reasoning": {"effort": "low", "summary": "auto"},
        "metadata": {"ticket": "42"}, "store": False, "previous_response_id": "resp_prev",
        "user": "u1", "stream": True, "stream_options": {"include_obfuscation": False},
        "seed": 7,
    })  # fmt: skip
    assert (form.max_tokens, form.temperature, form.top_p) == (300, 0.2, 0.9)
    assert form.extra["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert form.extra["parallel_tool_calls"] is False
    assert form.extra["reasoning_effort"] == "low"
    assert form.extra["user"] == "u1" and form.extra["seed"] == 7  # unknown fields go on
    # chatrelay's own: kept and repeated, never sent to a chat upstream (which would store).
    assert not {"metadata", "store", "stream", "stream_options", "reasoning"} & set(form.extra)
    assert form.metadata == {"ticket": "42"} and form.store is False and form.stream is True
    assert form.previous_response_id == "resp_prev"
    allowed = chat_form({"model": "m", "input": "x", "tool_choice": {
        "type": "allowed_tools", "mode": "required",
        "tools": [{"type": "function", "name": "get_weather"}]}})  # fmt: skip
    assert allowed.extra["tool_choice"] == {"type": "allowed_tools", "allowed_tools": {
        "mode": "required",
        "tools": [{"type": "function", "function": {"name": "get_weather"}}]}}  # fmt: skip


def test_an_item_reference_is_the_stored_item_it_names() -> None:
    body = {"model": "m", "input": [
        {"role": "user", "content": "Hi"},
        {"type": "item_reference", "id": "msg_abc_0"},
        {"role": "user", "content": "Again"},
    ]}  # fmt: skip
    assert item_references(body) == ["msg_abc_0"]
    answer = [{"type": "output_text", "annotations": [], "text": "Hello!"}]
    stored = {"msg_abc_0": {"id": "msg_abc_0", "type": "message", "role": "assistant",
                            "status": "completed", "content": answer}}  # fmt: skip
    assert chat_form(body, references=stored).messages[1] == {
        "role": "assistant",
        "content": "Hello!",
    }
    missing = refusal(body)
    assert (missing.status, missing.code, missing.param) == (404, "item_not_found", "input[1].id")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"tools": [WEATHER_TOOL, {"type": "web_search"}]}, "tools[1].type"),
        ({"tools": [{"type": "file_search", "vector_store_ids": ["vs_1"]}]}, "tools[0].type"),
        ({"tools": [{"type": "code_interpreter", "container": {"type": "auto"}}]}, "tools[0].type"),
        ({"tools": [{"type": "computer_use_preview"}]}, "tools[0].type"),
        ({"tool_choice": {"type": "web_search_preview"}}, "tool_choice.type"),
        ({"background": True}, "background"),
        ({"conversation": "conv_1"}, "conversation"),
        ({"truncation": "auto"}, "truncation"),
        ({"include": ["reasoning.encrypted_content", "file_search_call.results"]}, "include[1]"),
        ({"input": [{"type": "web_search_call", "id": "ws_1"}]}, "input[0].type"),
        ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file_1",
                                                  "detail": "auto"}]}]},
         "input[0].content[0].file_id"),
        ({"input": [{"type": "reasoning", "summary": [], "encrypted_content": "gAAAA"}]},
         "input[0].encrypted_content"),
        ({"input": [{"type": "function_call_output", "call_id": "c",
                     "output": [{"type": "input_image", "image_url": "https://x/y.png"}]}]},
         "input[0].output[0]"),
    ],
)  # fmt: skip
def test_what_cannot_be_honoured_is_refused_by_the_name_the_client_wrote(
    body: dict[str, Any], param: str
) -> None:
    error = refusal({"model": "m", "input": "x", **body})
    assert (error.status, error.code, error.param) == (400, "unsupported_parameter", param)
    assert param in error.message


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": None}, "input"),
        ({"input": []}, "input"),
        ({"input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
        ({"input": [{"role": "user", "content": 5}]}, "input[0].content"),
        ({"input": ["x"]}, "input[0]"),
        ({"input": [{"type": "function_call", "name": "f", "arguments": "{}"}]},
         "input[0].call_id"),
        ({"input": [{"role": "user", "content": [{"type": "input_text"}]}]},
         "input[0].content[0].text"),
        ({"input": [{"role": "user", "content": [{"type": "input_text", "text": "a\x00b"}]}]},
         "input[0].content[0].text"),
        ({"tools": [{"type": "function", "description": "no name"}]}, "tools[0].name"),
        ({"max_output_tokens": True}, "max_output_tokens"),
        ({"max_output_tokens": 0}, "max_output_tokens"),
        ({"temperature": 3}, "temperature"),
        ({"text": {"format": {"type": "json_schema", "schema": {}}}}, "text.format.name"),
        ({"metadata": {str(n): "v" for n in range(17)}}, "metadata"),
        ({"store": "yes"}, "store"),
    ],
)  # fmt: skip
def test_a_malformed_field_is_a_400_naming_it(body: dict[str, Any], param: str) -> None:
    error = refusal({"model": "m", "input": "x", **body})
    assert (error.status, error.code, error.param) == (400, "invalid_value", param)


def test_previous_response_id_may_stand_without_input() -> None:
    form = chat_form({"model": "m", "previous_response_id": "resp_prev"})
    assert form.messages == [] and form.previous_response_id == "resp_prev"
