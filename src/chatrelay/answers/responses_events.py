"""The Responses API's stream of events (openai-wire.md 4.3), from an answer's Chat
Completions pieces as the relay sees them.

An answer relayed from a chat upstream is text pieces, reasoning pieces, a refusal and tool
call fragments keyed by ``index``; a response is a list of output items, each announced
(``response.output_item.added``), filled (its deltas) and closed (``.done``), every event
numbered from 0 (``sequence_number``) and the stream ended by ``response.completed``,
``.incomplete`` or ``.failed``, never ``[DONE]``. ``ResponseEvents`` turns the one into the
other as the pieces come.

The order of items is the order their first piece came: usually the reasoning, the message
(its ``output_text`` part, or a ``refusal`` part), then one ``function_call`` item per call.
A reasoning or message item is closed when something else begins, as OpenAI closes each item
before the next; function calls stay open until the answer ends, because a chat upstream may
interleave the fragments of parallel calls (clients key their deltas on ``output_index``, so
several open calls are read right), and all close then, in output order.

Reasoning is given as the item's summary (``response.reasoning_summary_*`` events): the only
reasoning text the AI SDK reads (openai-wire.md 4.5), and all a chat upstream has of it.

Usage::

    events = ResponseEvents(ResponseHead(response_id, model, created_at, form.echo))
    send(events.start())
    for chunk in chunks:
        send(events.take(chunk))
    send(events.finish(finish_reason, usage))     # or events.stop(usage), events.fail(error)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from chatrelay.answers.responses_output import (
    TERMINAL_EVENTS,
    ResponseHead,
    Status,
    call_id_for,
    call_item,
    ending_of,
    error_of,
    item_id,
    message_item,
    part_of,
    reasoning_item,
    response_object,
    usage_fields,
)
from chatrelay.errors import ChatRelayError
from chatrelay.upstreams.chunk import UpstreamChunk, Usage

# The delta events, the one event per token: put together from bytes around the piece's
# escaped JSON text, no dict built per token (docs/architecture.md, hot-path rules). Each
# part's template is made when the part opens, its ids in it: a sequence number and the
# piece are all a token adds.
_DELTAS = {
    "output_text": (b"response.output_text.delta", b"content_index", b',"logprobs":[]'),
    "refusal": (b"response.refusal.delta", b"content_index", b""),
    "summary_text": (b"response.reasoning_summary_text.delta", b"summary_index", b""),
}


def _delta_template(kind: str, quoted_id: bytes, output_index: int, index: int) -> bytes:
    name, index_key, tail = _DELTAS[kind]
    return (
        b'event: %s\ndata: {"type":"%s","sequence_number":%%d,"item_id":%s,"output_index":%d,'
        b'"%s":%d,"delta":"%%s"%s}\n\n'
        % (name, name, quoted_id.replace(b"%", b"%%"), output_index, index_key, index, tail)
    )


_ARGUMENTS_DELTA = (
    b'event: response.function_call_arguments.delta\ndata: {"type":'
    b'"response.function_call_arguments.delta","sequence_number":%d,"item_id":%s,'
    b'"output_index":%d,"delta":"%s"}\n\n'
)
# Per part kind: its added/done events, the key of its index, the done event's text key.
_PART_EVENTS = {
    "output_text": ("response.content_part", "content_index", "response.output_text", "text"),
    "refusal": ("response.content_part", "content_index", "response.refusal", "refusal"),
    "summary_text": (
        "response.reasoning_summary_part",
        "summary_index",
        "response.reasoning_summary_text",
        "text",
    ),
}


class _Part:
    __slots__ = ("escaped", "kind", "template")

    def __init__(self, kind: str, template: bytes = b"") -> None:
        self.kind = kind
        # Its pieces as escaped JSON text, back to back (one object, not one per token, as
        # the event buffer keeps them), decoded once when its text is asked for.
        self.escaped = bytearray()
        self.template = template  # its delta event, but for the sequence number and piece

    def text(self) -> str:
        text: str = orjson.loads(b'"%s"' % self.escaped)
        return text


class _Item:
    __slots__ = ("call_id", "given_id", "id", "index", "kind", "name", "parts", "quoted", "status")

    def __init__(self, kind: str, id: str, index: int) -> None:
        self.kind = kind
        self.id = id
        self.quoted = orjson.dumps(id)  # as the delta events' bytes carry it
        self.index = index
        self.parts: list[_Part] = []
        self.status = "in_progress"
        self.call_id = ""
        self.given_id = False  # whether the call id is the upstream's
        self.name = ""

    def as_dict(self) -> dict[str, Any]:
        if self.kind == "function_call":
            arguments = self.parts[0].text() if self.parts else ""
            return call_item(self.id, self.call_id, self.name, arguments, self.status)
        if self.kind == "reasoning":
            return reasoning_item(self.id, [part.text() for part in self.parts])
        parts = [part_of(part.kind, part.text()) for part in self.parts]
        return message_item(self.id, parts, self.status)


class ResponseEvents:
    """The event stream of one response, fed the answer's pieces as the relay sees them.

    Each method returns the bytes of the events it makes (``event: <type>`` and ``data:``
    lines), ``b""`` when a piece makes none; one instance per stream, since its sequence
    numbers are that stream's. ``start`` first; ``take`` (or ``text``/``escaped_text`` and
    ``delta``) as the answer goes; then one of ``finish``, ``stop`` or ``fail``."""

    __slots__ = ("_calls", "_head", "_items", "_open", "_sequence", "_status", "_text")

    def __init__(self, head: ResponseHead) -> None:
        self._head = head
        self._sequence = 0
        self._items: list[_Item] = []
        self._open: _Item | None = None  # the reasoning or message item taking pieces
        self._calls: dict[int, _Item] = {}  # by the chat delta's index
        self._status: Status = "in_progress"
        self._text: _Part | None = None  # the output_text part taking text, if one is open

    def start(self) -> bytes:
        """``response.created`` and ``response.in_progress``."""
        response = self.snapshot()
        return self._event("response.created", {"response": response}) + self._event(
            "response.in_progress", {"response": response}
        )

    def take(self, chunk: UpstreamChunk) -> bytes:
        """A chunk's text and rich delta; its finish reason and usage go to ``finish``."""
        if chunk.delta is None:
            return self.text(chunk.content)
        return self.delta(chunk.delta, chunk.content)

    def text(self, piece: str) -> bytes:
        """A text piece of the answer (``escaped_text`` inlined: this runs per token)."""
        part = self._text
        if part is None or not piece:  # the first piece of a text part, or none
            return self._piece("output_text", orjson.dumps(piece)[1:-1]) if piece else b""
        escaped = orjson.dumps(piece)[1:-1]
        part.escaped += escaped
        sequence = self._sequence
        self._sequence = sequence + 1
        return part.template % (sequence, escaped)

    def escaped_text(self, escaped: bytes | bytearray) -> bytes:
        """A text piece as the event buffer keeps it: escaped JSON text, no quotes."""
        part = self._text
        if part is None or not escaped:  # the first piece of a text part, or none
            return self._piece("output_text", escaped) if escaped else b""
        part.escaped += escaped
        sequence = self._sequence
        self._sequence = sequence + 1
        return part.template % (sequence, escaped)

    def delta(self, delta: Mapping[str, Any], text: str = "") -> bytes:
        """A chat delta that is more than text: reasoning (``reasoning_content``, or vLLM's
        ``reasoning``, not both: vLLM sent each as a copy of the other), its ``text``,
        ``refusal``, ``tool_calls`` fragments (and the legacy ``function_call``)."""
        if self._status != "in_progress":
            return b""
        out = b""
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            out += self._piece("summary_text", orjson.dumps(reasoning)[1:-1])
        out += self.text(text)
        refusal = delta.get("refusal")
        if isinstance(refusal, str) and refusal:
            out += self._piece("refusal", orjson.dumps(refusal)[1:-1])
        calls = delta.get("tool_calls")
        for fragment in calls if isinstance(calls, list) else ():
            if isinstance(fragment, dict):
                out += self._fragment(fragment)
        legacy = delta.get("function_call")
        if isinstance(legacy, dict):
            out += self._fragment({"index": -1, "function": legacy})
        return out

    def finish(self, finish_reason: str | None, usage: Usage | None) -> bytes:
        """The end of an answer its upstream finished: ``response.completed``, or
        ``response.incomplete`` when it was cut short (``length``: ``max_output_tokens``)."""
        status, reason = ending_of(finish_reason)
        return self._end(status, usage, reason=reason)

    def stop(self, usage: Usage | None) -> bytes:
        """The end of an answer its owner stopped: status ``cancelled``."""
        return self._end("cancelled", usage)

    def fail(self, error: ChatRelayError, usage: Usage | None = None) -> bytes:
        """A failure: the ``error`` event as OpenAI sends it (nested, so openai-python raises
        it, openai-wire.md 4.4), then ``response.failed`` carrying it. Never a silent cut."""
        if self._status != "in_progress":
            return b""
        detail = {"type": error.type, "code": error.code, "message": error.message}
        out = self._event("error", {"error": {**detail, "param": error.param}})
        return out + self._end("failed", usage, error=error_of(error))

    def snapshot(self, usage: Usage | None = None) -> dict[str, Any]:
        """The response object as it stands."""
        ended = self._status != "in_progress"
        return response_object(
            self._head,
            status=self._status,
            output=[item.as_dict() for item in self._items],
            usage=usage_fields(usage) if ended or usage else None,
        )

    def _event(self, kind: str, fields: dict[str, Any]) -> bytes:
        sequence = self._sequence
        self._sequence = sequence + 1
        data = orjson.dumps({"type": kind, "sequence_number": sequence, **fields})
        return b"event: %s\ndata: %s\n\n" % (kind.encode(), data)

    def _piece(self, kind: str, escaped: bytes | bytearray) -> bytes:
        """A piece of the message's text or refusal, or of the reasoning."""
        if self._status != "in_progress":
            return b""
        item = self._open
        out = b""
        wanted = "reasoning" if kind == "summary_text" else "message"
        if item is None or item.kind != wanted:
            out = self._close_open() + self._add(wanted)
            item = self._open
            assert item is not None
        parts = item.parts
        if not parts or parts[-1].kind != kind:
            if parts:
                out += self._close_part(item, parts[-1])
            out += self._open_part(item, kind)
        part = parts[-1]
        part.escaped += escaped
        sequence = self._sequence
        self._sequence = sequence + 1
        return out + part.template % (sequence, escaped)

    def _fragment(self, fragment: Mapping[str, Any]) -> bytes:
        """One ``tool_calls`` fragment: keyed by ``index`` as the SDKs key them (no index and
        no id: the last call goes on), the call's id and name from the fragments that have
        them, its arguments concatenated."""
        index, call_id = fragment.get("index"), fragment.get("id")
        function = fragment.get("function")
        function = function if isinstance(function, dict) else {}
        name = function.get("name")
        if isinstance(index, int):
            key = index
        else:
            key = max(self._calls) if self._calls and not call_id else len(self._calls)
        item = self._calls.get(key)
        out = b""
        if item is None:
            out = self._close_open()
            output_index = len(self._items)
            item = _Item(
                "function_call", item_id(self._head.id, "function_call", output_index), output_index
            )
            item.call_id = call_id_for(self._head.id, output_index)
            self._items.append(item)
            self._calls[key] = item
        if isinstance(call_id, str) and call_id and not item.given_id:
            item.call_id, item.given_id = call_id, True
        if isinstance(name, str) and name:
            item.name = name
        if not item.parts:  # just added: announced with what its first fragment said
            item.parts.append(_Part("arguments"))
            out += self._event(
                "response.output_item.added", {"output_index": item.index, "item": item.as_dict()}
            )
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            escaped = orjson.dumps(arguments)[1:-1]
            item.parts[0].escaped += escaped
            sequence = self._sequence
            self._sequence = sequence + 1
            out += _ARGUMENTS_DELTA % (sequence, item.quoted, item.index, escaped)
        return out

    def _add(self, kind: str) -> bytes:
        index = len(self._items)
        item = self._open = _Item(kind, item_id(self._head.id, kind, index), index)
        self._items.append(item)
        return self._event(
            "response.output_item.added", {"output_index": index, "item": item.as_dict()}
        )

    def _open_part(self, item: _Item, kind: str) -> bytes:
        index = len(item.parts)
        part = _Part(kind, _delta_template(kind, item.quoted, item.index, index))
        item.parts.append(part)
        if kind == "output_text":
            self._text = part
        prefix, index_key, _, _ = _PART_EVENTS[kind]
        return self._event(
            f"{prefix}.added",
            {
                "item_id": item.id,
                "output_index": item.index,
                index_key: len(item.parts) - 1,
                "part": part_of(kind, ""),
            },
        )

    def _close_part(self, item: _Item, part: _Part) -> bytes:
        if part is self._text:
            self._text = None
        prefix, index_key, text_prefix, text_key = _PART_EVENTS[part.kind]
        text = part.text()
        where = {"item_id": item.id, "output_index": item.index, index_key: item.parts.index(part)}
        done: dict[str, Any] = {**where, text_key: text}
        if part.kind == "output_text":
            done["logprobs"] = []
        return self._event(f"{text_prefix}.done", done) + self._event(
            f"{prefix}.done", {**where, "part": part_of(part.kind, text)}
        )

    def _close(self, item: _Item, status: str) -> bytes:
        """An item's closing events: its last part's, then ``response.output_item.done``."""
        out = b""
        if item.kind == "function_call":
            done = {
                "item_id": item.id,
                "output_index": item.index,
                "name": item.name,
                "arguments": item.parts[0].text(),
            }
            out = self._event("response.function_call_arguments.done", done)
        elif item.parts:
            out = self._close_part(item, item.parts[-1])
        item.status = status
        done_item = {"output_index": item.index, "item": item.as_dict()}
        return out + self._event("response.output_item.done", done_item)

    def _close_open(self) -> bytes:
        item, self._open = self._open, None
        return b"" if item is None else self._close(item, "completed")

    def _end(
        self,
        status: Status,
        usage: Usage | None,
        *,
        reason: str | None = None,
        error: dict[str, Any] | None = None,
    ) -> bytes:
        if self._status != "in_progress":
            return b""
        out = b""
        done = "completed" if status == "completed" else "incomplete"
        for item in self._items:  # still open: the message or reasoning, and the calls
            if item.status != "in_progress":
                continue
            if error is None:
                out += self._close(item, done)
            else:  # a failed response's items are left unclosed: its error says why
                item.status = "incomplete"
        self._open = self._text = None
        self._status = status
        response = response_object(
            self._head,
            status=status,
            output=[item.as_dict() for item in self._items],
            usage=usage_fields(usage),
            error=error,
            incomplete_reason=reason,
        )
        return out + self._event(TERMINAL_EVENTS[status], {"response": response})
