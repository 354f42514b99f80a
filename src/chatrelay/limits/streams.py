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
from dataclasses import dataclass, field
from typing import Protocol


class StreamSlots(Protocol):
    async def acquire(self, *, key: str, slot_id: str, limit: int, lease: float) -> bool: ...

    async def release(self, *, key: str, slot_id: str) -> None: ...

    async def renew(self, *, slots: Sequence[tuple[str, str]], lease: float) -> None:
        """Push out the expiry of these (key, slot_id) slots; expired ones stay gone."""
        ...


@dataclass(slots=True)
class _Held:
    """One key's slots: when each one's lease ends."""

    ends: dict[str, float] = field(default_factory=dict)
    # No slot's lease ends before this (renewals only push ends out): the slots are scanned for
    # stale ones once it has passed, not at every admission (a burst from one address made
    # that a scan of every slot held per answer, C² in all).
    next_end: float = math.inf

    def prune(self, now: float) -> None:
        if now < self.next_end:
            return
        for stale in [s for s, until in self.ends.items() if until <= now]:
            del self.ends[stale]
        self.next_end = min(self.ends.values(), default=math.inf)

    def add(self, slot_id: str, until: float) -> None:
        self.ends[slot_id] = until
        self.next_end = min(self.next_end, until)


class MemoryStreamSlots:
    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._slots: dict[str, _Held] = {}

    async def acquire(self, *, key: str, slot_id: str, limit: int, lease: float) -> bool:
        now = self._clock()
        held = self._slots.setdefault(key, _Held())
        held.prune(now)
        if len(held.ends) >= limit:
            return False
        held.add(slot_id, now + lease)
        return True

    async def release(self, *, key: str, slot_id: str) -> None:
        held = self._slots.get(key)
        if held is not None:
            held.ends.pop(slot_id, None)
            if not held.ends:
                del self._slots[key]

    async def renew(self, *, slots: Sequence[tuple[str, str]], lease: float) -> None:
        now = self._clock()
        for key, slot_id in slots:
            held = self._slots.get(key)
            if held is not None and held.ends.get(slot_id, 0.0) > now:
                held.ends[slot_id] = now + lease
