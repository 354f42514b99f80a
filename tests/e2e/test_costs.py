"""What every attempt cost (issue 24, item 1): the prices of an upstream in its config, and a
row per attempt in attempt_costs with what was paid (a Livepeer gateway bills the max_tokens
requested) and what was used; failovers paid for on their own; no price, no cost (unknown)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select

from chatrelay.store.models import AttemptCostRow
from tests.conftest import RunningRelay
from tests.e2e.test_openai_api import api_key, client_for
from tests.fake_upstream import MODEL, FakeUpstream, livepeer_chunk, livepeer_events, openai_events
from tests.polling import wait_until_async


@pytest.fixture
async def second() -> AsyncIterator[FakeUpstream]:
    upstream = FakeUpstream()
    await upstream.start()
    yield upstream
    await upstream.close()


async def cost_rows(relay: RunningRelay) -> list[AttemptCostRow]:
    async with relay.context.db.read() as session:
        return list(
            await session.scalars(select(AttemptCostRow).order_by(AttemptCostRow.created_at))
        )


def livepeer(name: str, url: str, **prices: Any) -> dict[str, Any]:
    return {"name": name, "dialect": "livepeer", "base_url": url, "models": [MODEL], **prices}


async def test_a_livepeer_answer_pays_for_the_tokens_it_requested(
    relay_for, fake: FakeUpstream
) -> None:
    fake.script = livepeer_events(["Hello", " there"])  # 2 tokens; usage says prompt 10
    upstreams = [livepeer("lp", fake.base_url, input_price=0.5, output_price=2.0)]
    async with relay_for(livepeer_gateway_urls=[], upstreams=upstreams) as relay:
        key, user_id = await api_key(relay)
        async with client_for(relay, key) as client:
            answer = await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=100
            )
        rows = await cost_rows(relay)
    assert answer.choices[0].message.content == "Hello there"
    [row] = rows
    assert (row.user_id, row.kind, row.upstream, row.billing) == (
        user_id,
        "answer",
        "lp",
        "requested",
    )
    assert row.accepted and row.requested_tokens == 100 and row.completion_tokens == 2
    prompt = row.prompt_tokens
    assert row.paid_tokens == prompt + 100
    # 0.5 and 2.0 per million tokens, in nanos: 500 and 2,000 a token.
    assert row.paid_cost == prompt * 500 + 100 * 2000
    assert row.used_cost == prompt * 500 + 2 * 2000
    assert row.currency == "USD"


async def test_each_attempt_of_a_failover_pays_its_own_reservation(
    relay_for, fake: FakeUpstream, second: FakeUpstream
) -> None:
    fake.script = [livepeer_chunk("The quick", completion_tokens=2),
                   livepeer_chunk(" brown", completion_tokens=3)]  # a silent cut  # fmt: skip
    second.script = livepeer_events([" fox", " jumps."])
    upstreams = [
        livepeer("a", fake.base_url, input_price=1.0, output_price=1.0),
        livepeer("b", second.base_url, input_price=1.0, output_price=3.0, currency="EUR"),
    ]
    settings = {"livepeer_gateway_urls": [], "upstreams": upstreams, "retry_deadline": 10,
                "max_failovers": 2}  # fmt: skip
    async with relay_for(**settings) as relay:
        relay.service.registry.upstreams[1].active += 1000  # "a" answers first
        key, _ = await api_key(relay)
        async with client_for(relay, key) as client:
            answer = await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "fox?"}], max_tokens=50
            )
        rows = await cost_rows(relay)
    assert answer.choices[0].message.content == "The quick brown fox jumps."
    first, then = sorted(rows, key=lambda r: r.upstream)
    assert (first.upstream, then.upstream) == ("a", "b")
    assert first.requested_tokens == 50 and first.completion_tokens == 3
    assert then.requested_tokens < 50 and then.completion_tokens == 2  # only what was left
    assert first.paid_cost == (first.prompt_tokens + 50) * 1000
    assert then.paid_cost == then.prompt_tokens * 1000 + then.requested_tokens * 3000
    assert then.currency == "EUR"


async def test_no_price_means_an_unknown_cost(relay_for, fake: FakeUpstream) -> None:
    fake.script = openai_events(["ok"])
    async with relay_for("openai") as relay:
        key, _ = await api_key(relay)
        async with client_for(relay, key) as client:
            await client.chat.completions.create(
                model="gpt-test", messages=[{"role": "user", "content": "hi"}], max_tokens=30
            )
        [row] = await cost_rows(relay)
    assert row.billing == "used" and row.paid_cost is None and row.used_cost is None
    assert row.paid_tokens == row.prompt_tokens + row.completion_tokens == 10 + 1


async def test_warming_requests_are_the_operators_own_spending(
    relay_for, fake: FakeUpstream
) -> None:
    fake.script = livepeer_events(["Hello"])
    upstreams = [livepeer("lp", fake.base_url, input_price=1.0, output_price=4.0)]
    settings = {"livepeer_gateway_urls": [], "upstreams": upstreams, "warm_models": [MODEL]}
    async with relay_for(**settings) as relay:

        async def warmed() -> list[AttemptCostRow]:
            return [row for row in await cost_rows(relay) if row.kind == "warming"]

        await wait_until_async(warmed)
        [row] = await warmed()
    assert fake.requests[0].json["max_tokens"] == 1
    assert (row.user_id, row.message_id, row.upstream, row.model) == (None, None, "lp", MODEL)
    assert row.requested_tokens == 1 and row.completion_tokens == 1
    assert row.paid_cost == row.prompt_tokens * 1000 + 1 * 4000
