"""Background care of the upstreams: warming cold models and checking health.

- Warming: a cold Livepeer model can take minutes for its first token (a runner container
  starts on demand), so at start-up each warm model gets a one-token request in the
  background, and again every ``keep_warm_interval`` seconds when that is set.
- Health checks: every ``health_interval`` seconds each upstream is probed with a cheap GET;
  one that answers again gets its open circuit breaker half-opened at once, one that does not
  answer counts a failure.

Usage::

    monitor = UpstreamMonitor(registry, warm_models=["m"], keep_warm=0, health_interval=30)
    monitor.start()
    ...
    await monitor.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from chatrelay.alerts import Alerts
from chatrelay.upstreams.chunk import UpstreamChunk, Usage
from chatrelay.upstreams.client import Upstream, UpstreamFailure
from chatrelay.upstreams.dialects import GenerationParams
from chatrelay.upstreams.registry import UpstreamRegistry

log = logging.getLogger(__name__)

WARMING_PROMPT = [{"role": "user", "content": "Hi"}]
# A warming request's tokens, when its upstream reports none: "Hi" and a chat template's few.
WARMING_PROMPT_TOKENS = 8


@dataclass(frozen=True, slots=True)
class Warmed:
    """What one warming request cost its upstream: the operator's own spending."""

    upstream: str
    model: str
    accepted: bool  # the upstream answered 200, and bills it
    prompt_tokens: int
    completion_tokens: int


OnWarmed = Callable[[Warmed], Awaitable[None]]


class UpstreamMonitor:
    def __init__(
        self,
        registry: UpstreamRegistry,
        *,
        warm_models: list[str],
        keep_warm: float,
        health_interval: float,
        on_warmed: OnWarmed | None = None,
        alerts: Alerts | None = None,
        alert_after: float = 300.0,
    ) -> None:
        self.registry = registry
        # Told when an upstream's breaker has stayed open ``alert_after`` seconds.
        self.alerts = alerts
        self.alert_after = alert_after
        # Told of every warming request an upstream took, for its cost (answers/spending.py).
        self.on_warmed = on_warmed
        self.warm_models = warm_models
        self.keep_warm = keep_warm
        self.health_interval = health_interval
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        if self.warm_models:
            self._tasks.append(asyncio.create_task(self._warm_loop(), name="warming"))
        if self.health_interval > 0:
            self._tasks.append(asyncio.create_task(self._health_loop(), name="health-checks"))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            # A loop that died of an error must not abort the rest of the shutdown.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()

    async def _warm_loop(self) -> None:
        while True:
            await asyncio.gather(*(self.warm(model) for model in self.warm_models))
            if self.keep_warm <= 0:
                return
            await asyncio.sleep(self.keep_warm)

    async def warm(self, model: str) -> bool:
        """One single-token request for the model; True when a token came back."""
        upstream = self.registry.pick(model)
        if upstream is None:
            return False
        health = self.registry.health_of(model)
        health.request_started()
        began, waiting = time.monotonic(), True
        seen = _Seen()
        try:
            params = GenerationParams(max_tokens=1)
            async with upstream.stream(model, list(WARMING_PROMPT), params) as stream:
                seen.accepted = True
                await stream.relay(seen.take)
            health.first_token(time.monotonic() - began)
            health.request_ended()
            waiting = False
        except UpstreamFailure as failure:
            await self._spent(seen, upstream.config.name, model)  # taken, then failed
            self.registry.failed(upstream, failure)
            log.warning("warming %s on %s failed: %s", model, upstream.config.name, failure.kind)
            return False
        except BaseException:
            self.registry.abandoned(upstream)
            raise
        finally:
            if waiting:
                health.request_ended()
        await self._spent(seen, upstream.config.name, model)
        self.registry.succeeded(upstream)
        log.info("model %s is warm (%.1f s)", model, time.monotonic() - began)
        return True

    async def _spent(self, seen: _Seen, upstream: str, model: str) -> None:
        """A warming request the upstream took is paid for: recorded as the operator's."""
        if not seen.accepted or self.on_warmed is None:
            return
        try:
            await self.on_warmed(seen.warmed(upstream, model))
        except Exception:  # its record must not stop the warming
            log.exception("recording the cost of warming %s failed", model)

    async def _health_loop(self) -> None:
        while True:  # the first check at start: /readyz waits for an upstream to answer
            await asyncio.gather(*(self.check(u) for u in self.registry.upstreams))
            self.alert_down()
            await asyncio.sleep(self.health_interval)

    def alert_down(self) -> None:
        """Tell the operator of each upstream whose breaker has been open too long."""
        if self.alerts is None:
            return
        now = time.monotonic()
        for name, breaker in self.registry.breakers.items():
            since = breaker.down_since
            if since is not None and breaker.state != "closed" and now - since >= self.alert_after:
                self.alerts.upstream_down(name, now - since)

    async def check(self, upstream: Upstream) -> None:
        breaker = self.registry.breakers[upstream.config.name]
        if await upstream.probe():
            breaker.half_open_now()
        elif breaker.state == "closed":
            breaker.failure()


class _Seen:
    """What a warming request got back: whether it was taken, its token, its usage."""

    def __init__(self) -> None:
        self.accepted = False
        self.tokens = 0
        self.usage: Usage | None = None

    def take(self, chunk: UpstreamChunk) -> bool:
        """The warm-up's one token (or its end) has come: enough (an error event is raised
        by ``relay`` as a failure)."""
        if chunk.usage is not None:
            self.usage = chunk.usage
        if chunk.content:
            self.tokens += 1
        return bool(chunk.content or chunk.finish_reason or chunk.done)

    def warmed(self, upstream: str, model: str) -> Warmed:
        usage = self.usage
        prompt = usage.prompt_tokens if usage is not None else WARMING_PROMPT_TOKENS
        completion = usage.completion_tokens if usage is not None else self.tokens
        return Warmed(upstream, model, True, max(prompt, 0), max(completion, 0))
