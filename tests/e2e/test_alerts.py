"""Alerts to the operator's webhook (issue 24, item 4): a real HTTP receiver on loopback gets
a JSON POST when a limit passes 80 % and 100 % (once each per period), when answers fail
above a rate, when an upstream stays down; delivery is retried, and failures are counted."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import openai
import orjson
import pytest
from aiohttp import web

from tests.e2e.test_openai_api import api_key, client_for
from tests.fake_upstream import MODEL, FakeUpstream, livepeer_events
from tests.polling import wait_until, wait_until_async


class Webhook:
    """A webhook receiver: what it was sent, and the status it answers (500: failing)."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.attempts = 0
        self.status = 200
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/hook"

    async def _handle(self, request: web.Request) -> web.Response:
        self.attempts += 1
        if self.status != 200:
            return web.Response(status=self.status)
        self.received.append(orjson.loads(await request.read()))
        return web.Response(status=204)

    def kinds(self) -> list[str]:
        return [alert.get("kind", "") for alert in self.received]


@pytest.fixture
async def hook() -> AsyncIterator[Webhook]:
    webhook = Webhook()
    await webhook.start()
    yield webhook
    assert webhook._runner is not None
    await webhook._runner.cleanup()


def ask(max_tokens: int = 100) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": max_tokens}  # fmt: skip


async def test_a_budget_passing_80_and_100_percent_is_told_once_each(
    relay_for, fake: FakeUpstream, hook: Webhook
) -> None:
    fake.script = livepeer_events(["ok"])
    async with relay_for(user_token_budget=300, alert_webhook_url=hook.url) as relay:
        key, user_id = await api_key(relay)
        async with client_for(relay, key) as client:
            await client.chat.completions.create(**ask(100))  # ~110 of 300 held: no alert
            await client.chat.completions.create(**ask(200))  # well past 80 %
            await client.chat.completions.create(**ask(10))  # past 80 % again: not re-sent
            with pytest.raises(openai.RateLimitError):
                await client.chat.completions.create(**ask(250))  # refused: 100 %
        await wait_until(lambda: len(hook.received) >= 2)
    assert hook.kinds() == ["limit_near", "limit_reached"]
    near, reached = hook.received
    assert (near["scope"], near["subject"], near["threshold"]) == ("user", user_id, 80)
    assert near["limit_name"] == "token budget" and reached["threshold"] == 100
    assert "80 %" in near["message"] and near["period"] == reached["period"]


async def test_failing_answers_above_the_rate_are_told(
    relay_for, fake: FakeUpstream, hook: Webhook
) -> None:
    fake.fail(502, {"error": {"message": "no orchestrator"}})
    settings = {"alert_webhook_url": hook.url, "alert_min_answers": 2,
                "alert_failure_rate": 0.4, "alert_format": "slack"}  # fmt: skip
    async with relay_for(**settings) as relay:
        key, _ = await api_key(relay)
        async with client_for(relay, key) as client:
            for _ in range(3):
                with pytest.raises(openai.APIStatusError):
                    await client.chat.completions.create(**ask())
        await wait_until(lambda: hook.received)
    [alert] = hook.received  # once an hour, however many more fail
    assert set(alert) == {"text"}  # the Slack shape
    assert alert["text"].startswith("chatrelay: ") and "answers were cut or failed" in alert["text"]


async def test_an_upstream_down_too_long_is_told(
    relay_for, fake: FakeUpstream, hook: Webhook
) -> None:
    fake.fail(503, {"error": {"message": "down"}})
    settings = {"alert_webhook_url": hook.url, "alert_upstream_down": 0.05,
                "breaker_failures": 1, "health_interval": 0.05}  # fmt: skip
    async with relay_for(**settings) as relay:
        key, _ = await api_key(relay)
        async with client_for(relay, key) as client:
            with pytest.raises(openai.APIStatusError):
                await client.chat.completions.create(**ask())
        await wait_until(lambda: "upstream_down" in hook.kinds())
    alert = next(a for a in hook.received if a["kind"] == "upstream_down")
    assert alert["upstream"] == "livepeer" and "failing" in alert["message"]


async def test_undeliverable_alerts_are_retried_then_counted(
    relay_for, fake: FakeUpstream, hook: Webhook
) -> None:
    fake.script = livepeer_events(["ok"])
    hook.status = 500
    settings = {"alert_webhook_url": hook.url, "user_token_budget": 100,
                "alert_retry_backoff": 0.01}  # fmt: skip
    async with relay_for(**settings) as relay:
        key, _ = await api_key(relay)
        async with client_for(relay, key) as client:
            await client.chat.completions.create(**ask(90))  # past 80 %

            async def counted() -> bool:
                metrics = (await relay.client.get("/metrics")).text
                line = 'chatrelay_alerts_total{kind="limit_near",outcome="failed"} '
                return any(
                    row.startswith(line) and float(row.removeprefix(line)) >= 1
                    for row in metrics.splitlines()
                )

            await wait_until_async(counted)
    assert hook.attempts == 4  # at once, then three retries
