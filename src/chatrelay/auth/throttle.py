"""Sign-in throttling: at most N failed attempts per key (username, client IP) in a window.

Usage::

    throttle = MemorySignInThrottle(max_failures=5, window=900)
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

The in-process backend counts per process; a Redis backend (shared by every worker) only has
to implement :class:`SignInThrottle`.
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol


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
