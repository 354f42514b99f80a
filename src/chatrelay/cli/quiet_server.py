"""uvicorn's server, run for ``chatrelay serve`` (cli/serve.py), with a once-a-second
housekeeping tick.

Usage::

    run(app, host="127.0.0.1", port=8000)   # returns after a clean shutdown (SIGINT/SIGTERM)
    QuietServer(config, on_started=..., parent=os.getppid()).run(sockets=[listening])  # a worker

uvicorn wakes its main loop ten times a second, whether or not anything happens, to see if it
should exit and to refresh the ``Date`` header once a second: a large share of an idle
chatrelay's CPU (docs/performance.md#main-loop-tick). Here the loop wakes once a second, and
at once on a shutdown signal, so stopping is as quick as before; the ``Date`` header stays
exact to the second. uvicorn offers no setting for it, so its ``main_loop`` is overridden
(it has kept that shape since before the oldest uvicorn chatrelay allows).

A worker of ``chatrelay serve --workers N`` (cli/workers.py) also says when it serves
(``on_started``) and, on the same tick, stops when its parent is gone: a supervisor killed
outright leaves no worker holding the port with no one to stop or replace it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any

import uvicorn

if TYPE_CHECKING:
    from chatrelay.config import Settings

log = logging.getLogger(__name__)

# What uvicorn.run exits with when the server could not start (a port in use, say).
STARTUP_FAILURE = 3
TICK_SECONDS = 1.0
# uvicorn's tick counter: it refreshes the Date header when the counter is a multiple of 10.
_TICKS_PER_SECOND = 10


class QuietServer(uvicorn.Server):
    """uvicorn's server, its main loop waking once a second or at once on a stop signal."""

    def __init__(
        self,
        config: uvicorn.Config,
        *,
        on_started: Callable[[], None] | None = None,
        parent: int | None = None,
    ) -> None:
        """``on_started``: called once the server listens (its start-up is complete).
        ``parent``: the pid of the process that started this one, to stop when it is gone."""
        super().__init__(config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._exit_signalled: asyncio.Event | None = None
        self._on_started = on_started
        self._parent = parent

    async def main_loop(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._exit_signalled = asyncio.Event()
        if self._on_started is not None:  # uvicorn's main loop runs only once it has started
            self._on_started()
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + _TICKS_PER_SECOND) % 864_000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._exit_signalled.wait(), TICK_SECONDS)

    async def on_tick(self, counter: int) -> bool:
        if self._parent is not None and not self.should_exit and os.getppid() != self._parent:
            # Orphaned (the supervisor was killed): let the answers end, then free the port.
            log.warning("the supervising process %d is gone: stopping", self._parent)
            self.should_exit = True
        return await super().on_tick(counter)

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


def server_options(settings: Settings) -> dict[str, Any]:
    """The ``uvicorn.Config`` keyword arguments of a chatrelay server process (its app aside)."""
    from chatrelay.http.connection_limits import ConnectionLimits

    return {
        "host": settings.host,
        "port": settings.port,
        # Header size and count, head and body deadlines, idle keep-alive, open connections.
        **ConnectionLimits.of(settings).uvicorn_options(),
        "timeout_graceful_shutdown": 5,
        # chatrelay reads X-Forwarded-For/-Proto itself, trusting CHATRELAY_TRUSTED_PROXIES
        # (limits/client_ip.py): uvicorn's own handling would rewrite the peer before it.
        "proxy_headers": False,
        # chatrelay writes one structured line per request itself (with its request id).
        "access_log": False,
        "log_config": None,
    }
