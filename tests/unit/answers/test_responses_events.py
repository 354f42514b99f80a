"""The Responses API's output from an answer's chat deltas (answers/responses_events.py and
responses_output.py), on its own: chat streams shaped as openai-wire.md 2.2-2.5 recorded
them, parsed by the OpenAI dialect as the relay parses them, into the events of 4.3."""

from __future__ import annotations

from typing import Any

import orjson

from chatrelay.answers.responses_events import ResponseEvents
from chatrelay.answers.responses_output import (
    ResponseHead,
    item_id,
    item_place,
    whole_response,
)
from chatrelay.answers.rich import RichParts
from chatrelay.errors import ChatRelayError
from chatrelay.upstreams.chunk import Usage
from chatrelay.upstreams.dialects import OpenAIDialect

HEAD = ResponseHead("resp_k3y-x_Y", "gpt-4.1-nano", 1770933892)
ENVELOPE = '"id":"chatcmpl-D8Z5","object":"chat.completion.chunk","created":1770933892,"model":"m"'


def chat_chunk(delta: dict[str, Any], finish_reason: str | None = None) -> str:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
    return with_envelope({"choices": [choice], "usage": None})


def usage_chunk(prompt: int, completion: int) -> str:
    usage = {"prompt_tokens": prompt, "completion_tokens": completion,
             "total_tokens": prompt + completion}  # fmt: skip
    return with_envelope({"choices": [], "usage": usage})


def with_envelope(fields: dict[str, Any]) -> str:
    """A chunk's data line as OpenAI writes it, its envelope first."""
    return "{" + ENVELOPE + "," + orjson.dumps(fields).decode()[1:]


def relayed(lines: list[str], events: ResponseEvents | None = None) -> bytes:
    """The chat stream's data lines through the dialect and into the events, as the relay
    goes: each chunk's pieces as they come, the finish reason and usage at the end."""
    events = events or ResponseEvents(HEAD)
    dialect = OpenAIDialect()
    out = events.start()
    finish_reason, usage = None, None
    for line in [*lines, "[DONE]"]:
        chunk = dialect.parse_event(line)
        out += events.take(chunk)
        finish_reason = chunk.finish_reason or finish_reason
        usage = chunk.usage or usage
    return out + events.finish(finish_reason, usage)


def parsed(stream: bytes) -> list[dict[str, Any]]:
    """The events, each checked as framed: an ``event:`` line naming the data's type."""
    assert stream.endswith(b"\n\n") and b"[DONE]" not in stream
    events = []
    for block in stream[:-2].split(b"\n\n"):
        name, data = block.split(b"\n")
        assert name.startswith(b"event: ") and data.startswith(b"data: ")
        event = orjson.loads(data[len(b"data: ") :])
        assert event["type"] == name[len(b"event: ") :].decode()
        events.append(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    return events


def kinds(events: list[dict[str, Any]]) -> list[str]:
    return [event["type"].removeprefix("response.") for event in events]


TEXT_STREAM = [
    chat_chunk({"role": "assistant", "content": "", "refusal": None}),
    chat_chunk({"content": "Holiday"}),
    chat_chunk({"content": ' "cheer"\n'}),
    chat_chunk({}, "stop"),
    usage_chunk(16, 3),
]


def test_a_text_answer_is_one_message_item_in_openais_event_order() -> None:
    events = parsed(relayed(TEXT_STREAM))
    assert kinds(events) == [
        "created", "in_progress", "output_item.added", "content_part.added",
        "output_text.delta", "output_text.delta", "output_text.done", "content_part.done",
        "output_item.done", "completed",
    ]  # fmt: skip
    created, in_progress, added, part_added, first, second, text_done = events[:7]
    for opening in (created, in_progress):
        assert opening["response"]["status"] == "in_progress"
        assert opening["response"]["output"] == [] and opening["response"]["usage"] is None
        assert opening["response"]["id"] == "resp_k3y-x_Y"
    message_id = "msg_k3y-x_Y_0"
    assert added == {"type": "response.output_item.added", "sequence_number": 2,
                     "output_index": 0, "item": {"id": message_id, "type": "message",
                     "status": "in_progress", "content": [], "role": "assistant"}}  # fmt: skip
    assert part_added["part"] == {"type": "output_text", "annotations": [], "logprobs": [],
                                  "text": ""}  # fmt: skip
    assert first == {"type": "response.output_text.delta", "sequence_number": 4,
                     "item_id": message_id, "output_index": 0, "content_index": 0,
                     "delta": "Holiday", "logprobs": []}  # fmt: skip
    assert second["delta"] == ' "cheer"\n'
    assert text_done["text"] == 'Holiday "cheer"\n' and text_done["logprobs"] == []
    item = events[8]["item"]
    assert item["status"] == "completed" and item["content"][0]["text"] == 'Holiday "cheer"\n'
    completed = events[-1]["response"]
    assert completed["status"] == "completed" and completed["output"] == [item]
    assert completed["usage"] == {
        "input_tokens": 16, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 3,
        "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 19,
    }  # fmt: skip
    assert completed["error"] is None and completed["incomplete_details"] is None


def call_start(index: int, call_id: str, name: str) -> str:
    call = {"index": index, "id": call_id, "type": "function",
            "function": {"name": name, "arguments": ""}}  # fmt: skip
    return chat_chunk({"tool_calls": [call]})


def arguments(index: int, piece: str) -> str:
    return chat_chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})


