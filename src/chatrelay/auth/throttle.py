"""Sign-in throttling: at most N failed attempts per key (username, client IP) in a window.

Usage::

    throttle = MemorySignInThrottle(max_failures=5, window=900)
    if (wait := await throttle.retry_after(["user:ann", "ip:10.0.0.1"])) is not None:
        ...  # answer 429 with Retry-After: ceil(wait)
    await throttle.record_failure(["user:ann", "ip:10.0.0.1"])

The in-process backend counts per process; a Redis backend (shared by every worker) only has
to implement :class:`SignInThrottle`.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Protocol


class SignInThrottle(Protocol):
    async def retry_after(self, keys: Iterable[str]) -> float | None:
        """Seconds until any of ``keys`` may try again, or None if all may try now."""
        ...

    async def record_failure(self, keys: Iterable[str]) -> None: ...

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
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str, now: float) -> deque[float] | None:
        failures = self._failures.get(key)
        if failures is None:
            return None
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        if not failures:
            del self._failures[key]
            return None
        return failures

    async def retry_after(self, keys: Iterable[str]) -> float | None:
        now = self._clock()
        waits = [
            failures[-self.max_failures] + self.window - now
            for key in keys
            if (failures := self._recent(key, now)) is not None
            and len(failures) >= self.max_failures
        ]
        return max(waits) if waits else None

    async def record_failure(self, keys: Iterable[str]) -> None:
        now = self._clock()
        if len(self._failures) > self.PRUNE_ABOVE:
            for key in list(self._failures):
                self._recent(key, now)
        for key in keys:
            failures = self._failures.setdefault(key, deque())
            failures.append(now)
            # Only the newest max_failures matter for the decision.
            while len(failures) > self.max_failures:
                failures.popleft()

    async def reset(self, key: str) -> None:
        self._failures.pop(key, None)
