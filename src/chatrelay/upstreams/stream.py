"""The body of one streamed answer from an upstream, pushed to the answer's handler as
normalised chunks as they arrive, under the first-token and stall timers (the watchdog).

``Upstream.stream`` (``client.py``) opens it; the chunks are decoded (SSE), parsed (the
upstream's dialect) and handed over within the socket's read callback, with no task woken
per chunk (docs/performance.md#upstream-http-client).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from chatrelay.sse import EventTooLarge, SSEDecoder
from chatrelay.upstreams.chunk import UpstreamChunk
from chatrelay.upstreams.dialects import Dialect
from chatrelay.upstreams.exchange import Exchange

# Malformed events are skipped, up to this many in one answer; past it the upstream is broken.
MAX_MALFORMED_EVENTS = 20
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Timeouts:
    """An upstream's: to connect (its pool), then its stream's watchdog: the first token, and
    the longest silence after it."""

    connect: float
    first_token: float
    stall: float


class _Named(Protocol):
    @property
    def name(self) -> str: ...


class StreamSource(Protocol):
    """What a stream asks of the upstream it reads (``client.Upstream``): the dialect that
    parses its events, its name, and its failures, said as the upstream's."""

    @property
    def config(self) -> _Named: ...

    @property
    def dialect(self) -> Dialect: ...

    def failed(self, what: str, *, kind: str, started: bool) -> Exception: ...