# Two parallel calls (openai-wire.md 2.3), their argument fragments interleaved, as a chat
# upstream may send them (clients key on index).
PARALLEL_STREAM = [
    chat_chunk({"role": "assistant", "content": None}),
    call_start(0, "call_JMW1", "get_weather"),
    arguments(0, '{"ci'),
    call_start(1, "call_DNYT", "get_stock_price"),
    arguments(1, '{"ti'),
    arguments(0, 'ty": "Par'),
    arguments(1, 'cker": "AA'),
    arguments(0, 'is"}'),
    arguments(1, 'PL"}'),
    chat_chunk({}, "tool_calls"),
    usage_chunk(149, 60),
]


def test_two_parallel_calls_in_interleaved_fragments_are_two_function_call_items() -> None:
    events = parsed(relayed(PARALLEL_STREAM))
    assert kinds(events) == [
        "created", "in_progress",
        "output_item.added",  # call 0
        "function_call_arguments.delta",
        "output_item.added",  # call 1
        "function_call_arguments.delta", "function_call_arguments.delta",
        "function_call_arguments.delta", "function_call_arguments.delta",
        "function_call_arguments.delta",
        "function_call_arguments.done", "output_item.done",  # call 0
        "function_call_arguments.done", "output_item.done",  # call 1
        "completed",
    ]  # fmt: skip
    first, second = events[2]["item"], events[4]["item"]
    assert first == {"id": "fc_k3y-x_Y_0", "type": "function_call", "status": "in_progress",
                     "arguments": "", "call_id": "call_JMW1", "name": "get_weather"}  # fmt: skip
    assert (second["id"], second["call_id"], second["name"]) == (
        "fc_k3y-x_Y_1", "call_DNYT", "get_stock_price")  # fmt: skip
    deltas = [e for e in events if e["type"] == "response.function_call_arguments.delta"]
    assert [(d["output_index"], d["item_id"][-1], d["delta"]) for d in deltas] == [
        (0, "0", '{"ci'), (1, "1", '{"ti'), (0, "0", 'ty": "Par'), (1, "1", 'cker": "AA'),
        (0, "0", 'is"}'), (1, "1", 'PL"}'),
    ]  # fmt: skip
    assert events[10] == {"type": "response.function_call_arguments.done", "sequence_number": 10,
                          "item_id": "fc_k3y-x_Y_0", "output_index": 0, "name": "get_weather",
                          "arguments": '{"city": "Paris"}'}  # fmt: skip
    assert events[12]["arguments"] == '{"ticker": "AAPL"}'
    done = [events[11]["item"], events[13]["item"]]
    assert [item["status"] for item in done] == ["completed", "completed"]
    assert events[-1]["response"]["output"] == done
    assert events[-1]["response"]["usage"]["total_tokens"] == 209


