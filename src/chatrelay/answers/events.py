"""The event buffer between an answer and its followers.

Usage::

    buffer = EventBuffer(content_template=(prefix, suffix))
    buffer.append(frame)                 # the answer: an encoded SSE frame (role, end, error, ...)
    buffer.append_content(b"Hel")        # ... or a token, as its escaped JSON text only
    async for data in buffer.follow(after=n, ids=True):  # each follower: replays what it
        ...                                              # missed, then live
    buffer.close()

The answer writes, followers read at their own pace, and a follower going away (a closed tab)
never disturbs the answer or the other followers.

Event ids are positions: the event at index ``i`` is event ``i + 1``, so a client that saw
event ``n`` resumes with ``follow(after=n)``. They are added as ``id:`` lines on the way out
(``ids=True``), not stored: the OpenAI route relays the same frames without them.

Tokens are kept as their escaped JSON text only, back to back in one ``bytearray`` with an
array of where each event ends, and put between the answer's frame template
(``data: {"id":...,"content":"`` ... ``"}]}\n\n``) only as they go out: a whole frame per
token, even a ``bytes`` object per token, was most of the memory of an open stream, and
finished answers stay for a while so that clients can re-attach
(docs/performance.md#event-buffer). The few whole frames (role, ending, error, comments) are
kept aside by position; they take no room in the token bytes, so the tokens of any run of
events are one slice, and the text of the answer is one JSON string decode.

The ending (the final chunk, or the error that ends the answer) is marked as such
(``append_ending``): a follower on another API renders its own ending from the answer's values
(``follow(ending=...)``), so no one edits or re-parses the bytes of the page's.

Another API's shape of the same answer (Livepeer's ``/llm``: its own chunk, running usage in
every one, no ``[DONE]``) is a ``FrameShape`` given to one follower: its tokens go through the
shape's own template as they go out, the way the answer's template is used, never the OpenAI
frame rewritten.
"""

from __future__ import annotations

import asyncio
from array import array
from collections.abc import AsyncGenerator, Callable
from typing import Protocol

import orjson


class Position:
    """How far one follower has taken its events: the events before ``index`` went out (moved
    on only once the follower asks for more), so a follower cut off can be given the rest
    from there (http/event_stream.py)."""

    __slots__ = ("index",)

    def __init__(self, index: int = 0) -> None:
        self.index = index


class FrameShape(Protocol):
    """Another API's shape of an answer's events, for one follower (``follow(shape=...)``).

    Called in event order, once per event, as the events go out to that follower."""

    def content(self, escaped: bytes | bytearray, count: int) -> bytes:
        """The frame of a token, from its escaped JSON text; ``count`` is how many tokens the
        answer has up to this one (a running total for APIs that report usage per chunk)."""
        ...

    def whole(self, frame: bytes) -> bytes:
        """A whole frame (role, comment, ``[DONE]``, a delta that is more than text without
        text of the answer) in this shape; ``b""`` leaves it out."""
        ...

    def rich(self, frame: bytes, escaped: bytes | bytearray, count: int) -> bytes:
        """A delta that is more than text (answers/answer.py relay_rich) and carries text of
        the answer (``escaped``, the ``count``-th token): in an API that has no field for the
        rest, its text alone."""
        ...

    def ending(self) -> bytes:
        """The answer's ending (its final chunk or its error) in this shape."""
        ...


