"""A small HTTP/1.1 client that pushes a response body to a callback as its bytes arrive.

Usage::

    pool = ConnectionPool("https://gateway.example/llm", connect_timeout=5)
    exchange = await pool.request(b"POST", body, headers)   # a new or kept-alive connection
    head = await exchange.head()                          # status and headers
    exchange.deliver(on_body)                             # on_body(bytes), as they come
    await exchange.finished                               # the whole body has come
    exchange.close()                                      # back to the pool, or dropped
    await pool.close()

Hand-written on top of httptools (the C parser uvicorn uses) because no client library
offers this shape: aiohttp and httpx hand a body over through a reader that a task must be
woken to read, one more event-loop turn and task step per chunk on chatrelay's hot path, and
their per-response objects add much to every open stream
(docs/performance.md#upstream-http-client has the measurements). Here the body
goes from the socket to the callback within the same callback, and a response is a few
hundred bytes. It speaks exactly what an LLM endpoint needs: one request at a time per
connection, keep-alive reuse, Content-Length, chunked and connection-close bodies, TLS,
and an HTTP proxy from the environment (``HTTP_PROXY``, ``HTTPS_PROXY``, ``NO_PROXY``: see
proxy.py): an http:// request in absolute form through it, an https:// one in a CONNECT
tunnel. Either way the proxy is only in the connecting; once connected, a response reaches
the callback exactly as it does without one.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import socket
import ssl
import time
from collections.abc import Callable, Mapping
from typing import cast
from urllib.parse import quote, unquote, urlsplit

import aiohappyeyeballs
import httptools

from chatrelay import __version__
from chatrelay.upstreams.proxy import MAX_CONNECT_ANSWER, Proxy, proxy_for

# A kept-alive connection idle longer than this is closed instead of reused: servers close
# idle connections on their own schedule, and a request written to one they are closing
# fails. aiohttp's default; a request failing on a reused connection is also retried once.
KEEPALIVE_SECONDS = 15.0
# How long a response's rest may take to come once its reader is done (see Exchange.close).
DRAIN_SECONDS = 1.0
# What a response's status line and headers may take, 1xx interim ones included: an LLM
# server's are a few hundred bytes, and httptools holds an unfinished header line whole
# (without a bound, a never-ending header grows the process). As uvicorn bounds a request's.
MAX_RESPONSE_HEAD = 64 * 1024
USER_AGENT = f"chatrelay/{__version__}"
_SSL_CONTEXT: ssl.SSLContext | None = None
log = logging.getLogger(__name__)


def _ssl_context() -> ssl.SSLContext:
    """One default context for the process (making one loads the CA store: milliseconds)."""
    global _SSL_CONTEXT
    if _SSL_CONTEXT is None:
        _SSL_CONTEXT = ssl.create_default_context()
    return _SSL_CONTEXT


def request_target(url: str) -> str:
    """The path and query of ``url`` as a request line wants them: spaces and characters
    outside ASCII percent-encoded, what is encoded already left as it is."""
    parts = urlsplit(url)
    target = quote(parts.path or "/", safe="/%:@!$&'()*+,;=~")
    if parts.query:
        target += "?" + quote(parts.query, safe="/%:@!$&'()*+,;=~?")
    return target


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

    def __init__(self, pool: ConnectionPool) -> None:
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


class ConnectionPool:
    """Kept-alive connections to one origin (scheme, host, port), one request at a time
    on each, through the proxy the environment names for it when it is created (if any:
    ``proxy``). Raises ValueError for a URL, or a proxy URL, it cannot use."""

    def __init__(self, url: str, *, connect_timeout: float) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("not an http(s) URL")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.tls = parts.scheme == "https"
        self.target = request_target(url)
        authority = parts.netloc.rpartition("@")[2]
        self.proxy = proxy_for(url)
        # An http:// request goes to the proxy itself, which forwards it: the request line
        # names the whole URL and the proxy's credentials are a header of it. An https://
        # one goes through a tunnel, inside which the proxy is not there at all.
        self.forwarding_proxy = None if self.tls else self.proxy
        self._origin = ""  # before the path in a request line
        proxy_header = ""
        if self.forwarding_proxy is not None:
            self._origin = f"http://{authority}"
            proxy_header = self.forwarding_proxy.authorization_header
        if self.proxy is not None:
            log.info(
                "requests to %s://%s go through the proxy %s",
                parts.scheme,
                authority,
                self.proxy,
            )
        self._fixed = f"Host: {authority}\r\nUser-Agent: {USER_AGENT}\r\n{proxy_header}"
        self._basic = ""  # credentials in the URL: HTTP basic auth (unless a key is given)
        if parts.username is not None:
            pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            self._basic = f"Authorization: Basic {base64.b64encode(pair).decode()}\r\n"
        self.connect_timeout = connect_timeout
        self._idle: list[Exchange] = []
        self._open: set[Exchange] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    async def request(
        self,
        method: bytes,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
        target: str | None = None,
    ) -> Exchange:
        """Send a request on a kept-alive connection (or a new one); its response comes on
        the returned exchange. Raises OSError or TimeoutError if no connection can be made."""
        headers = headers or {}
        line = f"{method.decode()} {self._origin}{target or self.target} HTTP/1.1\r\n"
        head = [line, self._fixed]
        if "Authorization" not in headers:
            head.append(self._basic)
        for name, value in headers.items():
            head.append(f"{name}: {value}\r\n")
        if body or method == b"POST":
            head.append(f"Content-Length: {len(body)}\r\n")
        head.append("\r\n")
        message = "".join(head).encode() + body  # UTF-8, for a key or URL outside Latin-1
        exchange = self._take_idle() or await self._connect()
        assert exchange.transport is not None
        exchange.busy = True
        exchange.transport.write(message)
        return exchange

    def _take_idle(self) -> Exchange | None:
        now = time.monotonic()
        while self._idle:
            exchange = self._idle.pop()
            transport = exchange.transport
            if transport is None or transport.is_closing():
                continue
            if now - exchange.idle_since > KEEPALIVE_SECONDS:
                transport.close()
                continue
            exchange.reused = True
            return exchange
        return None

    async def _connect(self) -> Exchange:
        loop = self.loop
        proxy = self.proxy
        host, port = (proxy.host, proxy.port) if proxy is not None else (self.host, self.port)
        try:
            async with asyncio.timeout(self.connect_timeout):
                try:
                    addresses = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
                    # Happy Eyeballs (RFC 8305), as aiohttp does: a dead first address (an
                    # IPv6 route that goes nowhere) costs 0.25 s, not the connect timeout.
                    sock = await aiohappyeyeballs.start_connection(
                        addresses, happy_eyeballs_delay=0.25, interleave=1
                    )
                except OSError as exc:
                    if proxy is None:
                        raise
                    raise proxy.unreachable(exc) from exc
                if proxy is not None and self.tls:
                    try:
                        await self._tunnel(sock, proxy)
                    except BaseException:
                        sock.close()
                        raise
                # Through a tunnel too: the TLS connection (and the transport that reads the
                # body) is the same as a direct one's, on a socket that reaches the upstream.
                _, exchange = await loop.create_connection(
                    lambda: Exchange(self),
                    sock=sock,
                    ssl=_ssl_context() if self.tls else None,
                    server_hostname=self.host if self.tls else None,
                )
        except TimeoutError:
            via = "" if proxy is None else f" through the proxy {proxy}"
            raise ConnectionError(f"no connection within {self.connect_timeout:g} s{via}") from None
        self._open.add(exchange)
        return exchange

    async def _tunnel(self, sock: socket.socket, proxy: Proxy) -> None:
        """Ask the proxy for a tunnel to the upstream (CONNECT) on ``sock``. Its answer is
        read with the loop's socket calls, so that TLS can then start on the socket as on a
        direct one; nothing follows it until chatrelay's TLS hello, so nothing of the
        upstream's is read here."""
        loop = self.loop
        host = f"[{self.host}]" if ":" in self.host else self.host
        authority = f"{host}:{self.port}"
        await loop.sock_sendall(sock, proxy.connect_request(authority))
        answer = b""
        while b"\r\n\r\n" not in answer:
            data = await loop.sock_recv(sock, 4096)
            if not data:
                raise ConnectionResetError(
                    f"the proxy {proxy} closed the connection instead of answering CONNECT"
                )
            answer += data
            if len(answer) > MAX_CONNECT_ANSWER:
                raise ConnectionError(f"the proxy {proxy} answered CONNECT with no end")
        head, _, rest = answer.partition(b"\r\n\r\n")
        version, _, status_and_reason = head.split(b"\r\n", 1)[0].partition(b" ")
        status = status_and_reason[:3]
        if not version.startswith(b"HTTP/") or not status.isdigit():
            raise ConnectionError(f"the proxy {proxy} answered CONNECT with something not HTTP")
        if not 200 <= int(status) < 300:
            raise proxy.refused(int(status), f"a tunnel to {authority}")
        if rest:  # the upstream speaks after chatrelay's TLS hello, never before
            raise ConnectionError(f"the proxy {proxy} sent more than its answer to CONNECT")

    def put_back(self, exchange: Exchange) -> None:
        exchange.idle_since = time.monotonic()
        self._idle.append(exchange)

    def forget(self, exchange: Exchange) -> None:
        self._open.discard(exchange)
        if exchange in self._idle:
            self._idle.remove(exchange)

    async def close(self) -> None:
        for exchange in list(self._open):
            if exchange.transport is not None:
                exchange.transport.close()
        self._idle.clear()
        await asyncio.sleep(0)  # let the transports report their closing
