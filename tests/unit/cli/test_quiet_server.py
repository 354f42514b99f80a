"""uvicorn's main loop as `chatrelay serve` runs it (cli/quiet_server.py): one tick a second,
each refreshing the Date header, and a stop signal heard at once. No socket is opened: only the
main loop runs."""

from __future__ import annotations

import asyncio
import signal

import pytest
import uvicorn

from chatrelay.cli import quiet_server
from chatrelay.cli.quiet_server import QuietServer


async def app(scope: object, receive: object, send: object) -> None:
    raise AssertionError("no request is served here")


class CountingServer(QuietServer):
    """Records the tick counters; asks to stop after ``ticks`` of them."""

    def __init__(self, ticks: int) -> None:
        super().__init__(uvicorn.Config(app))
        self.ticks = ticks
        self.counters: list[int] = []
        self.ticked = asyncio.Event()

    async def on_tick(self, counter: int) -> bool:
        self.counters.append(counter)
        self.ticked.set()
        if len(self.counters) == self.ticks:
            self.should_exit = True
        return self.should_exit


async def test_every_tick_is_one_that_refreshes_the_date_header(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(quiet_server, "TICK_SECONDS", 0.001)
    server = CountingServer(ticks=4)
    await asyncio.wait_for(server.main_loop(), 10)
    # uvicorn refreshes the Date header when the counter is a multiple of 10.
    assert server.counters == [0, 10, 20, 30]


async def test_a_stop_signal_wakes_the_loop_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # Ticks an hour apart: only the signal can end the loop within the test's patience.
    monkeypatch.setattr(quiet_server, "TICK_SECONDS", 3600.0)
    server = CountingServer(ticks=0)
    loop = asyncio.create_task(server.main_loop())
    await server.ticked.wait()
    server.handle_exit(signal.SIGTERM, None)
    await asyncio.wait_for(loop, 10)
    assert server.counters == [0, 10]  # the first tick, then the one the signal woke
