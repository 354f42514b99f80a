"""The dialects on their own: the bodies sent upstream and the parse of what comes back."""

from __future__ import annotations

import orjson
import pytest

from chatrelay.upstreams.dialects import (
    GenerationParams,
    LivepeerDialect,
    MalformedChunk,
    OpenAIDialect,
    upstream_error_message,
)

QUESTION = [{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "Hi"}]


def test_openai_body_carries_the_clients_fields_and_sets_only_what_chatrelay_owns() -> None:
    extra = {"tools": [{"type": "function"}], "seed": 7, "stream_options": {"x": 1}, "stream": 0}
    params = GenerationParams(max_tokens=64, temperature=0.2, extra=extra)
    body = orjson.loads(OpenAIDialect().body("served-name", QUESTION, params))
    assert body["tools"] == [{"type": "function"}] and body["seed"] == 7
    assert body["model"] == "served-name" and body["messages"] == QUESTION
    assert body["stream"] is True and body["max_tokens"] == 64 and body["temperature"] == 0.2
    assert body["stream_options"] == {"x": 1, "include_usage": True}
    assert "top_p" not in body  # only what the client gave


def test_openai_body_keeps_the_clients_name_for_the_budget() -> None:
    params = GenerationParams(max_tokens=9, max_tokens_field="max_completion_tokens")
    body = orjson.loads(OpenAIDialect().body("m", QUESTION, params))
    assert body["max_completion_tokens"] == 9 and "max_tokens" not in body


@pytest.mark.parametrize(
    ("base", "url"),
    [
        ("http://h:1", "http://h:1/v1/chat/completions"),
        ("http://h:1/v1/", "http://h:1/v1/chat/completions"),
        ("http://h:1/api/v1", "http://h:1/api/v1/chat/completions"),
    ],
)
def test_openai_url(base: str, url: str) -> None:
    assert OpenAIDialect().url(base) == url


def test_livepeer_body_has_its_seven_fields_and_text_messages() -> None:
    parts = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    messages = [*QUESTION, {"role": "user", "content": parts}]
    params = GenerationParams(max_tokens=5, top_k=40, extra={"seed": 1})
    body = orjson.loads(LivepeerDialect().body("m", messages, params))
    fields = {"model", "messages", "max_tokens", "temperature", "top_p", "top_k", "stream"}
    assert set(body) <= fields
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert body["messages"][2]["content"] == "ab"
    assert body["top_k"] == 40 and body["max_tokens"] == 5 and body["stream"] is True


def test_a_text_chunk_is_read_as_text_alone() -> None:
    chunk = OpenAIDialect().parse_event(
        '{"choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"},"finish_reason":null}]}'
    )
    assert chunk.content == "Hi" and chunk.delta is None and chunk.finish_reason is None


def test_a_delta_with_more_than_text_is_kept_whole_without_role_or_empty_fields() -> None:
    data = orjson.dumps(
        {
            "choices": [
                {
                    "delta": {
                        "role": "assistant",
                        "reasoning_content": "hm",
                        "reasoning_details": [],
                        "refusal": None,
                    },
                    "finish_reason": None,
                }
            ]
        }
    ).decode()
    chunk = OpenAIDialect().parse_event(data)
    assert chunk.delta == {"reasoning_content": "hm"}


def test_livepeer_says_not_done_with_an_empty_finish_reason_and_counts_usage() -> None:
    data = (
        '{"choices":[{"delta":{"role":"assistant","content":"x"},"finish_reason":""}],'
        '"usage":{"prompt_tokens":3,"completion_tokens":1}}'
    )
    chunk = LivepeerDialect().parse_event(data)
    assert chunk.finish_reason is None and chunk.content == "x"
    assert chunk.usage is not None and chunk.usage.total_tokens == 4


def test_the_old_livepeer_format() -> None:
    dialect = LivepeerDialect()
    assert dialect.parse_event('{"chunk":"Hel"}').content == "Hel"
    end = dialect.parse_event('{"chunk":"[DONE]","done":true,"tokens_used":12}')
    assert end.done and end.finish_reason == "stop" and end.usage is not None
    assert end.usage.completion_tokens == 12
    with pytest.raises(MalformedChunk):
        dialect.parse_event('{"chunk":7}')


@pytest.mark.parametrize(
    "data", ["[1, 2]", "not json", '"text"', '{"choices":"x"}', '{"choices":[{"delta":[1]}]}']
)
def test_what_is_not_a_chunk_is_refused_with_a_value_error(data: str) -> None:
    with pytest.raises(ValueError):
        OpenAIDialect().parse_event(data)


def test_an_error_inside_the_stream_is_read_as_an_error() -> None:
    chunk = OpenAIDialect().parse_event('{"error":{"message":"overloaded"}}')
    assert chunk.error == "overloaded"


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (b'{"error":{"message":"bad model"}}', "bad model"),
        (b'{"detail":"nope"}', "nope"),
        (b"plain words", "plain words"),
        (b"", "(empty body)"),
    ],
)
def test_an_upstreams_own_words_are_found_in_its_error_body(body: bytes, said: str) -> None:
    assert said in upstream_error_message(body)
