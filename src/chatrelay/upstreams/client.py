"""One upstream endpoint: its connection pool, and a streamed request to it.

Usage::

    upstream = Upstream(UpstreamConfig(name="livepeer", dialect="livepeer", base_url=url, ...))
    async with upstream.stream(model, messages, params, timeouts) as stream:
        async for chunk in stream:      # UpstreamChunk, normalised whatever the dialect
            ...
    await upstream.close()

aiohttp is the client: on the hot path it reads an SSE body with less CPU per chunk than
httpx (bench/http_client_choice.py has the measurement).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import aiohttp

from chatrelay.errors import UPSTREAM, ChatRelayError
from chatrelay.sse import SSEDecoder
from chatrelay.upstreams.chunk import UpstreamChunk
from chatrelay.upstreams.dialects import DIALECTS, GenerationParams, Message, upstream_error_message

# An upstream's error body is read for its message only; never let it fill memory.
MAX_ERROR_BODY = 64 * 1024
# Malformed events are skipped, up to this many in one answer; past it the upstream is broken.
MAX_MALFORMED_EVENTS = 20
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


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float
    first_token: float
    stall: float


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
        self.upstream_status = status
        self.retry_after = retry_after

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


class Watchdog:
    """Cancels the current task once ``expires`` (loop time) has passed: the first-token and
    stall timers of a stream.

    Hand-written because ``asyncio.Timeout.reschedule`` per chunk was ~8% of the relay's CPU:
    a timer-heap insert, a cancelled handle left behind, and on Python 3.11 a ``getpid()``
    system call (``get_running_loop``) for every token. Here progress is one float store;
    the one timer checks ``expires`` when it goes off and, if it moved, waits out the rest.
    """

    __slots__ = ("_cancelling", "_fired", "_handle", "_loop", "_task", "expires")

    def __init__(self, loop: asyncio.AbstractEventLoop, expires: float) -> None:
        task = asyncio.current_task()
        assert task is not None, "a Watchdog guards a task"
        self._loop, self._task, self.expires = loop, task, expires
        self._cancelling = task.cancelling()  # cancellations that were not ours
        self._fired = False
        self._handle: asyncio.TimerHandle | None = loop.call_at(expires, self._check)

    def _check(self) -> None:
        if self._loop.time() < self.expires:  # progress since it was set: wait for the rest
            self._handle = self._loop.call_at(self.expires, self._check)
            return
        self._handle = None
        self._fired = True
        self._task.cancel()

    def reset(self, expires: float) -> None:
        """A new deadline, sooner or later than the one the timer is set for."""
        self.disarm()
        self.expires = expires
        self._handle = self._loop.call_at(expires, self._check)

    def fired(self) -> bool:
        """For an ``except CancelledError``: whether the cancellation was this timer's alone
        (then it is taken back); False for a stop or shutdown, which must go on."""
        return self._fired and self._task.uncancel() <= self._cancelling

    def disarm(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


@dataclass(slots=True)
class UpstreamStream:
    """The body of one streamed answer, as normalised chunks, with both stall timers applied."""

    _response: aiohttp.ClientResponse
    _upstream: Upstream
    _timeouts: Timeouts
    received_content: bool = field(default=False)
    malformed: int = field(default=0)
    _watchdog: Watchdog | None = field(default=None)

    def __aiter__(self) -> AsyncIterator[UpstreamChunk]:
        return self._chunks()

    def close(self) -> None:
        """The reader is done with the stream. The watchdog is disarmed here, in the reading
        task, and not only when the abandoned generator is collected (a loop turn later), by
        which time it could have gone off and cancelled the reader's next attempt."""
        if self._watchdog is not None:
            self._watchdog.disarm()

    async def _chunks(self) -> AsyncIterator[UpstreamChunk]:
        dialect = self._upstream.dialect
        decoder = SSEDecoder()
        loop = asyncio.get_running_loop()
        stall = self._timeouts.stall
        finished = False
        watchdog = self._watchdog = Watchdog(loop, loop.time() + self._timeouts.first_token)
        try:
            async for data in self._response.content.iter_any():
                for event in decoder.feed(data):
                    chunk = self._parse(event.data)
                    if chunk is None:
                        continue
                    if self.received_content:
                        watchdog.expires = loop.time() + stall
                    elif chunk.content:  # the first token: the stall timer from now on
                        self.received_content = True
                        watchdog.reset(loop.time() + stall)
                    if chunk.finish_reason or chunk.done:
                        finished = True
                    yield chunk
                    if chunk.done or chunk.error:
                        return
            for event in decoder.flush():
                chunk = self._parse(event.data)
                if chunk is None:
                    continue
                finished = finished or bool(chunk.finish_reason or chunk.done)
                yield chunk
        except asyncio.CancelledError:
            if not watchdog.fired():
                raise
            if self.received_content:
                raise self._failure(
                    f"stalled: no data for {stall:g} s (CHATRELAY_STALL_TIMEOUT)", kind="stall"
                ) from None
            raise self._failure(
                f"sent no token within {self._timeouts.first_token:g} s "
                "(CHATRELAY_FIRST_TOKEN_TIMEOUT); a cold model may still be loading",
                kind="first_token_timeout",
            ) from None
        except (
            aiohttp.ClientPayloadError,
            aiohttp.ServerDisconnectedError,
            ConnectionError,
        ) as exc:
            raise self._failure(
                f"dropped the connection mid-answer ({exc})", kind="disconnect"
            ) from exc
        finally:
            watchdog.disarm()
        if not finished:
            if dialect.eof_is_finish and self.received_content:
                yield UpstreamChunk(finish_reason="stop")
            else:
                raise self._failure("ended the stream before the answer was finished", kind="eof")

    def _parse(self, data: str) -> UpstreamChunk | None:
        """One event, or None for a malformed one: a bad line among good ones is skipped."""
        try:
            return self._upstream.dialect.parse_event(data)
        except ValueError as exc:
            self.malformed += 1
            log.warning("upstream %s: skipped a malformed event", self._upstream.config.name)
            if self.malformed > MAX_MALFORMED_EVENTS:
                raise self._failure(
                    f"sent {self.malformed} malformed events", kind="bad_event"
                ) from exc
            return None

    def _failure(self, what: str, *, kind: str) -> UpstreamFailure:
        up = self._upstream
        return UpstreamFailure(
            f"Upstream '{up.config.name}' ({up.url}) {what}.",
            kind=kind,
            code=f"upstream_{kind}",
            started=self.received_content,
        )


