"""uvicorn's server, run for ``chatrelay serve`` (cli/serve.py), with a once-a-second
housekeeping tick.

Usage::

    run(app, host="127.0.0.1", port=8000)   # returns after a clean shutdown (SIGINT/SIGTERM)

uvicorn wakes its main loop ten times a second, whether or not anything happens, to see if it
should exit and to refresh the ``Date`` header once a second: a large share of an idle
chatrelay's CPU (docs/performance.md#main-loop-tick). Here the loop wakes once a second, and
at once on a shutdown signal, so stopping is as quick as before; the ``Date`` header stays
exact to the second. uvicorn offers no setting for it, so its ``main_loop`` is overridden
(it has kept that shape since before the oldest uvicorn chatrelay allows).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from types import FrameType
from typing import Any

import uvicorn

# What uvicorn.run exits with when the server could not start (a port in use, say).
STARTUP_FAILURE = 3
TICK_SECONDS = 1.0
# uvicorn's tick counter: it refreshes the Date header when the counter is a multiple of 10.
_TICKS_PER_SECOND = 10


class QuietServer(uvicorn.Server):
    """uvicorn's server, its main loop waking once a second or at once on a stop signal."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._exit_signalled: asyncio.Event | None = None

    async def main_loop(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._exit_signalled = asyncio.Event()
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + _TICKS_PER_SECOND) % 864_000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._exit_signalled.wait(), TICK_SECONDS)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        # A Python signal handler runs between two steps of the loop: it may only ask the loop
        # to wake, the thread-safe way.
        if self._loop is not None and self._exit_signalled is not None:
            self._loop.call_soon_threadsafe(self._exit_signalled.set)


def run(app: Any, **options: Any) -> None:
    """As ``uvicorn.run(app, **options)`` for one process, with :class:`QuietServer`."""
    server = QuietServer(uvicorn.Config(app, **options))
    # uvicorn raises the SIGINT it caught again once it has shut down cleanly.
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)
