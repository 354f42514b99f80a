"""Incremental Server-Sent Events (``text/event-stream``) decoder and encoder.

Pure functions and state machines, no I/O.

Why hand-written: the relay feeds raw bytes straight from the socket's read callback
(upstreams/http1.py: arbitrary cut points) and needs the exact
WHATWG "event stream interpretation" semantics, including CR-only line endings,
a CR/LF pair split across two reads, a BOM split across reads and UTF-8
characters split across reads.  ``httpx-sse`` is tied to httpx's own line
iteration and ``sse-starlette`` is server-side only, so neither fits.

It is on the hot path (every upstream chunk goes through it), so it works on
bytes, splits lines with the C-level ``bytes.splitlines`` (which knows exactly
``\\r\\n``, ``\\n`` and ``\\r``), never re-scans buffered bytes, and decodes
UTF-8 once per complete line.

Decoding::

    decoder = SSEDecoder()
    async for chunk in response.content.iter_any():
        for event in decoder.feed(chunk):
            handle(event.event, event.data)
    for event in decoder.flush():  # end of stream
        handle(event.event, event.data)

Encoding::

    out.write(encode_event(b'{"choices": []}'))  # b'data: {"choices": []}\\n\\n'
    out.write(encode_comment("keep-alive"))       # b': keep-alive\\n\\n'
    out.write(DONE)                               # b'data: [DONE]\\n\\n'
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields

__all__ = [
    "DONE",
    "EventTooLarge",
    "SSEDecoder",
    "ServerSentEvent",
    "encode_comment",
    "encode_event",
]

_BOM = b"\xef\xbb\xbf"
_LF = 0x0A
_CR = 0x0D
_NEWLINE_RE = re.compile(r"\r\n|\r|\n")
_NEWLINE_BYTES_RE = re.compile(rb"\r\n|\r|\n")

DONE: bytes = b"data: [DONE]\n\n"
"""The OpenAI end-of-stream sentinel event."""

MAX_EVENT_BYTES = 1024 * 1024
"""What one line, or one event's data, may hold by default: far more than any chunk of an LLM
stream (a whole tool call's arguments at once included), and a bound on what a stream that
never ends its line holds in memory."""


class EventTooLarge(ValueError):
    """A line, or an event's data, grew past the decoder's ``max_bytes``."""


@dataclass(slots=True, frozen=True)
class ServerSentEvent:
    """One dispatched event.

    ``data`` is the data lines joined with ``"\\n"``; ``event`` is the event type
    (``"message"`` when the block had no non-empty ``event`` field); ``id`` is the
    last event ID at dispatch time (it persists across events, ``None`` if never
    set); ``retry`` is set only if this event's block carried a valid ``retry``.
    """

    data: str
    event: str = "message"
    id: str | None = None
    retry: int | None = None


class SSEDecoder:
    """Feed bytes in arbitrary pieces; get complete events.

    >>> d = SSEDecoder()
    >>> d.feed(b"data: hel")
    []
    >>> d.feed(b"lo\\n\\n: ping\\n\\n")
    [ServerSentEvent(data='hello', event='message', id=None, retry=None)]
    >>> d.comments
    1

    Implements the WHATWG HTML "event stream interpretation", with one
    deliberate deviation in :meth:`flush` (see there).

    ``comments`` counts comment lines (starting with ``:``) seen so far, so a
    caller can tell keep-alives from silence.  ``last_event_id`` is the
    stream's last event ID string (updated at every blank line, like a
    browser's ``EventSource``; persists across :meth:`flush`).
    """

    __slots__ = (
        "_at_start",
        "_data",
        "_event",
        "_id_buffer",
        "_last_event_id",
        "_pending_cr",
        "_retry",
        "_tail",
        "comments",
        "max_bytes",
    )

    def __init__(self, *, max_bytes: int = MAX_EVENT_BYTES) -> None:
        self.comments: int = 0
        # A line, or an event's data lines together, past this raises EventTooLarge: what
        # a peer that never ends its line (or its event) makes the decoder hold is bounded.
        self.max_bytes = max_bytes
        self._last_event_id: str | None = None
        # Unterminated bytes of the current line; never contains CR or LF.
        self._tail = bytearray()
        # The previous chunk ended in CR: a LF at the start of the next chunk
        # belongs to the same line ending.
        self._pending_cr = False
        # Still at the very start of the stream (BOM not yet decided).
        self._at_start = True
        # Per-event buffers.
        self._data: list[str] = []
        self._event = ""
        self._retry: int | None = None
        # The "last event ID buffer": set by id fields, copied to
        # ``last_event_id`` on dispatch, never reset by dispatch.
        self._id_buffer: str | None = None

    @property
    def last_event_id(self) -> str | None:
        """The last event ID string (what to send as ``Last-Event-ID`` on reconnect)."""
        return self._last_event_id

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Consume ``chunk`` (any size, cut anywhere); return events completed by it."""
        if not chunk:
            return []
        if self._pending_cr:
            self._pending_cr = False
            if chunk[0] == _LF:
                chunk = chunk[1:]
                if not chunk:
                    return []
        if self._at_start:
            # Strip one UTF-8 BOM at stream start, even if it arrives in pieces.
            # Until decided, the bytes seen so far sit in ``_tail`` (they hold
            # no line ending: a CR or LF is not a BOM prefix).
            head = bytes(self._tail) + chunk if self._tail else chunk
            if len(head) < 3 and _BOM.startswith(head):
                self._tail[:] = head
                return []
            self._at_start = False
            self._tail.clear()
            chunk = head[3:] if head.startswith(_BOM) else head
            if not chunk:
                return []

        last = chunk[-1]
        if last != _LF and last != _CR:
            # Fast path: no line ending at all -> just buffer (no re-scan later).
            if _LF not in chunk and _CR not in chunk:
                self._tail += chunk
                if len(self._tail) > self.max_bytes:
                    self._too_large("a line")
                return []
            lines = chunk.splitlines()
            tail = lines.pop()
        else:
            lines = chunk.splitlines()
            tail = b""
            self._pending_cr = last == _CR
        if self._tail:
            lines[0] = bytes(self._tail) + lines[0]
            self._tail.clear()
        if tail:
            self._tail += tail
            if len(tail) > self.max_bytes:
                self._too_large("a line")

        out: list[ServerSentEvent] = []
        process = self._process_line
        data_append = self._data.append
        for raw in lines:
            if not raw:
                ev = self._dispatch()
                if ev is not None:
                    out.append(ev)
            elif raw.startswith(b"data: "):
                # Fast path for the overwhelmingly common line.
                data_append(raw[6:].decode("utf-8", "replace"))
            else:
                process(raw.decode("utf-8", "replace"))
        if self._data and sum(map(len, self._data)) > self.max_bytes:
            # Data lines with no blank line to end their event (rarely any are left over
            # between reads: events end within them).
            self._too_large("an event's data")
        return out

    def _too_large(self, what: str) -> None:
        size = self.max_bytes
        self._tail.clear()
        self._data.clear()
        if size % (1024 * 1024) == 0:
            shown = f"{size // (1024 * 1024)} MiB"
        else:
            shown = f"{size // 1024} KiB" if size % 1024 == 0 else f"{size} bytes"
        raise EventTooLarge(f"{what} longer than {shown}")

    def flush(self) -> list[ServerSentEvent]:
        """Signal end of stream; return the event still pending, if any.

        Deviation from the spec (deliberately lenient): the spec discards an
        event that is not terminated by a blank line.  Some gateways close the
        connection right after the last ``data:`` line, so here an unterminated
        last line is processed and the stream end then acts as a blank line
        (an event is dispatched if the data buffer is non-empty).

        Afterwards the decoder is reset for a new stream (BOM stripping is
        re-armed); ``last_event_id`` and ``comments`` are kept.
        """
        if self._tail:
            raw = bytes(self._tail)
            self._tail.clear()
            self._process_line(raw.decode("utf-8", "replace"))
        ev = self._dispatch()
        self._pending_cr = False
        self._at_start = True
        return [] if ev is None else [ev]

    def _process_line(self, line: str) -> None:
        # ``line`` is non-empty and holds no line ending.
        if line[0] == ":":
            self.comments += 1
            return
        colon = line.find(":")
        if colon < 0:
            field = line
            value = ""
        else:
            field = line[:colon]
            value = line[colon + 1 :]
            if value[:1] == " ":
                value = value[1:]
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event = value
        elif field == "id" and "\0" not in value:  # an id with NUL is ignored
            self._id_buffer = value
        elif field == "retry" and value.isascii() and value.isdigit():
            self._retry = int(value)  # a retry that is not all ASCII digits is ignored
        # Any other field is ignored.

    def _dispatch(self) -> ServerSentEvent | None:
        # A blank line (or, leniently, the end of the stream).
        self._last_event_id = self._id_buffer
        lines = self._data
        retry = self._retry
        self._retry = None
        event = self._event
        self._event = ""
        if not lines:
            return None
        data = lines[0] if len(lines) == 1 else "\n".join(lines)
        lines.clear()  # clear in place: ``feed`` holds a bound ``append``
        return _new_event(data, event or "message", self._id_buffer, retry)


# A frozen dataclass's generated ``__init__`` assigns each field through
# ``object.__setattr__``, a large share of the decoder's cost per event
# (docs/performance.md#sse-events).  On the hot path we build events by writing
# the slots directly; the result is an ordinary, equal, hashable ServerSentEvent.
assert tuple(f.name for f in fields(ServerSentEvent)) == ("data", "event", "id", "retry")
_object_new = object.__new__
_set_data = vars(ServerSentEvent)["data"].__set__
_set_event = vars(ServerSentEvent)["event"].__set__
_set_id = vars(ServerSentEvent)["id"].__set__
_set_retry = vars(ServerSentEvent)["retry"].__set__


def _new_event(data: str, event: str, id: str | None, retry: int | None) -> ServerSentEvent:
    ev: ServerSentEvent = _object_new(ServerSentEvent)
    _set_data(ev, data)
    _set_event(ev, event)
    _set_id(ev, id)
    _set_retry(ev, retry)
    return ev


def _check_field(name: str, value: str) -> None:
    if "\n" in value or "\r" in value:
        raise ValueError(f"SSE {name} must not contain a line break: {value!r}")


def encode_event(
    data: str | bytes,
    *,
    id: str | None = None,
    event: str | None = None,
    retry: int | None = None,
) -> bytes:
    """Encode one event as ``[id:][event:][retry:]data:...`` lines plus a blank line.

    >>> encode_event(b'{"a":1}')
    b'data: {"a":1}\\n\\n'
    >>> encode_event("a\\r\\nb", event="x", id="7")
    b'id: 7\\nevent: x\\ndata: a\\ndata: b\\n\\n'

    ``data`` is split on ``\\r\\n``, ``\\r`` and ``\\n`` into one ``data:`` line
    each, so those line breaks all decode back as ``\\n``.  Bytes are never
    decoded (compact JSON without line breaks is passed straight through).
    ``id``/``event`` with a line break, an ``id`` with NUL (receivers ignore it)
    or a negative ``retry`` raise ``ValueError``.  An empty ``event`` is omitted
    (it means ``"message"``).
    """
    prefix = b""
    if id is not None or event or retry is not None:
        parts: list[bytes] = []
        if id is not None:
            _check_field("id", id)
            if "\0" in id:
                raise ValueError(f"SSE id must not contain NUL: {id!r}")
            parts.append(b"id: " + id.encode() + b"\n")
        if event:
            _check_field("event", event)
            parts.append(b"event: " + event.encode() + b"\n")
        if retry is not None:
            if retry < 0:
                raise ValueError(f"SSE retry must be >= 0: {retry!r}")
            parts.append(b"retry: %d\n" % retry)
        prefix = b"".join(parts)

    raw = data if isinstance(data, bytes) else data.encode()
    if b"\n" not in raw and b"\r" not in raw:
        return prefix + b"data: " + raw + b"\n\n"
    body = b"\ndata: ".join(_NEWLINE_BYTES_RE.split(raw))
    return prefix + b"data: " + body + b"\n\n"


def encode_comment(text: str = "") -> bytes:
    """Encode a comment block, e.g. a keep-alive: ``encode_comment("ping") == b": ping\\n\\n"``.

    ``encode_comment()`` gives ``b":\\n\\n"``.  Multi-line text becomes one comment
    line per line.
    """
    if not text:
        return b":\n\n"
    return b"".join(b": " + line.encode() + b"\n" for line in _NEWLINE_RE.split(text)) + b"\n"
