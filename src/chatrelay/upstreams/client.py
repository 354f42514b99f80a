"""One upstream endpoint: its connection pool, and a streamed request to it (whose body is
read by ``stream.py``).

Usage::

    upstream = Upstream(UpstreamConfig(name="livepeer", dialect="livepeer", base_url=url, ...))
    async with upstream.stream(model, messages, params) as stream:
        await stream.relay(on_chunk)    # on_chunk(UpstreamChunk), normalised whatever the
                                        # dialect, called as each one arrives
    await upstream.close()

The HTTP client is chatrelay's own small one (``http1.py``, on httptools): the body goes
from the socket's read callback through the SSE decoder and the dialect to the answer's
handler, with no task woken per chunk (docs/performance.md#upstream-http-client).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit, urlunsplit

from chatrelay.errors import UPSTREAM, ChatRelayError
from chatrelay.upstreams.dialects import (
    DIALECTS,
    GenerationParams,
    UpstreamMessage,
    upstream_error_message,
)
from chatrelay.upstreams.exchange import Exchange, ResponseHead, ResponseHeadTooLarge
from chatrelay.upstreams.http1 import ConnectionPool, request_target
from chatrelay.upstreams.pricing import UNPRICED, Price

# Re-exported until tests/e2e/test_upstream_http.py imports it from stream.py.
from chatrelay.upstreams.stream import Timeouts, UpstreamStream

# An upstream's error body is read for its message only; never let it fill memory.
MAX_ERROR_BODY = 64 * 1024
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    name: str
    dialect: str
    base_url: str
    models: tuple[str, ...]
    api_key: str | None = None
    # The setting an operator changes to point chatrelay elsewhere, named in error messages.
    configured_by: str = ""
    # Share of the requests, relative to the other upstreams of the same model.
    weight: float = 1.0
    # Takes no images, audio or files (answers/carriage.py refuses them by name).
    text_only: bool = False
    # Request fields left out for it instead of refused.
    drop_params: tuple[str, ...] = ()
    # What it charges (upstreams/pricing.py), and its models' own prices over that.
    price: Price = UNPRICED
    model_prices: Mapping[str, Price] = field(default_factory=dict)
    # Nanos all answers on it may spend per budget period (0: no cap).
    spend_cap: int = 0

    def price_of(self, model: str) -> Price:
        return self.model_prices.get(model, self.price)


# Statuses that say the request itself is wrong or not allowed: another upstream (or a
# second try) would answer the same, so the user gets the upstream's own message at once.
NOT_RETRYABLE_STATUSES = frozenset({400, 401, 403, 404, 413, 422})


class UpstreamFailure(ChatRelayError):
    """An upstream failed. ``started`` tells whether any of the answer had been streamed."""

    def __init__(
        self,
        message: str,
        *,
        kind: str,
        code: str,
        started: bool = False,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        ChatRelayError.__init__(self, 502, message, code=code, type=UPSTREAM)
        self.kind = kind
        self.started = started
        # The connection was refused or the host name does not resolve: a wrong URL or a
        # server that is down, not a busy one. Waiting would not help (see answers/answer.py).
        self.nothing_there = False
        self.upstream_status = status
        self.retry_after = retry_after

    def copy(self) -> UpstreamFailure:
        """The same failure without a traceback (whose frames hold the attempt's objects), to
        keep."""
        failure = UpstreamFailure(
            self.message,
            kind=self.kind,
            code=self.code,
            started=self.started,
            status=self.upstream_status,
            retry_after=self.retry_after,
        )
        failure.nothing_there = self.nothing_there
        return failure

    @property
    def retryable(self) -> bool:
        return self.upstream_status not in NOT_RETRYABLE_STATUSES

    @property
    def counts_against_upstream(self) -> bool:
        """Whether the upstream's circuit breaker should count this failure."""
        return self.retryable and self.upstream_status != 429


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:  # an HTTP date: rare from LLM servers; a short pause is as good
        return 1.0


class Upstream:
    """An OpenAI-compatible or Livepeer endpoint with one reused connection pool."""

    def __init__(self, config: UpstreamConfig, *, timeouts: Timeouts) -> None:
        self.config = config
        self.dialect = DIALECTS[config.dialect]
        self.url = self.dialect.url(config.base_url)
        # What messages and logs show: the URL without credentials (user:password@).
        self.shown_url = without_credentials(self.url)
        self.timeouts = timeouts
        self._headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if config.api_key:
            self._headers["Authorization"] = f"Bearer {config.api_key}"
        self._pool: ConnectionPool | None = None
        self.active = 0  # streams open right now, for least-busy selection
        # It has answered HTTP (any status) since start: what /readyz waits for.
        self.answered = False

    def _connections(self) -> ConnectionPool:
        if self._pool is None:
            try:
                self._pool = ConnectionPool(self.url, connect_timeout=self.timeouts.connect)
            except ValueError as exc:
                raise self._refused(f"is not a usable URL ({exc})", "upstream_unreachable") from exc
        return self._pool

    @asynccontextmanager
    async def stream(
        self, model: str, messages: list[UpstreamMessage], params: GenerationParams
    ) -> AsyncIterator[UpstreamStream]:
        """Open a streamed answer. Raises UpstreamFailure before the first byte on any failure.

        One context manager, not two nested: each one is held for as long as the answer
        streams (docs/performance.md#upstream-stream)."""
        self.active += 1
        try:
            drop, extra = self.config.drop_params, params.extra
            if drop and extra and any(name in extra for name in drop):
                kept = {k: v for k, v in extra.items() if k not in drop}
                params = replace(params, extra=kept)
            body = self.dialect.body(model, messages, params)
            try:
                async with asyncio.timeout(self.timeouts.first_token):
                    exchange, head = await self._send(b"POST", body)
            except TimeoutError:
                raise self._refused(
                    f"did not answer within {self.timeouts.first_token:g} s", "upstream_timeout"
                ) from None
            stream: UpstreamStream | None = None
            try:
                if head.status != 200:
                    raw = await self._error_body(exchange)
                    raise UpstreamFailure(
                        f"Upstream '{self.config.name}' ({self.shown_url}) answered "
                        f"{head.status}: {upstream_error_message(raw)}",
                        kind=f"http_{head.status}",
                        code="upstream_http_error",
                        status=head.status,
                        retry_after=_retry_after(head.headers.get("retry-after")),
                    )
                stream = UpstreamStream(exchange, self, self.timeouts)
                yield stream  # relay() closes the stream itself, however it ends
            finally:
                # A whole answer's connection goes back to the pool; a stopped or abandoned
                # one is dropped at once, so the upstream stops generating.
                exchange.close(drain=stream is not None and stream.complete)
        finally:
            self.active -= 1

    async def _send(
        self, method: bytes, body: bytes = b"", target: str | None = None
    ) -> tuple[Exchange, ResponseHead]:
        """A request and its response's head. A kept-alive connection the server closed
        before answering is retried once on a new one (the server never saw the request)."""
        pool = self._connections()
        for attempt in (1, 2):
            try:
                exchange = await pool.request(method, body, self._headers, target)
            except OSError as exc:
                failure = self._refused(f"is unreachable ({exc})", "upstream_unreachable")
                failure.nothing_there = _nothing_there(exc)
                raise failure from exc
            try:
                head = await exchange.head()
                self.answered = True
                return exchange, head
            except ResponseHeadTooLarge as exc:
                exchange.close()
                raise self._refused(f"sent {exc}", "upstream_bad_response") from exc
            except OSError as exc:
                exchange.close()
                if attempt == 1 and exchange.reused and not exchange.received_any:
                    continue
                raise self._refused(
                    f"failed before answering ({exc})", "upstream_unreachable"
                ) from exc
            except BaseException:
                exchange.close()
                raise
        raise AssertionError("unreachable")

    async def _error_body(self, exchange: Exchange) -> bytes:
        """An error response's body, for its message: at most MAX_ERROR_BODY bytes, within
        the connect timeout."""
        body = bytearray()

        def take(data: bytes) -> None:
            body.extend(data)
            if len(body) >= MAX_ERROR_BODY:
                raise _Enough

        exchange.deliver(take)
        with contextlib.suppress(_Enough, OSError, TimeoutError):
            async with asyncio.timeout(self.timeouts.connect):
                await exchange.finished
        return bytes(body[:MAX_ERROR_BODY])

    async def probe(self) -> bool:
        """Whether the upstream answers HTTP at all (any status below 500): a cheap GET that
        costs nothing on a paying gateway, unlike a generation."""
        url = self.config.base_url.rstrip("/")
        if self.dialect.name == "openai":
            url = self.dialect.url(url).rsplit("/chat/completions", 1)[0] + "/models"
        try:
            async with asyncio.timeout(self.timeouts.connect):
                exchange, head = await self._send(b"GET", target=request_target(url))
        except (UpstreamFailure, TimeoutError):
            return False
        except Exception:  # a broken configuration: reported, and the health loop goes on
            log.exception("probing upstream %s failed", self.config.name)
            return False
        exchange.close()
        return head.status < 500

    def failed(self, what: str, *, kind: str, started: bool) -> UpstreamFailure:
        """A failure of one of its streams (``kind``: ``stall``, ``cut``, ``bad_event``...)."""
        return UpstreamFailure(
            f"Upstream '{self.config.name}' ({self.shown_url}) {what}.",
            kind=kind,
            code=f"upstream_{kind}",
            started=started,
        )

    def _refused(self, what: str, code: str) -> UpstreamFailure:
        hint = f" Check {self.config.configured_by}." if self.config.configured_by else ""
        return UpstreamFailure(
            f"Upstream '{self.config.name}' at {self.shown_url} {what}.{hint}", kind=code, code=code
        )

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


def _nothing_there(exc: OSError) -> bool:
    """Whether the connection failed because nobody listens there or the name is unknown
    (a timeout is not: a far or overloaded server may still answer)."""
    return isinstance(exc, socket.gaierror | ConnectionRefusedError) or (
        exc.errno == errno.ECONNREFUSED
    )


def without_credentials(url: str) -> str:
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]))


class _Enough(Exception):
    """An error body has been read as far as it will be."""
