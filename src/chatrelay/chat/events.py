"""The event buffer between a generation job and everyone listening to it.

Usage::

    buffer = EventBuffer()
    buffer.append(frame)                 # the job: one encoded SSE frame at a time
    async for data in buffer.follow(after=n, ids=True):  # each listener: replays what it
        ...                                              # missed, then live
    buffer.close()

The job writes, listeners read at their own pace, and a listener going away (a closed tab)
never disturbs the job or the other listeners.

Event ids are positions: the frame at index ``i`` is event ``i + 1``, so a client that saw
event ``n`` resumes with ``follow(after=n)``. They are added as ``id:`` lines on the way out
(``ids=True``), not stored: the OpenAI route relays the same frames without them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator


class EventBuffer:
    """In-process, append-only list of SSE frames with any number of followers."""

    def __init__(self) -> None:
        self._frames: list[bytes] = []
        self._closed = False
        # One future per waiting listener: a cancelled listener cancels only its own future.
        self._waiting: set[asyncio.Future[None]] = set()

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def frames(self) -> list[bytes]:
        return self._frames

    def append(self, frame: bytes) -> None:
        self._frames.append(frame)
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

    async def follow(self, after: int = 0, *, ids: bool = False) -> AsyncIterator[bytes]:
        """Frames after event ``after``, as they come; ends when the buffer is closed."""
        index = max(after, 0)
        frames = self._frames
        loop = asyncio.get_running_loop()  # once: each call costs a system call on 3.11
        while True:
            end = len(frames)
            if index < end:
                # A burst that arrived while this listener was busy goes out as one write.
                if ids:
                    yield (
                        with_id(end, frames[index])
                        if end - index == 1
                        else b"".join([with_id(i + 1, frames[i]) for i in range(index, end)])
                    )
                else:
                    yield frames[index] if end - index == 1 else b"".join(frames[index:end])
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


def with_id(event_id: int, frame: bytes) -> bytes:
    """The frame with its SSE ``id:`` line (a comment frame gets one too: harmless)."""
    return b"id: %d\n%s" % (event_id, frame)
