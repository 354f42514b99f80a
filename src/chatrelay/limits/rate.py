"""Request rate limits: at most N requests per key in any sliding window.

Usage::

    rule = parse_rate_limit("20/minute")          # RateRule(limit=20, window=60.0) or None
                                                  # (both in chatrelay.setting_types)
    limiter = MemoryRateLimiter()
    wait = await limiter.hit(key="ip:10.0.0.7", rule=rule)
    if wait is not None: ...                      # refused: try again in ``wait`` seconds

A sliding log (the times of the last N accepted requests) rather than fixed windows: "20 per
minute" then holds over *any* 60 seconds, and the wait it answers is exact. Refused requests
are not logged, so hammering does not push the wait further out.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from chatrelay.setting_types import RateRule


class RateLimiter(Protocol):
    async def hit(self, *, key: str, rule: RateRule) -> float | None:
        """Count a request for ``key`` if it fits (None); else the seconds until one would."""
        ...


class MemoryRateLimiter:
    """The sliding log per key in this process's memory."""

    PRUNE_ABOVE = 10_000

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._hits: dict[str, deque[float]] = {}

    async def hit(self, *, key: str, rule: RateRule) -> float | None:
        now = self._clock()
        if len(self._hits) > self.PRUNE_ABOVE:
            for stale in [k for k, hits in self._hits.items() if hits[-1] <= now - rule.window]:
                del self._hits[stale]
        hits = self._hits.setdefault(key, deque())
        while hits and hits[0] <= now - rule.window:
            hits.popleft()
        if len(hits) >= rule.limit:
            return hits[0] + rule.window - now
        hits.append(now)
        return None
