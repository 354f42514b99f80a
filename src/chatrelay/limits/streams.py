"""Concurrent answers per key (client IP): a slot is held from admission to the answer's end.

Usage::

    slots = MemoryStreamSlots()
    if await slots.acquire(key="ip:10.0.0.7", slot_id=rid, limit=3, lease=60):
        ...                                   # generate; renew the lease meanwhile
        await slots.release(key="ip:10.0.0.7", slot_id=rid)

Slots are leases too, so a crashed process's slots free themselves.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Protocol


class StreamSlots(Protocol):
    async def acquire(self, *, key: str, slot_id: str, limit: int, lease: float) -> bool: ...

    async def release(self, *, key: str, slot_id: str) -> None: ...

    async def renew(self, *, slots: Sequence[tuple[str, str]], lease: float) -> None:
        """Push out the expiry of these (key, slot_id) slots; expired ones stay gone."""
        ...


class MemoryStreamSlots:
    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._slots: dict[str, dict[str, float]] = {}
        # Per key, no slot's lease ends before this (renewals only push ends out): the slots
        # are scanned for stale ones once it has passed, not at every admission (a burst from
        # one address made that a scan of every slot held per answer, C² in all).
        self._next_end: dict[str, float] = {}

    async def acquire(self, *, key: str, slot_id: str, limit: int, lease: float) -> bool:
        now = self._clock()
        held = self._slots.setdefault(key, {})
        if now >= self._next_end.get(key, math.inf):
            for stale in [s for s, until in held.items() if until <= now]:
                del held[stale]
            self._next_end[key] = min(held.values(), default=math.inf)
        if len(held) >= limit:
            return False
        held[slot_id] = now + lease
        self._next_end[key] = min(self._next_end.get(key, math.inf), now + lease)
        return True

    async def release(self, *, key: str, slot_id: str) -> None:
        held = self._slots.get(key)
        if held is not None:
            held.pop(slot_id, None)
            if not held:
                del self._slots[key]
                self._next_end.pop(key, None)

    async def renew(self, *, slots: Sequence[tuple[str, str]], lease: float) -> None:
        now = self._clock()
        for key, slot_id in slots:
            held = self._slots.get(key)
            if held is not None and held.get(slot_id, 0.0) > now:
                held[slot_id] = now + lease