class EventBuffer:
    """In-process, append-only list of SSE events with any number of followers."""

    # Slots, and a list of waiters rather than a set (smaller empty): a finished answer's
    # buffer is kept a while for re-attaching clients, thousands at once
    # (docs/performance.md#event-buffer).
    __slots__ = (
        "_closed",
        "_ending_at",
        "_ends",
        "_prefix",
        "_suffix",
        "_tokens",
        "_waiting",
        "_whole",
        "followers",
    )

    def __init__(self, content_template: tuple[bytes, bytes] = (b'data: "', b'"\n\n')) -> None:
        self._tokens = bytearray()  # every token's escaped JSON text, back to back
        self._ends = array("I")  # per event: where its token bytes end in ``_tokens``
        self._whole: dict[int, bytes] = {}  # the whole frames, by index
        self._prefix, self._suffix = content_template
        self._closed = False
        self._ending_at = NO_ENDING  # the index of the ending event, once there is one
        self.followers = 0  # followers right now
        # One future per waiting follower: a cancelled follower cancels only its own future.
        self._waiting: list[asyncio.Future[None]] = []

    def __len__(self) -> int:
        return len(self._ends)

    @property
    def closed(self) -> bool:
        return self._closed

    def append(self, frame: bytes) -> None:
        """A whole SSE frame."""
        self.append_rich(frame, b"")

    def append_ending(self, frame: bytes) -> None:
        """The answer's ending as the page shows it (its final chunk, or its error): a follower
        given ``ending=`` gets its own rendering instead."""
        self._ending_at = len(self._ends)
        self.append_rich(frame, b"")

    def append_content(self, escaped: bytes) -> None:
        """A token, as escaped JSON text without its quotes (``orjson.dumps(text)[1:-1]``)."""
        self._tokens += escaped
        self._ends.append(len(self._tokens))
        self._wake()

    def append_rich(self, frame: bytes, escaped: bytes) -> None:
        """A whole frame that also carries text of the answer (a delta with more than text:
        tool calls, logprobs, ...): relayed as the frame, its text (escaped JSON, maybe
        empty) counted in the answer's text."""
        self._whole[len(self._ends)] = frame
        self._tokens += escaped
        self._ends.append(len(self._tokens))
        self._wake()

    def has_text(self) -> bool:
        return bool(self._tokens)

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
        whole = self._whole.get(index)
        if whole is not None:
            return whole
        start = self._ends[index - 1] if index else 0
        return b"%s%s%s" % (self._prefix, self._tokens[start : self._ends[index]], self._suffix)

    def frames(self, start: int, end: int | None = None, *, ids: bool = False) -> bytes:
        """The SSE frames of events ``start + 1`` to ``end`` (all the rest by default), as one
        write."""
        return _joined(self.frame, start, len(self._ends) if end is None else end, ids)

    def _shaped(self, shape: FrameShape, after: int) -> Callable[[int], bytes]:
        """``frame`` in another API's shape, for one follower going forward from ``after``.

        A closure over the buffer's storage (appended to in place, never replaced) that counts
        the tokens as it goes: one call of the shape per token, as ``frame`` is one call of
        the answer's template, and no counting back over the events for the running total."""
        whole_get, tokens, ends = self._whole.get, self._tokens, self._ends
        content, reshape, rich, ending = shape.content, shape.whole, shape.rich, shape.ending
        count = self.content_count(after)

        def frame(index: int) -> bytes:
            nonlocal count
            whole = whole_get(index)
            start = ends[index - 1] if index else 0
            if whole is not None and ends[index] == start:
                return ending() if index == self._ending_at else reshape(whole)
            count += 1
            if whole is not None:  # a delta that was more than text, with text
                return rich(whole, tokens[start : ends[index]], count)
            return content(tokens[start : ends[index]], count)

        return frame

    def content_text(self, start: int = 0, end: int | None = None) -> str:
        """The text of the tokens among events ``start`` to ``end`` (indexes), in one decode."""
        ends = self._ends
        stop = len(ends) if end is None else end
        if stop <= start:
            return ""
        first = ends[start - 1] if start else 0
        text: str = orjson.loads(b'"%s"' % self._tokens[first : ends[stop - 1]])
        return text

    def content_count(self, end: int | None = None) -> int:
        """How many of the events (before index ``end``, all by default) are tokens."""
        if end is None or end >= len(self._ends):
            return len(self._ends) - len(self._whole)
        return end - sum(1 for index in self._whole if index < end)

    async def follow(
        self,
        after: int = 0,
        *,
        ids: bool = False,
        position: Position | None = None,
        ending: Callable[[], bytes] | None = None,
        shape: FrameShape | None = None,
    ) -> AsyncGenerator[bytes, None]:
        """Frames after event ``after``, as they come; ends when the buffer is closed.
        ``position`` is kept at the first event not yet taken by the follower; ``ending``
        renders the ending event for this follower's API (checked once per write, not per
        token); ``shape`` gives every event another API's shape (ids are chatrelay's own: not
        with a shape, which may leave events out)."""
        index = max(after, 0)
        position = position or Position()
        position.index = index
        if shape is not None and ids:
            raise ValueError("ids are for chatrelay's own events, not another API's shape")
        frame = self.frame if shape is None else self._shaped(shape, index)
        ends = self._ends
        loop = asyncio.get_running_loop()  # once: each call costs a system call on 3.11
        self.followers += 1
        try:
            while True:
                end = len(ends)
                if index < end:
                    if ending is not None and index <= self._ending_at < end:
                        data = self._with_ending(frame, index, end, ids, ending)
                    elif end - index == 1:
                        data = with_id(end, frame(index)) if ids else frame(index)
                    else:  # a burst that came while this follower was busy: one write
                        data = _joined(frame, index, end, ids)
                    if data:  # empty when a shape left the events out
                        yield data
                    index = position.index = end
                    continue
                if self._closed:
                    return
                waiter = loop.create_future()
                self._waiting.append(waiter)
                try:
                    await waiter
                finally:
                    if waiter in self._waiting:  # cancelled (a woken one is off the list)
                        self._waiting.remove(waiter)
        finally:
            self.followers -= 1

    def _with_ending(
        self,
        frame: Callable[[int], bytes],
        start: int,
        stop: int,
        ids: bool,
        ending: Callable[[], bytes],
    ) -> bytes:
        at = self._ending_at

        def either(index: int) -> bytes:
            return ending() if index == at else frame(index)

        return _joined(either, start, stop, ids)


# Larger than any index: no ending yet.
NO_ENDING = 2**32


def _joined(frame: Callable[[int], bytes], start: int, stop: int, ids: bool) -> bytes:
    if ids:
        return b"".join([with_id(i + 1, frame(i)) for i in range(start, stop)])
    return b"".join([frame(i) for i in range(start, stop)])


def with_id(event_id: int, frame: bytes) -> bytes:
    """The frame with its SSE ``id:`` line (a comment frame gets one too: harmless)."""
    return b"id: %d\n%s" % (event_id, frame)
