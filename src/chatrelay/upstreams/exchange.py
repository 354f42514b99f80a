"""One connection of an upstream's pool, and the request/response on it now (an exchange):
the response parsed by httptools in the socket's read callback, its body handed to the
reader's callback within that same callback (why: the docstring of ``http1.py``, which makes
the connections and pools them).

Usage (``exchange`` from ``ConnectionPool.request``)::

    head = await exchange.head()        # status and headers
    exchange.deliver(on_body)           # on_body(bytes), as they come
    await exchange.finished             # the whole body has come
    exchange.close()                    # back to the pool, or dropped
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol, cast

import httptools

from chatrelay.upstreams.proxy import Proxy

# How long a response's rest may take to come once its reader is done (see Exchange.close).
DRAIN_SECONDS = 1.0
# What a response's status line and headers may take, 1xx interim ones included: an LLM
# server's are a few hundred bytes, and httptools holds an unfinished header line whole
# (without a bound, a never-ending header grows the process). As uvicorn bounds a request's.
MAX_RESPONSE_HEAD = 64 * 1024


class Connections(Protocol):
    """What an exchange asks of the pool it belongs to (``http1.ConnectionPool``)."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...

    @property
    def forwarding_proxy(self) -> Proxy | None: ...

    def put_back(self, exchange: Exchange) -> None: ...

    def forget(self, exchange: Exchange) -> None: ...


def _ignore(data: bytes) -> None:
    """What comes after the reader is done."""


class ResponseHeadTooLarge(ConnectionError):
    """A response's head went past MAX_RESPONSE_HEAD (the connection is dropped)."""

    def __init__(self) -> None:
        super().__init__(f"response headers larger than {MAX_RESPONSE_HEAD // 1024} KiB")


class ResponseHead:
    __slots__ = ("headers", "status")

    def __init__(self, status: int, headers: dict[str, str]) -> None:
        self.status = status
        self.headers = headers  # names in lower case