def test_the_streamed_response_ends_as_the_whole_response_of_the_same_answer() -> None:
    # What a GET of the stored answer gives is what the stream's last event gave.
    rich = RichParts()
    dialect = OpenAIDialect()
    for line in PARALLEL_STREAM:
        delta = dialect.parse_event(line).delta
        if delta:
            rich.take(delta)
    whole = whole_response(HEAD, text="", tool_calls=rich.tool_calls(), usage=Usage(149, 60),
                           finish_reason="tool_calls")  # fmt: skip
    streamed = parsed(relayed(PARALLEL_STREAM))[-1]["response"]
    assert whole == streamed


def test_length_ends_incomplete_for_max_output_tokens() -> None:
    events = parsed(relayed([chat_chunk({"content": "Once upon"}), chat_chunk({}, "length")]))
    assert kinds(events)[-2:] == ["output_item.done", "incomplete"]
    assert events[-2]["item"]["status"] == "incomplete"
    response = events[-1]["response"]
    assert response["status"] == "incomplete"
    assert response["incomplete_details"] == {"reason": "max_output_tokens"}
    assert response["usage"]["total_tokens"] == 0  # none reported: zeros, never missing


def test_a_failure_mid_stream_ends_with_the_error_and_response_failed() -> None:
    events = ResponseEvents(HEAD)
    out = events.start() + events.text("Half an ans")
    error = ChatRelayError(502, "The upstream failed: server_error.", code="upstream_error",
                           type="upstream_error")  # fmt: skip
    out += events.fail(error, Usage(10, 4))
    out += events.text("wer") + events.finish("stop", None)  # too late: nothing more
    parsed_events = parsed(out)
    assert kinds(parsed_events) == [
        "created", "in_progress", "output_item.added", "content_part.added",
        "output_text.delta", "error", "failed",
    ]  # fmt: skip
    assert parsed_events[-2] == {"type": "error", "sequence_number": 5, "error": {
        "type": "upstream_error", "code": "upstream_error",
        "message": "The upstream failed: server_error.", "param": None}}  # fmt: skip
    response = parsed_events[-1]["response"]
    assert response["status"] == "failed"
    assert response["error"] == {"code": "upstream_error",
                                 "message": "The upstream failed: server_error."}  # fmt: skip
    assert response["output"][0]["status"] == "incomplete"
    assert response["output"][0]["content"][0]["text"] == "Half an ans"
    assert response["usage"]["output_tokens"] == 4


def test_reasoning_then_text_is_a_reasoning_item_with_its_summary_then_the_message() -> None:
    lines = [
        chat_chunk({"role": "assistant", "content": "", "reasoning_content": ""}),
        chat_chunk({"reasoning_content": "Twelve and "}),
        # vLLM sent both names, one a copy of the other: taken once.
        chat_chunk({"reasoning": "seven.", "reasoning_content": "seven."}),
        chat_chunk({"content": "19"}),
        chat_chunk({}, "stop"),
    ]
    events = parsed(relayed(lines))
    assert kinds(events) == [
        "created", "in_progress",
        "output_item.added", "reasoning_summary_part.added",
        "reasoning_summary_text.delta", "reasoning_summary_text.delta",
        "reasoning_summary_text.done", "reasoning_summary_part.done", "output_item.done",
        "output_item.added", "content_part.added", "output_text.delta", "output_text.done",
        "content_part.done", "output_item.done", "completed",
    ]  # fmt: skip
    assert events[4]["summary_index"] == 0 and events[4]["item_id"] == "rs_k3y-x_Y_0"
    summary = [{"type": "summary_text", "text": "Twelve and seven."}]
    assert events[8]["item"] == {"id": "rs_k3y-x_Y_0", "type": "reasoning", "summary": summary}
    assert events[9]["output_index"] == 1 and events[9]["item"]["id"] == "msg_k3y-x_Y_1"


