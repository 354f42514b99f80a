"""The HTTP response that carries an answer's Server-Sent Events to one client.

Usage::

    position = Position()
    return EventStreamResponse(
        job.buffer.follow(ids=True, position=position),
        headers={"X-Message-Id": ...},
        on_abandon=partial(job.rest_after_shutdown, position, ids=True),
    )

Why not Starlette's ``StreamingResponse``: under uvicorn (ASGI spec 2.3) it runs every
stream in an anyio task group (a second task, a cancel scope, and a cancellation loop that
goes on each loop iteration until the task is gone), on every open stream. Here the stream is
sent from the request's own task, and one plain task waits for the client to go; when it
does, it cancels the sending, which is taken back so the request ends normally (uvicorn
silently drops what is sent to a gone client, so without it a closed tab would be followed
to the answer's end). Leaving never stops the answer itself: only a stop does.

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
        on_abandon: Callable[[], Awaitable[AsyncGenerator[bytes, None]]] | None = None,
    ) -> None:
        self.events = events
        self.on_abandon = on_abandon
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
            async for data in self.events:
                await send({"type": "http.response.body", "body": data, "more_body": True})
            streaming = False
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
