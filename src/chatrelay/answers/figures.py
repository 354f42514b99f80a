"""The figures per upstream and model, recomputed from the database every
``CHATRELAY_FIGURES_INTERVAL`` seconds (store/upstream_figures.py): handed to the registry for
routing by ``cost`` or ``latency``, and to ``/metrics`` (``chatrelay_upstream_figure``). Off
the request path: a request only reads the registry's last copy.

Usage::

    loop = FiguresLoop(db, registry, interval=60, window=86400)
    loop.start()
    ...
    await loop.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta

from chatrelay.observability import UPSTREAM_FIGURE
from chatrelay.store.database import Database
from chatrelay.store.models import utcnow
from chatrelay.store.upstream_figures import UpstreamFigures, upstream_figures
from chatrelay.upstreams.registry import RoutingFigure, UpstreamRegistry

log = logging.getLogger(__name__)

# The figures given to /metrics (each a label value of chatrelay_upstream_figure).
METRIC_FIGURES = ("answers", "ttft_p50_ms", "ttft_p95_ms", "tokens_per_s", "stall_rate",
                  "cut_rate", "failover_rate", "paid_tokens", "used_tokens", "useful_tokens",
                  "paid", "cost_per_1k_useful")  # fmt: skip


class FiguresLoop:
    def __init__(
        self, db: Database, registry: UpstreamRegistry, *, interval: float, window: float
    ) -> None:
        self.db = db
        self.registry = registry
        self.interval = interval
        self.window = timedelta(seconds=window)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.interval > 0:
            self._task = asyncio.create_task(self._run(), name="upstream-figures")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception:  # a database hiccup: the last figures stand until the next try
                log.warning("computing the figures per upstream failed", exc_info=True)
            await asyncio.sleep(self.interval)

    async def refresh(self) -> list[UpstreamFigures]:
        async with self.db.read() as session:
            figures = await upstream_figures(session, since=utcnow() - self.window)
        self.registry.figures = {
            (f.upstream, f.model): RoutingFigure(f.cost_per_1k_useful, f.ttft_p50_ms)
            for f in figures
        }
        for f in figures:
            values = f.as_dict()
            for name in METRIC_FIGURES:
                value = values[name]
                if value is not None:
                    UPSTREAM_FIGURE.labels(f.upstream, f.model, name).set(value)
        return figures
