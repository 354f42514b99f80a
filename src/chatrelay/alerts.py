"""Alerts to the operator: a JSON POST to ``CHATRELAY_ALERT_WEBHOOK_URL`` (or a Slack-shaped
one, ``CHATRELAY_ALERT_FORMAT=slack``) when a user or key passes 80 % and 100 % of a limit,
when an upstream's spend cap is reached, when an upstream's breaker stays open too long, and
when answers are cut or fail above a rate.

Never on the hot path: ``notify`` only puts the alert on a bounded queue (a full queue drops
it, counted); one background task delivers them, with retries and back-off. Each alert has a
key that names what it is about and its period (a limit's budget period, the hour for an
upstream), and a key is sent once: the same threshold passed by a hundred answers is one
alert. Delivery failures are logged and counted in ``/metrics``
(``chatrelay_alerts_total{outcome}``).

Usage::

    alerts = Alerts.from_settings(settings)     # None without a webhook URL
    alerts.start()
    alerts.limit_filled("user", "usr_1", what="token budget", filled=810, limit=1000,
                        period="2026-12-03")
    alerts.answer_ended(failed=False, cut=True)
    await alerts.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import Any, Protocol

import httpx

from chatrelay.observability import ALERTS

log = logging.getLogger(__name__)


class AlertConfig(Protocol):
    """The settings alerts read (config/alerts.py)."""

    @property
    def alert_webhook_url(self) -> str | None: ...
    @property
    def alert_format(self) -> str: ...
    @property
    def alert_failure_rate(self) -> float: ...
    @property
    def alert_window(self) -> float: ...
    @property
    def alert_min_answers(self) -> int: ...
    @property
    def alert_retry_backoff(self) -> float: ...


QUEUE_SIZE = 1000
ATTEMPTS = 4  # tries of one delivery: at once, then after 1, 2 and 4 s
THRESHOLDS = (0.8, 1.0)  # shares of a limit that are announced
MAX_REMEMBERED = 10_000  # keys of alerts sent, for deduplication (cleared past this)


class Alerts:
    @classmethod
    def from_settings(cls, settings: AlertConfig) -> Alerts | None:
        """The operator's alerts, or None without ``CHATRELAY_ALERT_WEBHOOK_URL``."""
        if not settings.alert_webhook_url:
            return None
        return cls(
            settings.alert_webhook_url,
            slack=settings.alert_format == "slack",
            failure_rate=settings.alert_failure_rate,
            window=settings.alert_window,
            min_answers=settings.alert_min_answers,
            backoff=settings.alert_retry_backoff,
        )

    def __init__(
        self,
        url: str,
        *,
        slack: bool = False,
        timeout: float = 10.0,
        failure_rate: float = 0.2,
        window: float = 300.0,
        min_answers: int = 20,
        backoff: float = 1.0,
    ) -> None:
        self.url = url
        self.slack = slack
        self.timeout = timeout
        self.failure_rate = failure_rate
        self.window = window
        self.min_answers = min_answers
        self.backoff = backoff
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE_SIZE)
        self._sent: set[str] = set()
        self._answers: deque[tuple[float, bool]] = deque()  # (when, cut or failed)
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None

    # What is watched

    def limit_filled(
        self, scope: str, subject: str, *, what: str, filled: int, limit: int, period: str
    ) -> None:
        """A limit's use after a hold (or a refusal: ``filled`` past ``limit``): announced
        once per threshold and period. ``scope``: user, key or upstream."""
        if limit <= 0:
            return
        share = filled / limit
        for threshold in THRESHOLDS:
            if share >= threshold:
                percent = round(threshold * 100)
                self.notify(
                    f"limit:{scope}:{subject}:{what}:{period}:{percent}",
                    kind="limit_reached" if threshold >= 1 else "limit_near",
                    message=f"The {scope} {subject} has used {percent} % of its {what} "
                    f"for the period {period}.",
                    scope=scope,
                    subject=subject,
                    limit_name=what,
                    threshold=percent,
                    period=period,
                )

    def upstream_down(self, upstream: str, seconds: float) -> None:
        """An upstream's breaker has been open for ``seconds``: once per hour."""
        hour = time.strftime("%Y-%m-%dT%H", time.gmtime())
        self.notify(
            f"down:{upstream}:{hour}",
            kind="upstream_down",
            message=f"The upstream {upstream} has been failing for {seconds:.0f} s: its "
            "circuit breaker is open, the others take its traffic.",
            upstream=upstream,
            seconds=round(seconds),
        )

    def answer_ended(self, *, failed: bool, cut: bool) -> None:
        """Every answer's end: above ``failure_rate`` of cut or failed answers among those of
        the last ``window`` seconds (at least ``min_answers`` of them), one alert an hour."""
        now = time.monotonic()
        answers = self._answers
        answers.append((now, failed or cut))
        while answers and answers[0][0] < now - self.window:
            answers.popleft()
        if len(answers) < self.min_answers:
            return
        bad = sum(1 for _, bad in answers if bad)
        rate = bad / len(answers)
        if rate > self.failure_rate:
            hour = time.strftime("%Y-%m-%dT%H", time.gmtime())
            self.notify(
                f"failures:{hour}",
                kind="answers_failing",
                message=f"{bad} of the last {len(answers)} answers were cut or failed "
                f"({rate:.0%}, the threshold is {self.failure_rate:.0%}).",
                failed=bad,
                answers=len(answers),
                rate=round(rate, 3),
            )

    # Delivery

    def notify(self, key: str, *, kind: str, message: str, **fields: Any) -> None:
        """Queue an alert, once per ``key``; never waits."""
        if key in self._sent:
            return
        if len(self._sent) >= MAX_REMEMBERED:
            self._sent.clear()
        self._sent.add(key)
        payload: dict[str, Any] = {
            "kind": kind,
            "message": message,
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **fields,
        }
        try:
            self._queue.put_nowait(payload)
        except asyncio.QueueFull:
            ALERTS.labels(kind, "dropped").inc()
            log.warning("alert queue full: dropped %s", kind)

    def start(self) -> None:
        self._client = httpx.AsyncClient(timeout=self.timeout, trust_env=False)
        self._task = asyncio.create_task(self._deliver_forever(), name="alerts")

    async def close(self) -> None:
        """Stop, once what is queued went out (a moment at most: a shutdown must not hang)."""
        if self._task is not None and not self._task.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), self.timeout)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._client is not None:
            await self._client.aclose()

    async def _deliver_forever(self) -> None:
        while True:
            payload = await self._queue.get()
            try:
                await self._deliver(payload)
            finally:
                self._queue.task_done()

    async def _deliver(self, payload: dict[str, Any]) -> None:
        assert self._client is not None
        body = {"text": f"chatrelay: {payload['message']}"} if self.slack else payload
        kind = payload["kind"]
        for attempt in range(ATTEMPTS):
            try:
                response = await self._client.post(self.url, json=body)
                if response.status_code < 300:
                    ALERTS.labels(kind, "sent").inc()
                    return
                why = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                why = type(exc).__name__
            if attempt < ATTEMPTS - 1:
                await asyncio.sleep(self.backoff * 2**attempt)
        ALERTS.labels(kind, "failed").inc()
        log.error("alert %s could not be delivered (%s)", kind, why)