class Exchange(asyncio.Protocol):
    """One connection, and the request/response on it now. The parser's callbacks are the
    ``on_*`` methods; the body goes to the callback given to :meth:`deliver`."""

    __slots__ = (
        "_body_kind",
        "_complete",
        "_head",
        "_head_bytes",
        "_header_size",
        "_headers",
        "_interim",
        "_keep_alive",
        "_on_body",
        "_parser",
        "_pending",
        "_pool",
        "_received",
        "busy",
        "finished",
        "idle_since",
        "reused",
        "transport",
    )

    def __init__(self, pool: Connections) -> None:
        self._pool = pool
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.idle_since = 0.0
        self.reused = False
        self.busy = False  # a request is on it (else it idles in the pool)
        self._reset()

    def _reset(self) -> None:
        loop = self._pool.loop
        self._head: asyncio.Future[ResponseHead] = loop.create_future()
        self.finished: asyncio.Future[None] = loop.create_future()
        self._headers: dict[str, str] = {}
        self._on_body: Callable[[bytes], object] | None = None
        self._pending: list[bytes] = []  # body that came before a callback was given
        self._received = False  # any byte of the response yet
        self._complete = False  # the parser has seen the whole response
        self._keep_alive = False  # the server lets the connection be used again
        self._interim = False  # reading a 1xx (100 Continue, 103): the answer comes after it
        self._body_kind = ""  # "length", "chunked" or "" (ends when the connection closes)
        # Bytes received while the head is still coming (interim responses' too); None once
        # the final head has come: the body's reads are not counted.
        self._head_bytes: int | None = 0
        self._header_size = 0  # the head's headers as parsed so far

    # ------------------------------------------------------------------ the caller's side

    async def head(self) -> ResponseHead:
        return await self._head

    @property
    def received_any(self) -> bool:
        """Whether the server sent any of its response (a reused connection that failed
        before that can be retried on a new one: the server never saw the request)."""
        return self._received

    def deliver(self, on_body: Callable[[bytes], object]) -> None:
        """From now on each piece of the body goes to ``on_body`` as it arrives (what came
        before goes first). An exception it raises ends the exchange: ``finished`` fails
        with it and the connection is dropped."""
        self._on_body = on_body
        pending, self._pending = self._pending, []
        for data in pending:
            try:
                on_body(data)
            except BaseException as exc:  # what the callback raised ends the exchange
                self._drop(exc)
                return
        if self._complete and not self.finished.done():
            self.finished.set_result(None)

    def close(self, *, drain: bool = False) -> None:
        """Done with the response: a complete one's connection goes back to the pool, any
        other (stopped, failed, abandoned mid-body) is dropped at once. ``drain``: the
        caller has all it wanted and the rest of the body is expected (an SSE end marker
        comes before the body's own end): the connection goes back to the pool once the
        body is whole, or is dropped if that takes over DRAIN_SECONDS."""
        self._on_body = _ignore
        self._pending.clear()
        if self._reusable():
            self._recycle()
        elif drain and self._head.done() and not self.finished.done():
            timer = self._pool.loop.call_later(DRAIN_SECONDS, self.abort)
            self.finished.add_done_callback(lambda _: self._drained(timer))
        else:
            self.abort()

    def _drained(self, timer: asyncio.TimerHandle) -> None:
        timer.cancel()
        if self._reusable():
            self._recycle()
        else:
            self.abort()

    def _reusable(self) -> bool:
        finished = self.finished
        return (
            finished.done()
            and not finished.cancelled()
            and finished.exception() is None
            and self._keep_alive
            and self.transport is not None
            and not self.transport.is_closing()
        )

    def _recycle(self) -> None:
        self._reset()
        self.busy = False
        self._pool.put_back(self)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
        self._fail(ConnectionResetError("the request was abandoned"))

    # ------------------------------------------------------------------ the socket's side

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, hence no isinstance check.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if not self.busy:  # nobody asked (an idle connection): never anybody's answer
            self._drop(ConnectionResetError("the server sent data nobody asked for"))
            return
        self._received = True
        head_bytes = self._head_bytes
        if head_bytes is not None:
            # Checked once the parser has seen the data: a read that completes the head may
            # hold body bytes too (on_header counts the head itself exactly).
            self._head_bytes = head_bytes + len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:  # raised by a callback of ours
            self._drop(exc.__context__ or exc)
            return
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._drop(ConnectionError(f"malformed HTTP response: {exc!r}"))
            return
        head_bytes = self._head_bytes
        if head_bytes is not None and head_bytes > MAX_RESPONSE_HEAD:
            self._drop(ResponseHeadTooLarge())

    def eof_received(self) -> bool:
        return False  # the transport closes itself; connection_lost says what it means

    def connection_lost(self, exc: Exception | None) -> None:
        self._pool.forget(self)
        if exc is None and self._head.done() and not self.finished.done() and not self._body_kind:
            self.on_message_complete()  # a body delimited by the connection's (clean) end
            return
        self._fail(exc or ConnectionResetError("the server closed the connection"))

    def on_message_begin(self) -> None:
        if self._complete:  # more after the whole response: this connection is not reusable
            self._keep_alive = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")
        # Exactly, also within one read that holds the whole head: what it takes on the wire.
        size = self._header_size = self._header_size + len(name) + len(value) + 4
        if size > MAX_RESPONSE_HEAD:
            raise ResponseHeadTooLarge

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200 and status != 101:  # interim: the real response follows
            self._interim = True
            self._headers = {}
            return
        if status == 407 and self._pool.forwarding_proxy is not None:
            # The proxy's answer, not the upstream's: said as such (data_received drops the
            # connection with it), like a refused CONNECT.
            raise self._pool.forwarding_proxy.refused(status, "the request")
        self._head_bytes = None  # the head is whole: from here on, the body
        # Asked now: once the message is complete the parser has forgotten it.
        self._keep_alive = self._parser.should_keep_alive()
        headers = self._headers
        if "chunked" in headers.get("transfer-encoding", "").lower():
            self._body_kind = "chunked"
        elif "content-length" in headers:
            self._body_kind = "length"
        if not self._head.done():
            self._head.set_result(ResponseHead(status, headers))

    def on_body(self, body: bytes) -> None:
        if self._on_body is None:
            self._pending.append(body)
        else:
            self._on_body(body)  # its exception reaches data_received (feed_data re-raises)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        self._complete = True
        if self._on_body is None and self._pending:
            return  # finished once deliver() has handed the held-back body over
        if not self.finished.done():
            self.finished.set_result(None)

    # ------------------------------------------------------------------ endings

    def _drop(self, exc: BaseException) -> None:
        if self.transport is not None:
            self.transport.abort()
        self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        for future in (self._head, self.finished):
            if not future.done():
                future.set_exception(exc)
                future.exception()  # retrieved: a caller that left does not log it
