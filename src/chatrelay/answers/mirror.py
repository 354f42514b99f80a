"""Answer events shared between instances through Redis, and stops sent across them.

With ``CHATRELAY_REDIS_URL`` set, the frames of every answer are mirrored into a Redis Stream
(``{prefix}answer:{answer_id}``; entry id ``0-{event id}``, so a resume from event ``n`` is an
``XREAD`` from ``0-n``) that a client attached to any other instance can follow. The stream is
capped in length and expires ``ttl`` seconds after its answer ended. A stop sent to any
instance is published on ``{prefix}stop``; the instance that runs the answer stops it.

The answer never waits on Redis and does nothing per token for it: one background
task copies what every tracked answer's buffer gained since the last round into one pipeline,
every ``interval`` seconds (a round trip per token per answer would cost more CPU than the
whole relay).

Usage::

    mirror = EventMirror.connect(url, prefix="chatrelay:", on_stop=service.stop_local)
    mirror.start()
    mirror.track(answer.id, answer.buffer)           # mirrored until the buffer is closed
    async for data in mirror.follow(answer_id, after=n, ending=...):  # on another instance
        ...
    await mirror.publish_stop(answer_id)
    await mirror.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from chatrelay.answers.events import EventBuffer, with_id
from chatrelay.answers.frames import DONE

log = logging.getLogger(__name__)

END_FIELD = b"end"
FRAME_FIELD = b"f"
# A stream outlives a crashed writer by at most this long (refreshed while it is written).
ORPHAN_TTL = 3600
# Entry ids are two 64-bit numbers: a position past this one is no id Redis can read.
LAST_POSITION = 2**63


@dataclass
class _Mirror:
    buffer: EventBuffer
    written: int = 0


# How often and how long close() cancels and waits for its tasks.
CANCEL_TRIES = 20
CANCEL_WAIT = 0.25


class EventMirror:
    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str,
        on_stop: Callable[[str], object],
        interval: float = 0.02,
        ttl: float = 60.0,
        max_events: int = 10_000,
        idle_check: float = 2.0,
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.stop_channel = f"{prefix}stop"
        self.on_stop = on_stop
        self.interval = interval
        self.ttl = max(1, round(ttl))
        self.max_events = max_events
        # A follower that heard nothing for this long asks whether the answer still runs.
        self.idle_check = idle_check
        self._mirrors: dict[str, _Mirror] = {}
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    def connect(
        cls, url: str, *, connect_timeout: float, idle_check: float = 2.0, **options: object
    ) -> EventMirror:
        # Followers block in XREAD for ``idle_check`` seconds at a time: the socket timeout is
        # longer than that, so a half-open connection fails instead of hanging for ever.
        redis = Redis.from_url(
            url,
            socket_connect_timeout=connect_timeout,
            socket_timeout=idle_check + 10.0,
            health_check_interval=30,
        )
        return cls(redis, idle_check=idle_check, **options)  # type: ignore[arg-type]

    def key(self, answer_id: str) -> str:
        return f"{self.prefix}answer:{answer_id}"

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._mirror_forever(), name="event-mirror-mirror"),
            asyncio.create_task(self._listen_for_stops(), name="event-mirror-stops"),
        ]

    async def close(self) -> None:
        await _cancelled(self._tasks)
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            # What ended during shutdown, written once more (never holding shutdown up long).
            await asyncio.wait_for(self._mirror_round(), 2.0)
        await self.redis.aclose()

    # --- the writing side --------------------------------------------------------------

    def track(self, answer_id: str, buffer: EventBuffer) -> None:
        self._mirrors[answer_id] = _Mirror(buffer)
        self._wake.set()

    async def _mirror_forever(self) -> None:
        while True:
            if not self._mirrors:
                self._wake.clear()
                await self._wake.wait()
            await asyncio.sleep(self.interval)
            try:
                await self._mirror_round()
            except (RedisError, OSError) as exc:  # Redis away for a moment: the next round
                log.warning("mirroring answer events to Redis failed: %s", exc)  # catches up
                # Answers that have ended are stored in full: while Redis is away they are
                # not kept here (a re-attach replays them from the database instead).
                for answer_id, mirror in list(self._mirrors.items()):
                    if mirror.buffer.closed:
                        del self._mirrors[answer_id]

    async def _mirror_round(self) -> None:
        if not self._mirrors:
            return
        pipe = self.redis.pipeline(transaction=False)
        progress: list[tuple[str, _Mirror, int, bool]] = []
        for answer_id, mirror in list(self._mirrors.items()):
            buffer, closed = mirror.buffer, mirror.buffer.closed
            end = len(buffer)
            if end == mirror.written and not closed:
                continue
            key = self.key(answer_id)
            for index in range(mirror.written, end):
                pipe.xadd(
                    key,
                    {FRAME_FIELD: buffer.frame(index)},
                    id=f"0-{index + 1}",
                    maxlen=self.max_events,
                    approximate=True,
                )
            if closed:
                pipe.xadd(key, {END_FIELD: b"1"}, id=f"0-{end + 1}")
            pipe.expire(key, self.ttl if closed else ORPHAN_TTL)
            progress.append((answer_id, mirror, end, closed))
        if not progress:
            return
        # After a round that failed half-way, the frames that did land are refused as "equal
        # or smaller" than the stream's top id: harmless, they are there. Anything else is said.
        results = await pipe.execute(raise_on_error=False)
        failures = [r for r in results if isinstance(r, Exception) and "smaller" not in str(r)]
        if failures:
            log.warning("Redis refused %d answer events: %s", len(failures), failures[0])
        for answer_id, mirror, end, closed in progress:
            mirror.written = end
            if closed:
                del self._mirrors[answer_id]

    # --- the following side ------------------------------------------------------------

    async def exists(self, answer_id: str) -> bool:
        return bool(await self.redis.exists(self.key(answer_id)))

    async def follow(
        self,
        answer_id: str,
        *,
        after: int,
        ending: Callable[[], Awaitable[bytes | None]],
    ) -> AsyncIterator[bytes]:
        """The answer's frames after event ``after``, with their ids, live until its end.

        When nothing came for ``idle_check`` seconds, ``ending()`` is asked whether the answer
        still runs somewhere: ``None`` if so, else the frames that end the stream (its writer
        died: its stored state, e.g. interrupted).

        Every stream ends with ``[DONE]``: ``after`` at or past the end of a finished answer
        gives its ending again, past where a running one has come follows it from there, and
        an answer whose events end without one (refused before its stream began) ends with
        ``ending()``.
        """
        key = self.key(answer_id)
        last = await self._start(key, min(max(after, 0), LAST_POSITION))
        block = max(1, round(self.idle_check * 1000))
        ended = False  # whether the last frame sent was [DONE]
        while True:
            reply = await self.redis.xread({key: last}, count=1024, block=block)
            if not reply:
                final = await ending()
                if final is not None:
                    yield final
                    return
                continue
            out: list[bytes] = []
            for entry_id, fields in _entries(reply):
                if END_FIELD in fields:
                    if out:
                        yield b"".join(out)
                    if not ended:
                        yield await ending() or DONE
                    return
                event_id = int(entry_id.split(b"-", 1)[1])
                frame = fields[FRAME_FIELD]
                ended = frame == DONE
                out.append(with_id(event_id, frame))
                last = entry_id.decode()
            yield b"".join(out)

    async def _start(self, key: str, after: int) -> str:
        """The entry id a follower at event ``after`` reads on from."""
        # The newest three entries: the end marker, [DONE] and the final chunk, once ended.
        newest = _range_entries(await self.redis.xrevrange(key, count=3))
        if not newest:
            return f"0-{after}"
        top_id, top = newest[0]
        count = int(top_id.split(b"-", 1)[1])  # the events written, and the end marker
        if END_FIELD in top:
            count -= 1
            ends_done = len(newest) > 1 and newest[1][1].get(FRAME_FIELD) == DONE
            if after >= count and ends_done:
                return f"0-{count - 2}"  # its final chunk (or error) and [DONE], again
        # Running: from where the client is, even past what is mirrored yet (the mirror lags
        # the answer by up to a round; reading from its top would send events twice).
        return f"0-{after}"

    # --- stops -------------------------------------------------------------------------

    async def publish_stop(self, answer_id: str) -> int:
        """Ask every instance to stop the answer; how many instances heard it."""
        return int(await self.redis.publish(self.stop_channel, answer_id))

    async def _listen_for_stops(self) -> None:
        while True:
            try:
                async with self.redis.pubsub() as pubsub:
                    await pubsub.subscribe(self.stop_channel)
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            self.on_stop(message["data"].decode())
            except (RedisError, OSError) as exc:
                log.warning("listening for stops on Redis failed, again in 1 s: %s", exc)
                await asyncio.sleep(1.0)


async def _cancelled(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel the tasks and wait until they are done, cancelling again what carries on:
    redis-py's ``Pipeline.execute`` can absorb a cancellation and return, and a task that
    swallowed it goes back to waiting for work. Bounded: a few seconds at most."""
    for _ in range(CANCEL_TRIES):
        pending = [task for task in tasks if not task.done()]
        if not pending:
            return
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=CANCEL_WAIT)
    log.error("Redis mirror tasks did not stop: %s", [t for t in tasks if not t.done()])


def _range_entries(reply: Any) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """The entries of an XRANGE / XREVRANGE reply (a list of [id, fields] in both RESP2 and
    RESP3; the fields a list of pairs or already a dict)."""
    found: list[tuple[bytes, dict[bytes, bytes]]] = []
    for entry_id, fields in reply or []:
        if not isinstance(fields, dict):
            fields = dict(zip(fields[::2], fields[1::2], strict=True))
        found.append((entry_id, fields))
    return found


def _entries(reply: Any) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """The entries of a one-stream XREAD reply, in RESP2 (a list) or RESP3 (a map) form."""
    streams = reply.values() if isinstance(reply, dict) else (item[1] for item in reply)
    found: list[tuple[bytes, dict[bytes, bytes]]] = []
    for entries in streams:
        # RESP3 nests each stream's entries one level deeper.
        items = entries[0] if entries and isinstance(entries[0], list) else entries
        found += [(entry_id, fields) for entry_id, fields in items]
    return found
