"""How healthy each upstream is, and how warm each model.

- :class:`CircuitBreaker`: opens after consecutive failures, half-opens after a cool-down
  (one trial request), closes on a success.
- :class:`ModelHealth`: what `/api/models` reports per model: ``warm`` (a first token came
  recently), ``warming`` (a request is waiting for its first token), ``cold``, ``unavailable``
  (no usable upstream), and the last first-token latency.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

BreakerState = Literal["closed", "open", "half_open"]
ModelStatus = Literal["warm", "warming", "cold", "unavailable"]


@dataclass
class CircuitBreaker:
    failure_threshold: int = 3
    cooldown: float = 30.0
    failures: int = 0
    opened_at: float | None = None
    # In half-open state only one trial request may be in flight.
    trial_in_flight: bool = False
    # When it first opened since it last closed (re-opening after a failed trial keeps it).
    down_since: float | None = None
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)

    def _now(self) -> float:
        return self.clock()

    @property
    def state(self) -> BreakerState:
        if self.opened_at is None:
            return "closed"
        if self._now() - self.opened_at >= self.cooldown:
            return "half_open"
        return "open"

    def retry_in(self) -> float:
        """Seconds until an open breaker lets a trial through (0 when it already would)."""
        if self.opened_at is None:
            return 0.0
        return max(0.0, self.cooldown - (self._now() - self.opened_at))

    def allows(self) -> bool:
        state = self.state
        return state == "closed" or (state == "half_open" and not self.trial_in_flight)

    def begin(self) -> None:
        if self.state == "half_open":
            self.trial_in_flight = True

    def success(self) -> None:
        self.failures = 0
        self.opened_at = None
        self.down_since = None
        self.trial_in_flight = False

    def failure(self) -> None:
        self.failures += 1
        self.trial_in_flight = False
        if self.opened_at is not None or self.failures >= self.failure_threshold:
            self.opened_at = self._now()  # (re)open: a failed trial starts a new cool-down
            if self.down_since is None:
                self.down_since = self.opened_at

    def half_open_now(self) -> None:
        """A health check saw the upstream answer again: let a trial through at once."""
        if self.opened_at is not None:
            self.opened_at = self._now() - self.cooldown


@dataclass
class ModelHealth:
    warm_for: float = 600.0  # a first token this recent means the model is loaded somewhere
    last_first_token_at: float | None = None
    last_first_token_latency: float | None = None
    waiting: int = 0  # requests sent that have not had their first token yet

    def request_started(self) -> None:
        self.waiting += 1

    def first_token(self, latency: float) -> None:
        self.last_first_token_at = time.monotonic()
        self.last_first_token_latency = latency

    def request_ended(self) -> None:
        self.waiting = max(0, self.waiting - 1)

    def status(self, *, usable: bool) -> ModelStatus:
        if not usable:
            return "unavailable"
        recent = self.last_first_token_at
        if recent is not None and time.monotonic() - recent < self.warm_for:
            return "warm"
        return "warming" if self.waiting else "cold"