class Upstream:
    """An OpenAI-compatible or Livepeer endpoint with one reused connection pool."""

    def __init__(self, config: UpstreamConfig, *, timeouts: Timeouts) -> None:
        self.config = config
        self.dialect = DIALECTS[config.dialect]
        self.url = self.dialect.url(config.base_url)
        self.timeouts = timeouts
        self._headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if config.api_key:
            self._headers["Authorization"] = f"Bearer {config.api_key}"
        self._session: aiohttp.ClientSession | None = None
        self.active = 0  # streams open right now, for least-busy selection

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            # No total/read timeout here: the stall timers in UpstreamStream own that job.
            timeout = aiohttp.ClientTimeout(total=None, connect=self.timeouts.connect)
            connector = aiohttp.TCPConnector(limit=0, enable_cleanup_closed=True)
            self._session = aiohttp.ClientSession(
                timeout=timeout, connector=connector, auto_decompress=False
            )
        return self._session

    @asynccontextmanager
    async def stream(
        self, model: str, messages: list[Message], params: GenerationParams
    ) -> AsyncIterator[UpstreamStream]:
        """Open a streamed answer. Raises UpstreamFailure before the first byte on any failure."""
        self.active += 1
        try:
            async with self._open(model, messages, params) as stream:
                yield stream
        finally:
            self.active -= 1

    @asynccontextmanager
    async def _open(
        self, model: str, messages: list[Message], params: GenerationParams
    ) -> AsyncIterator[UpstreamStream]:
        body = self.dialect.body(model, messages, params)
        try:
            async with asyncio.timeout(self.timeouts.first_token):
                response = await self._client().post(self.url, data=body, headers=self._headers)
        except TimeoutError:
            raise self._refused(
                f"did not answer within {self.timeouts.first_token:g} s", "upstream_timeout"
            ) from None
        except aiohttp.ClientConnectorError as exc:
            raise self._refused(
                f"is unreachable ({exc.os_error or exc})", "upstream_unreachable"
            ) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise self._refused(f"failed before answering ({exc})", "upstream_unreachable") from exc
        try:
            if response.status != 200:
                raw = await response.content.read(MAX_ERROR_BODY)
                raise UpstreamFailure(
                    f"Upstream '{self.config.name}' ({self.url}) answered {response.status}: "
                    f"{upstream_error_message(raw)}",
                    kind=f"http_{response.status}",
                    code="upstream_http_error",
                    status=response.status,
                    retry_after=_retry_after(response.headers.get("Retry-After")),
                )
            stream = UpstreamStream(response, self, self.timeouts)
            try:
                yield stream
            finally:
                stream.close()
        finally:
            if response.content.at_eof():
                response.release()  # read to the end: the connection goes back to the pool
            else:
                # Closing drops the socket at once, so a stopped or abandoned upstream stops.
                response.close()

    async def probe(self) -> bool:
        """Whether the upstream answers HTTP at all (any status below 500): a cheap GET that
        costs nothing on a paying gateway, unlike a generation."""
        url = self.config.base_url.rstrip("/")
        if self.dialect.name == "openai":
            url = self.dialect.url(url).rsplit("/chat/completions", 1)[0] + "/models"
        try:
            async with self._client().get(
                url,
                headers=self._headers,
                timeout=aiohttp.ClientTimeout(total=self.timeouts.connect),
            ) as response:
                return response.status < 500
        except (aiohttp.ClientError, OSError, TimeoutError):
            return False

    def _refused(self, what: str, code: str) -> UpstreamFailure:
        hint = f" Check {self.config.configured_by}." if self.config.configured_by else ""
        return UpstreamFailure(
            f"Upstream '{self.config.name}' at {self.url} {what}.{hint}", kind=code, code=code
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
