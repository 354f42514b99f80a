"""Which upstream earns its traffic (issue 24, item 5): figures per upstream and model from the
attempts of real answers, stored (so they survive a restart), in /metrics, and routing by
``cost`` or ``latency`` that follows them, trying upstreams without figures first."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from chatrelay.store.models import utcnow
from chatrelay.store.upstream_figures import upstream_figures
from tests.conftest import RunningRelay
from tests.e2e.test_openai_api import api_key, client_for
from tests.fake_upstream import MODEL, FakeUpstream, livepeer_chunk, livepeer_events
from tests.polling import wait_until, wait_until_async


@pytest.fixture
async def second() -> AsyncIterator[FakeUpstream]:
    upstream = FakeUpstream()
    await upstream.start()
    yield upstream
    await upstream.close()


def livepeer(name: str, url: str, **more: Any) -> dict[str, Any]:
    return {"name": name, "dialect": "livepeer", "base_url": url, "models": [MODEL], **more}


def ask(max_tokens: int = 50) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": "fox?"}],
            "max_tokens": max_tokens}  # fmt: skip


async def served_by(relay: RunningRelay, key: str, times: int) -> list[str]:
    """Who served each of ``times`` answers, as the stored answers say."""
    names = []
    async with client_for(relay, key) as client:
        for _ in range(times):
            raw = await client.chat.completions.with_raw_response.create(**ask())
            message_id = raw.headers["x-message-id"]
            conversation = raw.headers["x-conversation-id"]
            stored = await relay.client.get(
                f"/api/conversations/{conversation}", headers={"Authorization": f"Bearer {key}"}
            )
            row = next(m for m in stored.json()["messages"] if m["id"] == message_id)
            names.append(row["upstream"])
    return names


async def test_figures_come_from_real_traffic_and_reach_metrics(
    relay_for, fake: FakeUpstream, second: FakeUpstream
) -> None:
    fake.script = [livepeer_chunk("The quick", completion_tokens=2)]  # cut, then failed over
    second.script = livepeer_events([" brown", " fox."])
    upstreams = [
        livepeer("a", fake.base_url, input_price=1.0, output_price=10.0),
        livepeer("b", second.base_url, input_price=1.0, output_price=10.0),
    ]
    settings = {"livepeer_gateway_urls": [], "upstreams": upstreams, "retry_deadline": 10,
                "max_failovers": 2, "figures_interval": 0.05}  # fmt: skip
    async with relay_for(**settings) as relay:
        relay.service.registry.upstreams[1].active += 1000  # "a" first
        key, _ = await api_key(relay)
        async with client_for(relay, key) as client:
            answer = await client.chat.completions.create(**ask())
        async with relay.context.db.read() as session:
            figures = {
                f.upstream: f
                for f in await upstream_figures(session, since=utcnow() - timedelta(hours=1))
            }

        async def in_metrics() -> bool:
            text = (await relay.client.get("/metrics")).text
            return 'chatrelay_upstream_figure{figure="cut_rate",model="' in text

        await wait_until_async(in_metrics)
    assert answer.choices[0].message.content == "The quick brown fox."
    a, b = figures["a"], figures["b"]
    assert (a.answers, a.attempts, a.cut_rate, a.failover_rate) == (1, 1, 1.0, 1.0)
    assert (b.cut_rate, b.failover_rate, b.useful_tokens) == (0.0, 0.0, 2)
    assert a.useful_tokens == 2 and a.ttft_p50_ms is not None
    # "a" was paid for its reservation (50 tokens requested) and delivered 2 of them.
    assert a.paid_tokens > a.used_tokens and a.cost_per_1k_useful is not None
    assert a.cost_per_1k_useful > b.cost_per_1k_useful  # type: ignore[operator]


async def test_routing_by_cost_sends_the_answers_to_the_cheaper_upstream(
    relay_for, fake: FakeUpstream, second: FakeUpstream
) -> None:
    fake.script = livepeer_events(["dear"])
    second.script = livepeer_events(["cheap"])
    upstreams = [
        livepeer("dear", fake.base_url, input_price=5.0, output_price=50.0),
        livepeer("cheap", second.base_url, input_price=0.5, output_price=5.0),
    ]
    settings = {"livepeer_gateway_urls": [], "upstreams": upstreams, "routing": {"*": "cost"},
                "routing_explore": 0.0, "figures_interval": 0.05}  # fmt: skip
    async with relay_for(**settings) as relay:
        key, _ = await api_key(relay)
        registry = relay.service.registry
        # Without figures each is tried first, so that both get some.
        first = await served_by(relay, key, 1)
        await wait_until(lambda: len(registry.figures) == 1)
        second_pick = await served_by(relay, key, 1)
        await wait_until(lambda: len(registry.figures) == 2)
        then = await served_by(relay, key, 4)
    assert sorted(first + second_pick) == ["cheap", "dear"]
    assert then == ["cheap"] * 4


async def test_routing_by_latency_prefers_the_faster_first_token(
    relay_for, fake: FakeUpstream, second: FakeUpstream
) -> None:
    fake.script = [1.0, *livepeer_events(["slow"])]  # a first token a second late
    second.script = livepeer_events(["fast"])
    upstreams = [livepeer("slow", fake.base_url), livepeer("fast", second.base_url)]
    settings = {"livepeer_gateway_urls": [], "upstreams": upstreams,
                "routing": {MODEL: "latency"}, "routing_explore": 0.0,
                "figures_interval": 0.05}  # fmt: skip
    async with relay_for(**settings) as relay:
        key, _ = await api_key(relay)
        registry = relay.service.registry
        await served_by(relay, key, 1)
        await wait_until(lambda: len(registry.figures) == 1)
        await served_by(relay, key, 1)
        await wait_until(lambda: len(registry.figures) == 2)
        then = await served_by(relay, key, 3)
    assert then == ["fast"] * 3
