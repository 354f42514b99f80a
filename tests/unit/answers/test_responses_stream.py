"""An answer's event buffer read as the Responses API (answers/responses_stream.py): the
frames the relay stores for every API, given to one follower as Responses events; and the
stored responses' own pieces (answers/responses_stored.py): a stored row as a response
object, the input items as listed."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import orjson

from chatrelay.answers.events import EventBuffer
from chatrelay.answers.frames import DONE, OpenAIFrames
from chatrelay.answers.responses_output import ResponseHead
from chatrelay.answers.responses_stored import input_record, listed_items, stored_object
from chatrelay.answers.responses_stream import (
    ResponseShape,
    answer_id_of,
    response_id,
)
from chatrelay.errors import ChatRelayError
from chatrelay.store.models import MessageRow
from chatrelay.upstreams.chunk import Usage

HEAD = ResponseHead("resp_k3y", "m", 1770933892)


def events_of(data: bytes) -> list[dict[str, Any]]:
    out = []
    for unit in data.split(b"\n\n"):
        lines = [line for line in unit.split(b"\n") if line.startswith(b"data: ")]
        if lines:
            out.append(orjson.loads(lines[0][6:]))
    return out


def answer_buffer() -> tuple[EventBuffer, OpenAIFrames]:
    """A buffer as an answer fills it: role, text tokens, deltas that are more than text."""
    encoder = OpenAIFrames("chatcmpl-x", "m")
    buffer = EventBuffer(encoder.content_template)
    buffer.append(encoder.role())
    buffer.append(b": waiting for the upstream to accept\n\n")
    buffer.append_rich(encoder.rich({"reasoning_content": "Think."}, None), b"")
    buffer.append_content(b"It is")
    buffer.append_rich(encoder.rich({"content": ' "sunny"'}, None), b' \\"sunny\\"')
    call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f"}}
    buffer.append_rich(encoder.rich({"tool_calls": [call]}, None), b"")
    piece = {"index": 0, "function": {"arguments": '{"a":1}'}}
    buffer.append_rich(encoder.rich({"tool_calls": [piece]}, None), b"")
    return buffer, encoder


async def follow(buffer: EventBuffer, shape: ResponseShape) -> bytes:
    out = shape.start()
    async for data in buffer.follow(shape=shape):
        out += data
    return out


async def test_every_kind_of_frame_becomes_its_responses_events() -> None:
    buffer, encoder = answer_buffer()
    buffer.append_ending(encoder.final("tool_calls", None, status="complete"))
    buffer.append(DONE)
    buffer.close()
    answer = SimpleNamespace(
        error=None, status="complete", usage=Usage(7, 5), finish_reason="tool_calls"
    )
    data = await follow(buffer, ResponseShape(answer, HEAD))  # type: ignore[arg-type]
    assert b": waiting for the upstream to accept\n\n" in data  # comments go through
    events = events_of(data)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    texts = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
    assert "".join(texts) == 'It is "sunny"'
    final = events[-1]
    assert final["type"] == "response.completed"
    output = final["response"]["output"]
    assert [item["type"] for item in output] == ["reasoning", "message", "function_call"]
    assert output[0]["summary"] == [{"type": "summary_text", "text": "Think."}]
    assert output[1]["content"][0]["text"] == 'It is "sunny"'
    assert (output[2]["call_id"], output[2]["name"], output[2]["arguments"]) == (
        "call_1",
        "f",
        '{"a":1}',
    )
    assert final["response"]["usage"]["total_tokens"] == 12
    assert b"[DONE]" not in data


async def test_a_stopped_answer_is_cancelled_and_a_failed_one_fails() -> None:
    for status, error, ending in (
        ("stopped", None, "response.incomplete"),
        ("error", ChatRelayError(502, "upstream went away", code="upstream_error"), "error"),
    ):
        buffer, encoder = answer_buffer()
        buffer.append_ending(encoder.final("stop", None, status=status))
        buffer.append(DONE)
        buffer.close()
        answer = SimpleNamespace(error=error, status=status, usage=None, finish_reason="stop")
        events = events_of(await follow(buffer, ResponseShape(answer, HEAD)))  # type: ignore[arg-type]
        kinds = [e["type"] for e in events]
        if error is None:
            assert kinds[-1] == ending
            assert events[-1]["response"]["status"] == "cancelled"
        else:
            assert kinds[-2:] == ["error", "response.failed"]
            assert events[-2]["error"]["message"] == "upstream went away"
            assert events[-1]["response"]["error"]["message"] == "upstream went away"


def test_response_ids_name_their_answers() -> None:
    assert response_id("msg_a-b_c") == "resp_a-b_c"
    assert answer_id_of("resp_a-b_c") == "msg_a-b_c"
    assert answer_id_of("msg_a-b_c") is None and answer_id_of("resp_" + "x" * 40) is None


def row(**fields: Any) -> MessageRow:
    defaults: dict[str, Any] = {
        "content": "Hi",
        "extra": None,
        "status": "complete",
        "finish_reason": "stop",
        "prompt_tokens": 3,
        "completion_tokens": 1,
        "error": None,
    }
    return MessageRow(**{**defaults, **fields})


def test_a_stored_row_reads_back_as_its_response() -> None:
    done = stored_object(HEAD, row())
    assert done["status"] == "completed" and done["usage"]["input_tokens"] == 3
    assert done["output"][0]["content"][0]["text"] == "Hi"
    cut = stored_object(HEAD, row(finish_reason="length"))
    assert cut["status"] == "incomplete"
    assert cut["incomplete_details"] == {"reason": "max_output_tokens"}
    assert stored_object(HEAD, row(status="stopped"))["status"] == "cancelled"
    failed = stored_object(HEAD, row(status="interrupted", error="The server is shutting down"))
    assert failed["status"] == "failed"
    assert failed["error"]["message"] == "The server is shutting down"
    going = stored_object(HEAD, row(status="streaming", finish_reason=None))
    assert going["status"] == "in_progress" and going["usage"] is None
    calls = [{"id": "call_9", "type": "function",
              "function": {"name": "f", "arguments": "{}"}}]  # fmt: skip
    called = stored_object(HEAD, row(content="", extra={"content": None, "tool_calls": calls}))
    assert [item["type"] for item in called["output"]] == ["function_call"]
    assert called["output"][0]["call_id"] == "call_9"


def test_input_items_are_listed_with_ids_and_parts() -> None:
    assert input_record("hi") == [{"type": "message", "role": "user", "content": "hi"}]
    items = [
        {"role": "assistant", "content": "before"},
        {"type": "function_call_output", "call_id": "c", "output": "22C"},
        {"type": "message", "role": "user", "content": "hi", "id": "msg_given"},
    ]
    listed = listed_items("resp_k", input_record(items))
    assert [item["id"] for item in listed] == ["in_k_0", "in_k_1", "msg_given"]
    assert listed[0]["content"] == [{"type": "output_text", "text": "before"}]
    assert listed[0]["type"] == "message" and listed[0]["status"] == "completed"
    assert listed[1] == {**items[1], "id": "in_k_1"}
    assert listed[2]["content"] == [{"type": "input_text", "text": "hi"}]
