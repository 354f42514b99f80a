"""Waiting for something another task or process does.

A test waits for the condition itself, never for a time it should take: on a loaded machine
(two cores, several xdist workers, a browser) anything can take longer than expected. The
bound is only there so that a condition that never comes fails the test with its own message
instead of pytest-timeout's; it is no claim about how fast anything is.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

# Well above anything a loaded machine needs, well below pytest-timeout's 120 s per test.
HANG = 60.0


async def wait_until(predicate: Callable[[], object], within: float = HANG) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, f"condition never reached (waited {within} s)"
        await asyncio.sleep(0.01)


async def wait_until_async(check: Callable[[], Awaitable[object]], within: float = HANG) -> None:
    """As wait_until, for a condition that has to be awaited (a database read, a request)."""
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, f"condition never reached (waited {within} s)"
        await asyncio.sleep(0.02)