class Watchdog:
    """Calls ``on_expiry`` once ``expires`` (loop time) has passed: the first-token and stall
    timers of a stream.

    Hand-written because ``asyncio.Timeout.reschedule`` per chunk is a timer-heap insert, a
    cancelled handle and (Python 3.11) a ``getpid()`` per token (docs/performance.md#watchdog).
    Here progress is one float store;
    the one timer checks ``expires`` when it goes off and, if it moved, waits out the rest.
    """

    __slots__ = ("_handle", "_loop", "_on_expiry", "expires")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, expires: float, on_expiry: Callable[[], None]
    ) -> None:
        self._loop, self._on_expiry, self.expires = loop, on_expiry, expires
        self._handle: asyncio.TimerHandle | None = loop.call_at(expires, self._check)

    def _check(self) -> None:
        if self._loop.time() < self.expires:  # progress since it was set: wait for the rest
            self._handle = self._loop.call_at(self.expires, self._check)
            return
        self._handle = None
        self._on_expiry()

    def reset(self, expires: float) -> None:
        """A new deadline, sooner or later than the one the timer is set for."""
        self.disarm()
        self.expires = expires
        self._handle = self._loop.call_at(expires, self._check)

    def disarm(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


# What ``UpstreamStream.relay`` hands each chunk to; True means "enough: stop reading".
ChunkHandler = Callable[[UpstreamChunk], "bool | None"]


class UpstreamStream:
    """The body of one streamed answer, pushed to a handler as normalised chunks, with both
    stall timers applied.

    The chunks are parsed and handed over inside the socket's read callback (no task is
    woken per chunk): the handler must not block, and what it raises ends the stream and is
    raised by :meth:`relay`. An error event the upstream sends is an UpstreamFailure
    (``stream_error``) raised by :meth:`relay`, never a chunk.
    """

    __slots__ = (
        "_decoder",
        "_done",
        "_exchange",
        "_finished",
        "_loop",
        "_on_chunk",
        "_timeouts",
        "_upstream",
        "_watchdog",
        "malformed",
        "received_content",
    )

    def __init__(self, exchange: Exchange, upstream: StreamSource, timeouts: Timeouts) -> None:
        self._exchange = exchange
        self._upstream = upstream
        self._timeouts = timeouts
        self._decoder = SSEDecoder()
        self._finished = False  # a finish reason or an end marker has come
        self._on_chunk: ChunkHandler | None = None
        self._done: asyncio.Future[None] | None = None
        self._watchdog: Watchdog | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.received_content = False
        self.malformed = 0

    async def relay(self, on_chunk: ChunkHandler) -> None:
        """Hand every chunk to ``on_chunk`` as it arrives; return when the answer is over or
        the handler said enough. Raises UpstreamFailure (stall, disconnect, unfinished) or
        what the handler raised."""
        loop = self._loop = asyncio.get_running_loop()
        self._on_chunk = on_chunk
        done = self._done = loop.create_future()
        self._watchdog = Watchdog(loop, loop.time() + self._timeouts.first_token, self._expired)
        exchange = self._exchange
        exchange.finished.add_done_callback(self._body_ended)
        exchange.deliver(self._feed)
        try:
            await done
        finally:
            self.close()

    @property
    def complete(self) -> bool:
        """The answer came to its end (a finish reason or end marker, no failure)."""
        done = self._done
        return (
            self._finished
            and done is not None
            and done.done()
            and not done.cancelled()
            and done.exception() is None
        )

    def close(self) -> None:
        """The reader is done with the stream: its timer is disarmed and nothing more is
        handed over, whatever still arrives."""
        self._on_chunk = None
        self._disarm()
        if self._done is not None and not self._done.done():
            self._done.cancel()

    def _feed(self, data: bytes) -> None:
        """The socket's read callback, with a piece of the body."""
        on_chunk = self._on_chunk
        if on_chunk is None:
            return  # ended: the rest is dropped with the connection
        try:
            for event in self._decoder.feed(data):
                if self._take(on_chunk, event.data):
                    return
        except EventTooLarge as exc:  # an upstream failure like any other: failed over
            self._end(self._failure(f"sent {exc}", kind="bad_event"))
        except BaseException as exc:  # a failure, or the handler's: relay() raises it
            self._end(exc)

    def _take(self, on_chunk: ChunkHandler, data: str) -> bool:
        """One event; True once the stream is over."""
        chunk = self._parse(data)
        if chunk is None:
            return False
        if chunk.error is not None:  # every reader's failure: never handed over as a chunk
            raise self._failure(f"reported an error mid-answer: {chunk.error}", kind="stream_error")
        watchdog, loop = self._watchdog, self._loop
        assert watchdog is not None and loop is not None
        if self.received_content:
            watchdog.expires = loop.time() + self._timeouts.stall
        elif chunk.content or chunk.delta is not None:  # the first token (or reasoning, or a
            # tool call's first delta): the stall timer from now on
            self.received_content = True
            watchdog.reset(loop.time() + self._timeouts.stall)
        if chunk.finish_reason or chunk.done:
            self._finished = True
        if on_chunk(chunk) or chunk.done:
            self._end()
            return True
        return False

    def _body_ended(self, finished: asyncio.Future[None]) -> None:
        """The whole body has come, or the connection broke."""
        on_chunk = self._on_chunk
        if on_chunk is None:
            return
        if finished.cancelled() or finished.exception() is not None:
            exc = finished.exception() if not finished.cancelled() else None
            self._end(
                self._failure(f"dropped the connection mid-answer ({exc})", kind="disconnect")
            )
            return
        try:
            for event in self._decoder.flush():
                if self._take(on_chunk, event.data):
                    return
            if not self._finished:
                raise self._failure(
                    "ended the stream without a finish chunk: the answer was cut", kind="cut"
                )
            self._end()
        except BaseException as exc:
            self._end(exc)

    def _expired(self) -> None:
        stall = self._timeouts.stall
        if self.received_content:
            what = f"stalled: no data for {stall:g} s (CHATRELAY_STALL_TIMEOUT)"
            self._end(self._failure(what, kind="stall"))
        else:
            what = (
                f"sent no token within {self._timeouts.first_token:g} s "
                "(CHATRELAY_FIRST_TOKEN_TIMEOUT); a cold model may still be loading"
            )
            self._end(self._failure(what, kind="first_token_timeout"))

    def _disarm(self) -> None:
        """The timer off and let go of: it refers back to this stream (its expiry callback),
        and that cycle would keep the stream, its decoder and futures until a full collection
        (the streams outlive young collections, so their cycles reach the oldest generation)."""
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None:
            watchdog.disarm()

    def _end(self, exc: BaseException | None = None) -> None:
        self._on_chunk = None
        self._disarm()
        done = self._done
        if done is None or done.done():
            return
        if exc is None:
            done.set_result(None)
        else:
            done.set_exception(exc)

    def _parse(self, data: str) -> UpstreamChunk | None:
        """One event, or None for a malformed one: a bad line among good ones is skipped."""
        try:
            return self._upstream.dialect.parse_event(data)
        except (ValueError, TypeError, AttributeError, KeyError, IndexError) as exc:
            # Not JSON, or JSON of another shape than a chunk (choices an object, a delta a
            # string, ...): skipped like a bad line, never an internal error for the user.
            self.malformed += 1
            log.warning("upstream %s: skipped a malformed event", self._upstream.config.name)
            if self.malformed > MAX_MALFORMED_EVENTS:
                raise self._failure(
                    f"sent {self.malformed} malformed events", kind="bad_event"
                ) from exc
            return None

    def _failure(self, what: str, *, kind: str) -> Exception:
        return self._upstream.failed(what, kind=kind, started=self.received_content)
