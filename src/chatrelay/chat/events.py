"""The event buffer between a generation job and everyone listening to it.

Usage::

    buffer = EventBuffer(content_frame=(prefix, suffix))
    buffer.append(frame)                 # the job: an encoded SSE frame (role, end, error, ...)
    buffer.append_content(b"Hel")        # ... or a token, as its escaped JSON text only
    async for data in buffer.follow(after=n, ids=True):  # each listener: replays what it
        ...                                              # missed, then live
    buffer.close()

The job writes, listeners read at their own pace, and a listener going away (a closed tab)
never disturbs the job or the other listeners.

Event ids are positions: the event at index ``i`` is event ``i + 1``, so a client that saw
event ``n`` resumes with ``follow(after=n)``. They are added as ``id:`` lines on the way out
(``ids=True``), not stored: the OpenAI route relays the same frames without them.

A token is kept as its escaped JSON text alone (``Hel``, ~40 bytes with the object) and put
between the answer's frame template (``data: {"id":...,"content":"`` ... ``"}]}\n\n``) only as
it goes out: a whole frame per token (~240 bytes) was most of the memory of an open stream,
and finished answers stay for a while so that clients can re-attach. The few whole frames
(role, ending, error, comments) are told apart by their positions.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson


class EventBuffer:
    """In-process, append-only list of SSE events with any number of followers."""

    def __init__(self, content_frame: tuple[bytes, bytes] = (b'data: "', b'"\n\n')) -> None:
        self._events: list[bytes] = []
        self._whole: set[int] = set()  # the indexes of whole frames; the others are tokens
        self._prefix, self._suffix = content_frame
        self._closed = False
        self.listeners = 0  # followers right now
        # One future per waiting listener: a cancelled listener cancels only its own future.
        self._waiting: set[asyncio.Future[None]] = set()

    def __len__(self) -> int:
        return len(self._events)

    @property
    def closed(self) -> bool:
        return self._closed

    def append(self, frame: bytes) -> None:
        """A whole SSE frame."""
        self._whole.add(len(self._events))
        self._events.append(frame)
        self._wake()

    def append_content(self, escaped: bytes) -> None:
        """A token, as escaped JSON text without its quotes (``orjson.dumps(text)[1:-1]``:
        the slice is also a right-sized copy, where orjson's own result holds 4 KiB)."""
        self._events.append(escaped)
        self._wake()

    def close(self) -> None:
        self._closed = True
        self._wake()

    def _wake(self) -> None:
        if self._waiting:
            for waiter in self._waiting:
                if not waiter.done():
                    waiter.set_result(None)
            self._waiting.clear()

    def frame(self, index: int) -> bytes:
        """The SSE frame of event ``index + 1``."""
        event = self._events[index]
        return event if index in self._whole else self._prefix + event + self._suffix

    def content_text(self, start: int = 0, end: int | None = None) -> str:
        """The text of the tokens among events ``start`` to ``end`` (indexes), in one decode."""
        events, whole = self._events, self._whole
        stop = len(events) if end is None else end
        tokens = [events[i] for i in range(start, stop) if i not in whole]
        if not tokens:
            return ""
        texts: list[str] = orjson.loads(b'["' + b'","'.join(tokens) + b'"]')
        return "".join(texts)

    def content_count(self) -> int:
        return len(self._events) - len(self._whole)

    async def follow(self, after: int = 0, *, ids: bool = False) -> AsyncIterator[bytes]:
        """Frames after event ``after``, as they come; ends when the buffer is closed."""
        index = max(after, 0)
        events, whole, prefix, suffix = self._events, self._whole, self._prefix, self._suffix
        loop = asyncio.get_running_loop()  # once: each call costs a system call on 3.11
        self.listeners += 1
        try:
            while True:
                end = len(events)
                if index < end:
                    if end - index == 1:
                        event = events[index]
                        if index in whole:
                            yield with_id(end, event) if ids else event
                        elif ids:
                            yield b"id: %d\n%s%s%s" % (end, prefix, event, suffix)
                        else:
                            yield prefix + event + suffix
                    else:
                        # A burst that came while this listener was busy goes out as one write.
                        frame = self.frame
                        if ids:
                            yield b"".join([with_id(i + 1, frame(i)) for i in range(index, end)])
                        else:
                            yield b"".join([frame(i) for i in range(index, end)])
                    index = end
                    continue
                if self._closed:
                    return
                waiter = loop.create_future()
                self._waiting.add(waiter)
                try:
                    await waiter
                finally:
                    self._waiting.discard(waiter)
        finally:
            self.listeners -= 1


def with_id(event_id: int, frame: bytes) -> bytes:
    """The frame with its SSE ``id:`` line (a comment frame gets one too: harmless)."""
    return b"id: %d\n%s" % (event_id, frame)
