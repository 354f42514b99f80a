"""The HTTP response that carries an answer's Server-Sent Events to one client.

Usage::

    position = Position()
    return EventStreamResponse(
        answer.buffer.follow(ids=True, position=position),
        headers={"X-Message-Id": ...},
        on_abandon=partial(answer.rest_after_shutdown, position, ids=True),
    )

Why not Starlette's ``StreamingResponse``: under uvicorn (ASGI spec 2.3) it runs every
stream in an anyio task group (a second task, a cancel scope, and a cancellation loop that
goes on each loop iteration until the task is gone), on every open stream. Here the stream is
sent from the request's own task, and one plain task waits for the client to go; when it
does, it cancels the sending, which is taken back so the request ends normally (uvicorn
silently drops what is sent to a gone client, so without it a closed tab would be followed
to the answer's end). Leaving stops the answer itself only where ``on_leave`` says so (the
OpenAI API: its clients cannot re-attach); the page's re-attachable streams go on.

Silence is never longer than ``keepalive`` seconds: a cold model may take minutes for its
first token, and proxies in front cut idle connections (nginx after 60 s, some after 30 s).
One timer per stream looks, when it goes off, at when the stream last sent anything and
sends an SSE comment (which every SSE parser ignores) only if it has been silent that long:
sending a token costs one clock read, never a timer re-armed per chunk.

When the server gives up on the request instead (a shutdown whose grace period is over: uvicorn
cancels the requests still running), ``on_abandon`` ends the answer the way a shutdown does
(stored as interrupted, an error event ``shutdown`` and ``[DONE]``) and hands back the events
this response has not sent yet, which go out before it ends: the client gets every token and
a complete response that says what happened, not a connection cut in the middle of a chunk.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from chatrelay.sse import encode_comment

# What a streamed answer needs so that no proxy or browser holds tokens back.
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class EventStreamResponse(Response):
    media_type = "text/event-stream"

    def __init__(
        self,
        events: AsyncIterator[bytes],
        *,
        headers: Mapping[str, str],
        status_code: int = 200,  # FastAPI reads the default for the OpenAPI document
        keepalive: float,
        on_abandon: Callable[[], Awaitable[AsyncGenerator[bytes, None]]] | None = None,
        on_leave: Callable[[], object] | None = None,
    ) -> None:
        self.events = events
        self.keepalive = keepalive
        self.on_abandon = on_abandon
        self.on_leave = on_leave
        self.status_code = status_code
        self.background = None
        self.init_headers({**STREAM_HEADERS, **headers})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        task = asyncio.current_task()
        assert task is not None
        cancelling = task.cancelling()  # cancellations that are not the client's leaving
        streaming, gone = True, False

        def client_left(watcher: asyncio.Task[None]) -> None:
            nonlocal gone
            if watcher.cancelled():
                return
            watcher.exception()  # a receive that failed also means the client is gone
            if streaming:
                gone = True
                task.cancel()
                if self.on_leave is not None:
                    self.on_leave()

        watcher = asyncio.create_task(_disconnect(receive))
        watcher.add_done_callback(client_left)
        loop = asyncio.get_running_loop()
        keepalive = _KeepAlive(loop, self.keepalive, send)
        now = loop.time
        try:
            async for data in self.events:
                await send({"type": "http.response.body", "body": data, "more_body": True})
                keepalive.last = now()
            streaming = False
            keepalive.close()
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not gone or task.uncancel() > cancelling:
                if not gone and streaming and await self._end_abandoned(send):
                    # Ended cleanly: uvicorn would log the cancellation as the app's failure.
                    task.uncancel()
                    return
                raise  # a shutdown: it goes on
        finally:
            streaming = False
            keepalive.close()
            watcher.cancel()
            aclose = getattr(self.events, "aclose", None)
            if aclose is not None:  # left mid-send: the follower ends now, not when collected
                with contextlib.suppress(Exception):
                    await aclose()

    async def _end_abandoned(self, send: Send) -> bool:
        """The server's cancellation: end the answer, then send the events not sent yet and
        the end of the body; whether that went through. Best effort: the server may cancel
        again, or the client be gone. (A new follower: the cancellation ended the first one
        where it waited.)"""
        if self.on_abandon is None:
            return False
        try:
            rest = await self.on_abandon()
            async with contextlib.aclosing(rest):
                async for data in rest:
                    await send({"type": "http.response.body", "body": data, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except (Exception, asyncio.CancelledError):
            return False
        return True


async def _disconnect(receive: Receive) -> None:
    """Until the client has gone (a request body it still sends is read and dropped)."""
    while (await receive())["type"] != "http.disconnect":
        pass


_COMMENT: dict[str, object] = {
    "type": "http.response.body",
    "body": encode_comment("keep-alive"),
    "more_body": True,
}


class _KeepAlive:
    """Sends an SSE comment whenever the stream has been silent for ``interval`` seconds.

    ``last`` is set by the stream at each send; the one timer re-arms itself for
    ``last + interval`` when it finds the stream was not silent that long. The comment goes
    out from a task of its own (the stream's task is waiting for events); it is a whole SSE
    unit, so it can never land inside a frame, and one still waiting for the client to take
    data is cancelled before the body ends."""

    __slots__ = ("_handle", "_interval", "_loop", "_send", "_sending", "last")

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float, send: Send) -> None:
        self._loop, self._interval, self._send = loop, interval, send
        self._sending: asyncio.Task[None] | None = None
        self.last = loop.time()
        self._handle: asyncio.TimerHandle | None = loop.call_at(self.last + interval, self._due)

    def _due(self) -> None:
        loop, due = self._loop, self.last + self._interval
        now = loop.time()
        if now < due:  # something was sent meanwhile
            self._handle = loop.call_at(due, self._due)
            return
        if self._sending is None or self._sending.done():
            self._sending = loop.create_task(self._comment())
        self.last = now
        self._handle = loop.call_at(now + self._interval, self._due)

    async def _comment(self) -> None:
        # The client may be gone: then the stream's own send finds out and ends it.
        with contextlib.suppress(Exception):
            await self._send(_COMMENT)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._sending is not None and not self._sending.done():
            self._sending.cancel()
        self._sending = None
