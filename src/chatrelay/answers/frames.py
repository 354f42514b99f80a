"""OpenAI ``chat.completion.chunk`` frames, encoded for the wire.

A content frame is built from two byte templates around the JSON-escaped token instead of a
dict per token: this runs once per token for every follower, so it is kept to
one ``orjson.dumps`` of a string and two concatenations.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from chatrelay.sse import DONE
from chatrelay.upstreams.chunk import Usage

__all__ = ["DONE", "OpenAIFrames"]


class OpenAIFrames:
    """Encodes the frames of one answer: role, content tokens, the final chunk, errors."""

    # Slots: every finished answer kept for re-attaching keeps its encoder.
    __slots__ = ("completion_id", "content_template", "created", "model")

    def __init__(self, completion_id: str, model: str, created: int | None = None) -> None:
        self.completion_id = completion_id
        self.model = model
        self.created = int(time.time()) if created is None else created
        head = self._envelope()
        head["choices"] = [{"index": 0, "delta": {"content": "\x00"}, "finish_reason": None}]
        prefix, suffix = orjson.dumps(head).split(b'"\\u0000"')
        # What goes before and after a token's escaped JSON text (quotes included).
        self.content_template = (b"data: " + prefix + b'"', b'"' + suffix + b"\n\n")

    def _envelope(self) -> dict[str, Any]:
        return {
            "id": self.completion_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
        }

    def _frame(self, obj: dict[str, Any]) -> bytes:
        return b"data: " + orjson.dumps(obj) + b"\n\n"

    def content(self, text: str) -> bytes:
        prefix, suffix = self.content_template
        return prefix + orjson.dumps(text)[1:-1] + suffix

    def rich(self, delta: dict[str, Any], logprobs: Any) -> bytes:
        """A delta that is more than text, as the upstream sent it (its fields in their
        order), in this answer's envelope: the text chunk's template around the delta, no
        dict built for the envelope."""
        prefix = self.content_template[0][: -len(_CONTENT_OPENING)]
        if logprobs is None:
            return prefix + orjson.dumps(delta) + _NO_LOGPROBS
        return b'%s%s,"logprobs":%s%s' % (
            prefix,
            orjson.dumps(delta),
            orjson.dumps(logprobs),
            _CHOICE_END,
        )

    def role(self) -> bytes:
        obj = self._envelope()
        delta = {"role": "assistant", "content": ""}
        obj["choices"] = [{"index": 0, "delta": delta, "finish_reason": None}]
        return self._frame(obj)

    def final(self, finish_reason: str, usage: Usage | None, *, status: str) -> bytes:
        obj = self._envelope()
        obj["choices"] = [{"index": 0, "delta": {}, "finish_reason": finish_reason}]
        if usage is not None:
            obj["usage"] = _usage_fields(usage)
        if status != "complete":
            obj["x_chatrelay"] = {"status": status}
        return self._frame(obj)

    def usage(self, usage: Usage) -> bytes:
        """OpenAI's ``include_usage`` chunk: empty ``choices``, the whole answer's usage."""
        obj = self._envelope()
        obj["choices"] = []
        obj["usage"] = _usage_fields(usage)
        return self._frame(obj)

    def error(self, message: str, *, type: str, code: str) -> bytes:
        obj = self._envelope()
        obj["choices"] = []
        obj["error"] = {"message": message, "type": type, "code": code}
        return self._frame(obj)


# How the content template's delta begins: the rich frame puts the whole delta there instead.
_CONTENT_OPENING = b'{"content":"'
_CHOICE_END = b',"finish_reason":null}]}\n\n'
_NO_LOGPROBS = b',"logprobs":null' + _CHOICE_END


def _usage_fields(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }
