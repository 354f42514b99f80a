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

Here are the pool and the connecting; one connection's request and response, and the parser's
callbacks, are the :class:`Exchange` of ``exchange.py``.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import socket
import ssl
import time
from collections.abc import Mapping
from urllib.parse import quote, unquote, urlsplit

import aiohappyeyeballs

from chatrelay import __version__

# Re-exported until tests/e2e/test_upstream_trust.py imports it from exchange.py.
from chatrelay.upstreams.exchange import Exchange
from chatrelay.upstreams.proxy import MAX_CONNECT_ANSWER, Proxy, proxy_for

# A kept-alive connection idle longer than this is closed instead of reused: servers close
# idle connections on their own schedule, and a request written to one they are closing
# fails. aiohttp's default; a request failing on a reused connection is also retried once.
KEEPALIVE_SECONDS = 15.0
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
