"""Request rate limits: at most N requests per key in any sliding window.

Usage::

    rule = parse_rate_limit("20/minute")          # RateRule(limit=20, window=60.0) or None
    limiter = MemoryRateLimiter()
    wait = await limiter.hit(key="ip:10.0.0.7", rule=rule)
    if wait is not None: ...                      # refused: try again in ``wait`` seconds

A sliding log (the times of the last N accepted requests) rather than fixed windows: "20 per
minute" then holds over *any* 60 seconds, and the wait it answers is exact. Refused requests
are not logged, so hammering does not push the wait further out.
"""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

_UNITS = {"second": 1.0, "minute": 60.0, "hour": 3600.0, "day": 86400.0}
_ALIASES = {"s": "second", "sec": "second", "m": "minute", "min": "minute", "h": "hour"}
_ALIASES |= {"d": "day", **{unit: unit for unit in _UNITS}}
_RULE = re.compile(r"\s*(\d+)\s*(?:/|per)\s*(\d+(?:\.\d+)?)?\s*([a-z]+?)s?\s*", re.IGNORECASE)
RULE_FORMAT = "N/unit or N/<count><unit>, unit one of second, minute, hour, day (e.g. 20/minute)"


@dataclass(frozen=True, slots=True)
class RateRule:
    limit: int
    window: float  # seconds
    text: str


def parse_rate_limit(text: str | None) -> RateRule | None:
    """``"20/minute"``, ``"5/10s"``, ``"1000 per day"``; None, empty or ``0/...`` is no limit."""
    if text is None or not text.strip():
        return None
    match = _RULE.fullmatch(text)
    unit = _ALIASES.get(match.group(3).lower()) if match else None
    if match is None or unit is None:
        raise ValueError(f"invalid rate limit {text!r}: expected {RULE_FORMAT}")
    count = float(match.group(2) or 1)
    limit = int(match.group(1))
    if count <= 0:
        raise ValueError(f"invalid rate limit {text!r}: the window must be longer than 0")
    return RateRule(limit, count * _UNITS[unit], text.strip()) if limit > 0 else None


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