def test_a_refusal_is_a_refusal_part() -> None:
    lines = [
        chat_chunk({"role": "assistant", "content": None, "refusal": ""}),
        chat_chunk({"refusal": "I'm"}),
        chat_chunk({"refusal": " sorry."}),
        chat_chunk({}, "stop"),
    ]
    events = parsed(relayed(lines))
    assert kinds(events)[2:-1] == [
        "output_item.added", "content_part.added", "refusal.delta", "refusal.delta",
        "refusal.done", "content_part.done", "output_item.done",
    ]  # fmt: skip
    assert events[3]["part"] == {"type": "refusal", "refusal": ""}
    assert events[6]["refusal"] == "I'm sorry."
    assert events[-1]["response"]["output"][0]["content"] == [
        {"type": "refusal", "refusal": "I'm sorry."}
    ]


def test_text_from_the_event_buffer_is_taken_as_escaped_json() -> None:
    piece = 'a "quoted"\nline \u00e9'
    from_text = ResponseEvents(HEAD)
    from_buffer = ResponseEvents(HEAD)
    assert from_text.text(piece) == from_buffer.escaped_text(bytearray(orjson.dumps(piece)[1:-1]))
    assert from_text.finish("stop", None) == from_buffer.finish("stop", None)


def test_a_stopped_answer_ends_cancelled() -> None:
    events = ResponseEvents(HEAD)
    out = events.start() + events.text("Partial") + events.stop(Usage(5, 1))
    last = parsed(out)[-1]
    assert last["type"] == "response.incomplete"  # the stream has no response.cancelled
    assert last["response"]["status"] == "cancelled"
    assert last["response"]["output"][0]["status"] == "incomplete"
    assert events.snapshot()["status"] == "cancelled"


def test_the_whole_response_of_an_answer() -> None:
    calls = [{"id": "call_1", "type": "function",
              "function": {"name": "add", "arguments": '{"a":12,"b":7}'}}]  # fmt: skip
    echo = {"instructions": "Be terse.", "store": False, "metadata": {"k": "v"}}
    head = ResponseHead("resp_abc", "m", 5, echo)
    response = whole_response(head, text="Let me add.", tool_calls=calls, reasoning="Adding.",
                              usage=Usage(865, 163), finish_reason="tool_calls")  # fmt: skip
    assert response["output"] == [
        {"id": "rs_abc_0", "type": "reasoning",
         "summary": [{"type": "summary_text", "text": "Adding."}]},
        {"id": "msg_abc_1", "type": "message", "status": "completed", "role": "assistant",
         "content": [{"type": "output_text", "annotations": [], "logprobs": [],
                      "text": "Let me add."}]},
        {"id": "fc_abc_2", "type": "function_call", "status": "completed",
         "arguments": '{"a":12,"b":7}', "call_id": "call_1", "name": "add"},
    ]  # fmt: skip
    assert response["usage"]["input_tokens"] == 865 and response["usage"]["total_tokens"] == 1028
    assert (response["object"], response["status"]) == ("response", "completed")
    assert response["created_at"] == 5
    assert response["instructions"] == "Be terse." and response["store"] is False
    assert response["metadata"] == {"k": "v"} and response["tool_choice"] == "auto"
    empty = whole_response(head, text="")
    assert empty["output"][0]["content"][0]["text"] == ""  # output_text readers get ""
    cut = whole_response(head, text="Once", finish_reason="length")
    assert cut["status"] == "incomplete" and cut["output"][0]["status"] == "incomplete"
    failed = whole_response(head, text="", error=ChatRelayError(502, "gone", code="upstream_error"))
    assert failed["status"] == "failed" and failed["output"] == []
    assert failed["error"] == {"code": "upstream_error", "message": "gone"}
    stopped = whole_response(head, text="Par", stopped=True)
    assert stopped["status"] == "cancelled"


def test_an_item_id_leads_back_to_its_response_and_place() -> None:
    for kind in ("message", "function_call", "reasoning"):
        assert item_place(item_id("resp_k3y-x_Y", kind, 12)) == ("resp_k3y-x_Y", 12)
    assert item_place("msg_0f35abc") is None  # not one of chatrelay's: OpenAI's own
    assert item_place("call_k3y_1") is None
