"""The sign-in throttle: at most N failed attempts per key (username, client address) in a
window, counted in this process or shared by every process through Redis.

Usage::

    throttle = sign_in_throttle(settings, redis, store_down=quotas.store_down)
    attempt = new_attempt_id()
    wait = await throttle.attempt(["user:ann", "ip:10.0.0.1"], attempt_id=attempt)
    if wait is not None:
        ...  # answer 429 with Retry-After: ceil(wait)
    ...      # check the password (slow); on success:
    await throttle.reset("user:ann")                           # that username starts afresh
    await throttle.forgive("ip:10.0.0.1", attempt_id=attempt)  # only this attempt, not the rest

An attempt counts as a failure from the moment it is admitted, in the same atomic step as the
check, so a parallel burst cannot all pass the check before any is counted. A success takes
back only its own count from the address: an attacker signing in to an account of their own
between guesses wipes nothing of the address's failures.

In this process: :class:`MemorySignInThrottle`. Shared: ``RedisSignInThrottle`` (beside the
other Redis backends, in ``redis_backend.py``), under the limits' fail-open policy when Redis
is down (``store_down``): checking refuses with a 503, or lets the attempt through when failing
open; forgiving or resetting is skipped with a warning.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from chatrelay.config import Settings
from chatrelay.limits.redis_backend import RedisLimits, RedisSignInThrottle
from chatrelay.limits.refusals import LimitStoreDown

log = logging.getLogger(__name__)

# What the limits do when their store is down: raise the 503, or return to fail open.
StoreDown = Callable[[LimitStoreDown], None]


def sign_in_throttle(
    settings: Settings, redis: RedisLimits | None = None, *, store_down: StoreDown
) -> SignInThrottle:
    """``CHATRELAY_SIGN_IN_MAX_FAILURES`` per key in ``CHATRELAY_SIGN_IN_WINDOW``: counted in
    Redis when the limits are (``redis``), else in this process."""
    max_failures, window = settings.sign_in_max_failures, settings.sign_in_window
    if redis is None:
        return MemorySignInThrottle(max_failures=max_failures, window=window)
    shared = RedisSignInThrottle(redis, max_failures=max_failures, window=window)
    return _FailSafe(shared, store_down)


def new_attempt_id() -> str:
    return secrets.token_hex(8)


class SignInThrottle(Protocol):
    async def attempt(self, keys: Sequence[str], *, attempt_id: str) -> float | None:
        """Count a failure for every key unless one of them is over its limit: then the
        seconds until all may try again, and nothing counted. One atomic step."""
        ...

    async def forgive(self, key: str, *, attempt_id: str) -> None:
        """The attempt succeeded: it no longer counts against ``key``."""
        ...

    async def reset(self, key: str) -> None:
        """Forget ``key``'s failures (a successful sign-in clears its username's count)."""
        ...


class MemorySignInThrottle:
    """A sliding window of failure times per key, in this process's memory."""

    # Above this many keys, a failure first drops every key whose window has emptied, so a
    # spray of distinct usernames cannot grow memory without bound.
    PRUNE_ABOVE = 10_000

    def __init__(
        self,
        *,
        max_failures: int,
        window: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window = window
        self._clock = clock
        # Per key: (time, attempt id) of its newest failures, oldest first.
        self._failures: dict[str, deque[tuple[float, str]]] = {}

    def _recent(self, key: str, now: float) -> deque[tuple[float, str]] | None:
        failures = self._failures.get(key)
        if failures is None:
            return None
        while failures and failures[0][0] <= now - self.window:
            failures.popleft()
        if not failures:
            del self._failures[key]
            return None
        return failures

    async def attempt(self, keys: Sequence[str], *, attempt_id: str) -> float | None:
        # Atomic as it is: nothing in here awaits.
        wait = self._wait(keys)
        if wait is None:
            self._record(keys, attempt_id)
        return wait

    async def forgive(self, key: str, *, attempt_id: str) -> None:
        failures = self._failures.get(key)
        if failures is not None:
            for entry in [entry for entry in failures if entry[1] == attempt_id]:
                failures.remove(entry)

    def _wait(self, keys: Iterable[str]) -> float | None:
        now = self._clock()
        waits = [
            failures[-self.max_failures][0] + self.window - now
            for key in keys
            if (failures := self._recent(key, now)) is not None
            and len(failures) >= self.max_failures
        ]
        return max(waits) if waits else None

    def _record(self, keys: Iterable[str], attempt_id: str) -> None:
        now = self._clock()
        if len(self._failures) > self.PRUNE_ABOVE:
            for key in list(self._failures):
                self._recent(key, now)
        for key in keys:
            failures = self._failures.setdefault(key, deque())
            failures.append((now, attempt_id))
            # Only the newest max_failures matter for the decision.
            while len(failures) > self.max_failures:
                failures.popleft()

    async def reset(self, key: str) -> None:
        self._failures.pop(key, None)


class _FailSafe:
    """A shared :class:`SignInThrottle` under the limits' fail-open policy when Redis is down."""

    def __init__(self, inner: SignInThrottle, store_down: StoreDown) -> None:
        self._inner = inner
        self._store_down = store_down

    async def attempt(self, keys: Sequence[str], *, attempt_id: str) -> float | None:
        try:
            return await self._inner.attempt(keys, attempt_id=attempt_id)
        except LimitStoreDown as exc:
            self._store_down(exc)  # 503 unless failing open
            return None

    async def forgive(self, key: str, *, attempt_id: str) -> None:
        try:
            await self._inner.forgive(key, attempt_id=attempt_id)
        except LimitStoreDown:
            log.warning("could not forgive a sign-in attempt: the limits store is down")

    async def reset(self, key: str) -> None:
        try:
            await self._inner.reset(key)
        except LimitStoreDown:
            log.warning("could not reset a sign-in throttle: the limits store is down")
