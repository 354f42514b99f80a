"""What `chatrelay serve` allows one client connection, so that it may face the internet
without a proxy in front.

Usage::

    limits = ConnectionLimits.of(settings)
    uvicorn.Config(app, **limits.uvicorn_options())

uvicorn's defaults bound none of it: with httptools (its parser when installed, and the one
chatrelay streams with) a header has no size limit (an 8 MiB header was answered; a header
that never ends grew the process without end) and nothing times out before a request's head
is complete (100 connections each trickling a byte every 3 s all stayed open). uvicorn has a
setting only for the idle keep-alive time (``timeout_keep_alive``), used as it is; for the rest
:class:`LimitedHttpToolsProtocol` adds to uvicorn's protocol what it lacks, in its per-request
callbacks only (nothing runs per chunk of a response: the streaming path is uvicorn's own):

- the request's head (request line and headers) at most ``max_header_bytes`` and
  ``max_headers`` headers, else 431;
- the head complete within ``header_timeout`` seconds of the connection opening or of the
  request's first byte, else 408 and the connection is closed (the slowloris defence);
- the body complete within ``body_timeout`` seconds of the head, else the connection is closed
  (the route sees the client leave);
- at most ``max_connections`` connections open: a request arriving on one beyond is answered
  503, so the sockets and memory one process holds stay bounded. (uvicorn's own
  ``limit_concurrency`` does this too, but answers text/plain; every error here is JSON.)

Each refusal is the project's JSON error shape, then the connection is closed.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, ClassVar

import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from chatrelay.config import Settings
from chatrelay.errors import ChatRelayError


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    max_header_bytes: int = 64 * 1024
    max_headers: int = 100
    header_timeout: float = 10.0
    body_timeout: float = 60.0
    idle_timeout: float = 5.0
    max_connections: int = 4096

    @classmethod
    def of(cls, settings: Settings) -> ConnectionLimits:
        return cls(
            max_header_bytes=settings.max_header_bytes,
            max_headers=settings.max_headers,
            header_timeout=settings.header_timeout,
            body_timeout=settings.body_timeout,
            idle_timeout=settings.idle_timeout,
            max_connections=settings.max_connections,
        )

    def uvicorn_options(self) -> dict[str, Any]:
        """``uvicorn.Config`` keyword arguments that apply these limits."""
        protocol = type("LimitedHttpToolsProtocol", (LimitedHttpToolsProtocol,), {"limits": self})
        return {
            "http": protocol,
            "timeout_keep_alive": self.idle_timeout,
            # chatrelay has no WebSocket route: an Upgrade is answered as plain HTTP, and no
            # WebSocket protocol outlives the limits above.
            "ws": "none",
        }


class _Refused(Exception):
    """Raised in a parser callback: httptools stops parsing the connection for good, and
    uvicorn answers through ``send_400_response`` (which says why, here)."""


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with :class:`ConnectionLimits` (set as ``limits`` on a
    subclass: uvicorn builds its protocol from the class with its own arguments)."""

    limits: ClassVar[ConnectionLimits] = ConnectionLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True  # between a request's first byte and the end of its head
        self._in_body = False  # between the end of a request's head and the end of its body
        self._head_bytes = 0
        self._deadline: asyncio.TimerHandle | None = None
        self._refusal: ChatRelayError | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._deadline = self.loop.call_later(self.limits.header_timeout, self._head_too_slow)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.transport.is_closing():
            return
        # Counted after the parser has had the data: while the head is still incomplete, all
        # of it was head. The parser keeps an unfinished header whole, so this is what bounds
        # its memory (to the limit and one read).
        if self._in_head:
            self._head_bytes += len(data)
            if self._head_bytes > self.limits.max_header_bytes:
                self._answer_and_close(self._head_too_large())
        elif self._in_body and self._deadline is None:
            # A body that did not come with its head (most do, and need no timer).
            self._deadline = self.loop.call_later(self.limits.body_timeout, self._body_too_slow)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._head_bytes = True, 0
        if self._deadline is None:  # a kept-alive connection's next request: its head's time
            self._deadline = self.loop.call_later(self.limits.header_timeout, self._head_too_slow)

    def on_headers_complete(self) -> None:
        self._disarm()
        self._in_head = False
        limits = self.limits
        headers = self.headers
        # The whole head may have come in one read, never counted by data_received.
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in headers)
        if size > limits.max_header_bytes or len(headers) > limits.max_headers:
            self._refusal = self._head_too_large()
            raise _Refused
        if len(self.connections) > limits.max_connections:
            self._refusal = ChatRelayError(
                503,
                "The server has as many connections open as it takes "
                "(CHATRELAY_MAX_CONNECTIONS). Try again in a moment.",
                code="too_many_connections",
                type="server_error",
                headers={"Retry-After": "1"},
            )
            raise _Refused
        super().on_headers_complete()
        self._in_body = True

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_body = False
        self._disarm()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to what its parser refused: why, in the JSON error shape."""
        refusal, self._refusal = self._refusal, None
        self._answer_and_close(
            refusal
            or ChatRelayError(400, "The request is not valid HTTP/1.1.", code="invalid_http")
        )

    def _head_too_large(self) -> ChatRelayError:
        limits = self.limits
        return ChatRelayError(
            431,
            f"The request's headers are larger than this server takes ({limits.max_headers} "
            f"headers, {limits.max_header_bytes} bytes: CHATRELAY_MAX_HEADERS, "
            "CHATRELAY_MAX_HEADER_BYTES).",
            code="headers_too_large",
        )

    def _head_too_slow(self) -> None:
        self._deadline = None
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            self.transport.close()  # a pipelined request: the one answering still owns the wire
            return
        self._answer_and_close(
            ChatRelayError(
                408,
                f"The request's headers did not arrive within {self.limits.header_timeout:g} s "
                "(CHATRELAY_HEADER_TIMEOUT).",
                code="request_timeout",
            )
        )

    def _body_too_slow(self) -> None:
        # The route is running, and may be answering: no response of ours can be put on the
        # wire. Closing makes the route's next read a disconnect.
        self._deadline = None
        self.transport.close()

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _answer_and_close(self, error: ChatRelayError) -> None:
        if self.transport.is_closing():
            return
        body = orjson.dumps(error.body())
        head = [STATUS_LINE[error.status]]
        for name, value in self.server_state.default_headers:  # date, server
            head += [name, b": ", value, b"\r\n"]
        for name_text, value_text in error.headers.items():
            head += [name_text.encode("latin-1"), b": ", value_text.encode("latin-1"), b"\r\n"]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self.transport.close()
