"""The HTTP response that carries an answer's Server-Sent Events to one client.

Usage::

    return EventStreamResponse(Subscription(job.buffer, ids=True), headers={...})
    return EventStreamResponse(frames, headers={...})     # or any async iterator of bytes

Why not Starlette's ``StreamingResponse``: under uvicorn (ASGI spec 2.3) it runs every
stream in an anyio task group (a second task, a cancel scope, and a cancellation loop that
goes on each loop iteration until the task is gone), on every open stream. Here the stream is
sent from the request's own task, and one plain task waits for the client to go; when it
does, it cancels the sending, which is taken back so the request ends normally (uvicorn
silently drops what is sent to a gone client, so without it a closed tab would be followed
to the answer's end). Leaving never stops the answer itself: only a stop does.

A :class:`Subscription` is sent the other way round: each event is sent from the callback
that appended it (the upstream's read), so a token goes from the upstream's socket to the
client's in one go, with no task woken in between (see :func:`_push`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine, Mapping
from typing import Any, cast

from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from chatrelay.chat.events import Subscription

# What a streamed answer needs so that no proxy or browser holds tokens back.
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class EventStreamResponse(Response):
    media_type = "text/event-stream"

    def __init__(
        self,
        events: AsyncIterator[bytes] | Subscription,
        *,
        headers: Mapping[str, str],
        status_code: int = 200,  # FastAPI reads the default for the OpenAPI document
    ) -> None:
        self.events = events
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

        watcher = asyncio.create_task(_disconnect(receive))
        watcher.add_done_callback(client_left)
        try:
            if isinstance(self.events, Subscription):
                await _push(self.events, send)
            else:
                async for data in self.events:
                    await send(_body(data))
            streaming = False
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not gone or task.uncancel() > cancelling:
                raise  # a shutdown: it goes on
        finally:
            streaming = False
            watcher.cancel()
            aclose = getattr(self.events, "aclose", None)
            if aclose is not None:  # left mid-send: the follower ends now, not when collected
                with contextlib.suppress(Exception):
                    await aclose()


def _body(data: bytes) -> Message:
    return {"type": "http.response.body", "body": data, "more_body": True}


async def _push(live: Subscription, send: Send) -> None:
    """Sends the subscription's events as they come, each from the callback that appended
    it. A send that has to wait (the client reads slowly: the server's write buffer is full)
    is finished by this task, which then sends what came meanwhile itself, in order."""
    loop = asyncio.get_running_loop()
    turn: asyncio.Future[None] = loop.create_future()  # this task's turn to send
    waiting: tuple[Coroutine[Any, Any, None], Any] | None = None
    failed: BaseException | None = None

    def on_more() -> None:
        nonlocal waiting, failed
        if turn.done():
            return  # the task is sending: it takes what came once it is done
        data = live.take()
        if data:
            try:
                waiting = _send_now(send, _body(data))
            except BaseException as exc:  # raised by the task, not by the appender
                failed = exc
        if waiting is not None or failed is not None or live.over:
            turn.set_result(None)

    live.listen(on_more)
    try:
        on_more()  # what came before
        while True:
            await turn
            if failed is not None:
                raise failed
            if waiting is not None:
                await _finish(*waiting)
                waiting = None
            while data := live.take():
                await send(_body(data))
            if live.over:
                return
            turn = loop.create_future()
    finally:
        live.stop()
        if waiting is not None:
            waiting[0].close()


def _send_now(send: Send, message: Message) -> tuple[Coroutine[Any, Any, None], Any] | None:
    """Runs ``send(message)`` outside any task, as far as it goes without waiting: None when
    it is done (the bytes are in the socket or its buffer), else the coroutine and what it
    waits on, for :func:`_finish`. Hand-written: asyncio (before 3.12's eager tasks) has no
    way to run a coroutine until its first wait without a task and a loop turn."""
    coroutine = cast(Coroutine[Any, Any, None], send(message))  # ASGI's send: an async def
    try:
        waits_on = coroutine.send(None)
    except StopIteration:
        return None
    return coroutine, waits_on


async def _finish(coroutine: Coroutine[Any, Any, None], waits_on: Any) -> None:
    """Drives a coroutine started by :func:`_send_now` to its end from this task: waits for
    what it waits on, then resumes it, as a task would."""
    try:
        while True:
            if isinstance(waits_on, asyncio.Future):
                await asyncio.wait([waits_on])
            else:  # a bare yield: one loop turn
                await asyncio.sleep(0)
            try:
                waits_on = coroutine.send(None)
            except StopIteration:
                return
    finally:
        coroutine.close()


async def _disconnect(receive: Receive) -> None:
    """Until the client has gone (a request body it still sends is read and dropped)."""
    while (await receive())["type"] != "http.disconnect":
        pass
