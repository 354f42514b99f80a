"""One answer as the Responses API gives it: its event stream for one follower
(``ResponseShape``), and its response object whole (``whole_of``).

The answer is relayed once, in Chat Completions frames (answers/answer.py); a Responses
follower reads the same event buffer through this shape, so a response streams, stops, fails
over and is stored exactly as a chat completion is. Text tokens go straight from the buffer's
escaped JSON text into the delta event's bytes; only the rarer deltas that are more than text
(tool call fragments, reasoning, refusal) are parsed from their frame.
"""

from __future__ import annotations

from typing import Any

import orjson

from chatrelay.answers.answer import Answer
from chatrelay.answers.responses_events import ResponseEvents
from chatrelay.answers.responses_output import ResponseHead, whole_response

RESPONSE_PREFIX = "resp_"
ANSWER_PREFIX = "msg_"


def response_id(answer_id: str) -> str:
    """The response id of an answer: ``resp_<key>`` for ``msg_<key>``."""
    return RESPONSE_PREFIX + answer_id.removeprefix(ANSWER_PREFIX)


def answer_id_of(response_id: str) -> str | None:
    """The answer a response id names; None for an id chatrelay never gave."""
    if not response_id.startswith(RESPONSE_PREFIX) or len(response_id) > 40:
        return None
    return ANSWER_PREFIX + response_id.removeprefix(RESPONSE_PREFIX)


class ResponseShape:
    """The Responses API's events of one answer, for one follower (``events.FrameShape``).
    ``start()`` first (``response.created``, ``response.in_progress``), then what
    ``EventBuffer.follow(shape=...)`` gives."""

    __slots__ = ("_answer", "_events")

    def __init__(self, answer: Answer, head: ResponseHead) -> None:
        self._answer = answer
        self._events = ResponseEvents(head)

    def start(self) -> bytes:
        return self._events.start()

    def content(self, escaped: bytes | bytearray, count: int) -> bytes:
        return self._events.escaped_text(escaped)

    def whole(self, frame: bytes) -> bytes:
        if frame.startswith(b":"):
            return frame  # a comment (keep-alive, "waiting for the upstream")
        delta = _delta_of(frame)
        if not delta:  # [DONE]
            return b""
        text = delta.get("content")
        return self._events.delta(delta, text if isinstance(text, str) else "")

    def rich(self, frame: bytes, escaped: bytes | bytearray, count: int) -> bytes:
        return self.whole(frame)  # its text is in its delta, with the rest

    def ending(self) -> bytes:
        answer = self._answer
        if answer.error is not None:
            return self._events.fail(answer.error, answer.usage)
        if answer.status == "stopped":
            return self._events.stop(answer.usage)
        return self._events.finish(answer.finish_reason, answer.usage)


def _delta_of(frame: bytes) -> dict[str, Any] | None:
    """The delta of one of the answer's own chunk frames (``data: {...}``)."""
    if not frame.startswith(b"data: {"):
        return None
    choices = orjson.loads(frame[6:]).get("choices") or ()
    delta = choices[0].get("delta") if choices else None
    return delta if isinstance(delta, dict) else None


def whole_of(answer: Answer, head: ResponseHead) -> dict[str, Any]:
    """The response object of an answer: ended, or as it stands (``in_progress``)."""
    rich = answer.rich
    fields = (rich.message_fields(has_text=True) if rich is not None else None) or {}
    response = whole_response(
        head,
        text=answer.text,
        tool_calls=rich.tool_calls() if rich is not None else (),
        reasoning=_text(fields.get("reasoning_content") or fields.get("reasoning")),
        refusal=_text(fields.get("refusal")),
        usage=answer.usage,
        finish_reason=answer.finish_reason,
        stopped=answer.status == "stopped",
        error=answer.error,
    )
    return response if answer.finished else in_progress(response)


def in_progress(response: dict[str, Any]) -> dict[str, Any]:
    """A response object of an answer still generating: its output so far."""
    for item in response["output"]:
        if "status" in item:
            item["status"] = "in_progress"
    return {**response, "status": "in_progress", "incomplete_details": None, "usage": None}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""
