"""The OpenAI frames of an answer (answers/frames.py) on their own: each one is the JSON an
OpenAI client parses, in one answer's envelope, and the byte templates make exactly what a
dict would."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from chatrelay.answers.frames import DONE, OpenAIFrames
from chatrelay.upstreams.chunk import Usage

ENVELOPE = {
    "id": "chatcmpl-7",
    "object": "chat.completion.chunk",
    "created": 1736800000,
    "model": "some/model",
}


def parsed(frame: bytes) -> Any:
    assert frame.startswith(b"data: ") and frame.endswith(b"\n\n")
    assert frame.count(b"\n") == 2  # one line: nothing a token holds breaks the event
    return orjson.loads(frame[len(b"data: ") : -2])


def frames() -> OpenAIFrames:
    return OpenAIFrames("chatcmpl-7", "some/model", created=1736800000)


@pytest.mark.parametrize(
    "text", ["Hello", "", 'quote " and \\ back', "line\nbreak\r\n", "naïve ☃ 😀", "\u2028\x00\t"]
)
def test_a_content_frame_is_the_chunk_of_its_token(text: str) -> None:
    body = parsed(frames().content(text))
    assert body == {
        **ENVELOPE,
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
    }


def test_the_template_around_an_escaped_token_is_the_content_frame() -> None:
    encoder = frames()
    prefix, suffix = encoder.content_template
    escaped = orjson.dumps('a\n"b"')[1:-1]
    assert prefix + escaped + suffix == encoder.content('a\n"b"')


def test_the_role_frame_opens_the_answer() -> None:
    body = parsed(frames().role())
    assert body["choices"] == [
        {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
    ]
    assert {k: body[k] for k in ENVELOPE} == ENVELOPE


def test_the_final_frame_carries_the_finish_reason_usage_and_a_status_other_than_complete() -> None:
    encoder = frames()
    complete = parsed(encoder.final("stop", Usage(12, 5), status="complete"))
    assert complete["choices"] == [{"index": 0, "delta": {}, "finish_reason": "stop"}]
    assert complete["usage"] == {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}
    assert "x_chatrelay" not in complete  # a complete answer is plain OpenAI

    stopped = parsed(encoder.final("stop", None, status="stopped"))
    assert "usage" not in stopped
    assert stopped["x_chatrelay"] == {"status": "stopped"}


def test_the_usage_frame_has_no_choices() -> None:
    body = parsed(frames().usage(Usage(3, 4)))
    assert body == {
        **ENVELOPE,
        "choices": [],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
    }


def test_an_error_frame_says_what_type_and_code() -> None:
    body = parsed(frames().error("The upstream stalled.", type="upstream_error", code="stall"))
    assert body == {
        **ENVELOPE,
        "choices": [],
        "error": {"message": "The upstream stalled.", "type": "upstream_error", "code": "stall"},
    }


def test_a_rich_delta_keeps_its_fields_in_their_order_with_or_without_logprobs() -> None:
    encoder = frames()
    delta = {"tool_calls": [{"index": 0, "function": {"arguments": '{"a"'}}], "content": None}
    plain = encoder.rich(delta, None)
    body = parsed(plain)
    assert body == {
        **ENVELOPE,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}],
    }
    assert list(body["choices"][0]["delta"]) == ["tool_calls", "content"]  # as sent

    logprobs = {"content": [{"token": "Hi", "logprob": -0.25, "bytes": [72, 105]}]}
    with_logprobs = parsed(encoder.rich({"content": "Hi"}, logprobs))
    assert with_logprobs["choices"] == [
        {"index": 0, "delta": {"content": "Hi"}, "logprobs": logprobs, "finish_reason": None}
    ]


def test_created_defaults_to_now_and_done_is_the_sse_end() -> None:
    encoder = OpenAIFrames("chatcmpl-8", "m")
    assert isinstance(encoder.created, int) and encoder.created > 1_700_000_000
    assert DONE == b"data: [DONE]\n\n"
