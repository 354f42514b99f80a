"""Token budgets over real sockets, in process and in Redis: races, every way a request ends,
period roll-over, the usage ledger, per-user budgets and a limits store that is down."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from chatrelay.store import usage as usage_queries
from tests.fake_upstream import DROP, FakeUpstream, livepeer_chunk, livepeer_events, openai_events
from tests.limits_helpers import ask, chat_text, ledger, limits_backend, needed, usage_of
from tests.polling import wait_until
from tests.ports import free_port
from tests.sse_client import events_of, read_answer

__all__ = ["limits_backend"]  # a fixture, imported to be used here

QUESTION = "What is the budget for?"


async def test_fifty_parallel_requests_against_a_budget_for_five(
    relay_for, fake: FakeUpstream, limits_backend: dict[str, Any]
) -> None:
    gate = asyncio.Event()
    # Every admitted answer holds its reservation until the gate opens.
    fake.script = [livepeer_chunk("Hi"), gate, *livepeer_events([" there"])]
    each = needed(QUESTION, 100)
    budget = 5 * each + each // 2  # room for five and a half
    async with relay_for(guest_token_budget=budget, **limits_backend) as relay:
        await relay.client.post("/api/auth/guest")  # one guest for all fifty
        streams = [
            relay.client.stream("POST", "/api/chat", json=ask(QUESTION, 100)) for _ in range(50)
        ]
        responses = await asyncio.gather(*(s.__aenter__() for s in streams))
        admitted = [r for r in responses if r.status_code == 200]
        refused = [r for r in responses if r.status_code != 200]
        assert len(admitted) == 5
        for response in refused:
            await response.aread()
            assert response.status_code == 429
            error = response.json()["error"]
            assert error["code"] == "budget_exceeded"
            assert error["remaining"] == budget - 5 * each
            assert error["limit"] == budget and error["needed"] == each
            assert 0 < int(response.headers["retry-after"]) <= 86400
            assert error["resets_at"].endswith("T00:00:00Z")
        assert len(fake.requests) == 5  # nobody refused reached the upstream
        during = await usage_of(relay.client)
        assert (during["used"], during["reserved"]) == (0, 5 * each)
        gate.set()
        texts = [(await read_answer(r)).text for r in admitted]
        for stream in streams:
            await stream.__aexit__(None, None, None)
        assert texts == ["Hi there"] * 5
        await wait_until(lambda: not relay.service.answers)
        after = await usage_of(relay.client)
        # Settled to what the upstream reported: 42 prompt + 1 completion token each.
        assert (after["used"], after["reserved"]) == (5 * 43, 0)
        assert after["remaining"] == budget - 5 * 43
        listed = (await relay.client.get("/api/conversations")).json()["data"]
        assert len(listed) == 5  # refused questions were never stored


async def test_complete_answer_is_billed_from_upstream_usage_and_ledgered(
    relay_for, fake: FakeUpstream, limits_backend: dict[str, Any]
) -> None:
    fake.script = livepeer_events(["One", " two", " three"])
    async with relay_for(guest_token_budget=10_000, **limits_backend) as relay:
        assert await chat_text(relay.client, ask(QUESTION, 64)) == "One two three"
        report = await usage_of(relay.client)
        assert report["used"] == 42 + 3 and report["reserved"] == 0
        assert report["limit"] == 10_000 and report["remaining"] == 10_000 - 45
        assert report["period"] == "day"
        [row] = await ledger(relay.context.db)
    assert (row.prompt_tokens, row.completion_tokens, row.source) == (42, 3, "upstream")
    assert row.status == "complete" and row.upstream == "livepeer"
    assert row.model == "meta-llama/Meta-Llama-3.1-8B-Instruct"
    assert row.reserved_tokens == needed(QUESTION, 64)


async def test_stopped_answer_is_billed_for_what_was_generated(
    relay_for, fake: FakeUpstream, limits_backend: dict[str, Any]
) -> None:
    gate = asyncio.Event()
    fake.script = [
        livepeer_chunk("a", completion_tokens=1),
        livepeer_chunk("b", completion_tokens=2),
        gate,
    ]
    async with relay_for(guest_token_budget=10_000, finished_job_ttl=5, **limits_backend) as relay:
        async with relay.client.stream("POST", "/api/chat", json=ask(QUESTION, 64)) as response:
            message_id = response.headers["x-message-id"]
            seen = 0
            async for event in events_of(response):
                if isinstance(event, dict) and event["choices"][0]["delta"].get("content"):
                    seen += 1
                    if seen == 2:
                        await relay.client.post(f"/api/messages/{message_id}/stop")
        report = await usage_of(relay.client)
        assert (report["used"], report["reserved"]) == (42 + 2, 0)
        [row] = await ledger(relay.context.db)
    assert row.status == "stopped" and row.completion_tokens == 2


async def test_upstream_refusal_releases_everything_and_bills_nothing(
    relay_for, fake: FakeUpstream, limits_backend: dict[str, Any]
) -> None:
    fake.fail(500, {"error": "model crashed"})
    async with relay_for(guest_token_budget=10_000, **limits_backend) as relay:
        response = await relay.client.post("/api/chat", json=ask(QUESTION, 64))
        assert response.status_code == 502
        await wait_until(lambda: not relay.service.answers)
        report = await usage_of(relay.client)
        assert (report["used"], report["reserved"]) == (0, 0)
        [row] = await ledger(relay.context.db)
    assert row.status == "error" and (row.prompt_tokens, row.completion_tokens) == (0, 0)


async def test_mid_answer_failure_bills_the_partial_answer(
    relay_for, fake: FakeUpstream, limits_backend: dict[str, Any]
) -> None:
    fake.script = [*livepeer_events(["x", "y", "z"], stop_chunk=False), DROP]
    async with relay_for(guest_token_budget=10_000, **limits_backend) as relay:
        async with relay.client.stream("POST", "/api/chat", json=ask(QUESTION, 64)) as response:
            answer = await read_answer(response)
        assert answer.errors and answer.text == "xyz"
        await wait_until(lambda: not relay.service.answers)
        report = await usage_of(relay.client)
        assert (report["used"], report["reserved"]) == (42 + 3, 0)


async def test_client_disconnect_settles_when_the_job_ends(
    relay_for, fake: FakeUpstream, limits_backend: dict[str, Any]
) -> None:
    gate = asyncio.Event()
    fake.script = [livepeer_chunk("first"), gate, *livepeer_events([" rest"])]
    async with relay_for(guest_token_budget=10_000, **limits_backend) as relay:
        async with relay.client.stream("POST", "/api/chat", json=ask(QUESTION, 64)) as response:
            async for event in events_of(response):
                if isinstance(event, dict) and event["choices"][0]["delta"].get("content"):
                    break  # the reader goes away
        # The answer goes on, so its reservation is still held...
        report = await usage_of(relay.client)
        assert (report["used"], report["reserved"]) == (0, needed(QUESTION, 64))
        gate.set()
        await wait_until(lambda: not relay.service.answers)
        # ...and is settled to the whole answer when it ends.
        report = await usage_of(relay.client)
        assert (report["used"], report["reserved"]) == (42 + 1, 0)


async def test_usage_without_upstream_numbers_is_estimated(
    relay_for, fake: FakeUpstream, limits_backend: dict[str, Any]
) -> None:
    fake.script = openai_events(["abcd", "efgh"], usage=None)  # 8 bytes: 2 tokens
    async with relay_for("openai", guest_token_budget=10_000, **limits_backend) as relay:
        assert await chat_text(relay.client, ask(QUESTION, 64)) == "abcdefgh"
        report = await usage_of(relay.client)
        [row] = await ledger(relay.context.db)
    prompt = needed(QUESTION, 0)
    assert (row.prompt_tokens, row.completion_tokens, row.source) == (prompt, 2, "estimate")
    assert report["used"] == prompt + 2


async def test_the_budget_period_rolls_over(
    relay_for, fake: FakeUpstream, limits_backend: dict[str, Any]
) -> None:
    fake.script = livepeer_events(["ok"])
    now = [datetime(2026, 3, 4, 23, 59, 30, tzinfo=UTC)]
    each = needed(QUESTION, 100)
    async with relay_for(guest_token_budget=each, **limits_backend) as relay:
        relay.context.quotas.clock = lambda: now[0]
        assert await chat_text(relay.client, ask(QUESTION, 100)) == "ok"
        refused = await relay.client.post("/api/chat", json=ask(QUESTION, 100))
        assert refused.status_code == 429
        assert refused.json()["error"]["resets_at"] == "2026-03-05T00:00:00Z"
        assert refused.headers["retry-after"] == "30"
        before = await usage_of(relay.client)
        assert before["used"] == 43 and before["resets_at"] == "2026-03-05T00:00:00Z"

        now[0] += timedelta(seconds=31)  # past midnight UTC: a new day, a new budget
        assert await chat_text(relay.client, ask(QUESTION, 100)) == "ok"
        after = await usage_of(relay.client)
        assert after["used"] == 43 and after["period_start"] == "2026-03-05T00:00:00Z"
        assert after["resets_at"] == "2026-03-06T00:00:00Z"


async def test_a_restart_does_not_hand_out_a_fresh_budget(
    relay_for, fake: FakeUpstream, database_url: str
) -> None:
    """The in-process store starts a period from the ledger, so a restart changes nothing."""
    fake.script = livepeer_events(["ok"])
    each = needed(QUESTION, 100)
    async with relay_for(guest_token_budget=each + 20, database_url=database_url) as relay:
        assert await chat_text(relay.client, ask(QUESTION, 100)) == "ok"
        cookies = dict(relay.client.cookies)
    async with relay_for(guest_token_budget=each + 20, database_url=database_url) as relay:
        relay.client.cookies.update(cookies)
        assert (await usage_of(relay.client))["used"] == 43
        refused = await relay.client.post("/api/chat", json=ask(QUESTION, 100))
        assert refused.status_code == 429
        assert refused.json()["error"]["remaining"] == each + 20 - 43


async def test_a_users_own_budget_wins_and_zero_is_unlimited(relay_for, fake: FakeUpstream) -> None:
    fake.script = livepeer_events(["ok"])
    # auth_cache_seconds=0: the budget set below counts at the very next request (it is read
    # with the user, whom the server otherwise remembers for a few seconds).
    async with relay_for(guest_token_budget=10, auth_cache_seconds=0) as relay:
        me = (await relay.client.post("/api/auth/guest")).json()
        assert (await relay.client.post("/api/chat", json=ask(QUESTION, 64))).status_code == 429
        db = relay.context.db
        async with db.transaction() as session:
            await usage_queries.set_token_budget(session, user_id=me["id"], tokens=0)
        assert await chat_text(relay.client, ask(QUESTION, 64)) == "ok"
        report = await usage_of(relay.client)
        assert report["limit"] is None and report["remaining"] is None
        assert report["used"] == 43  # counted from the ledger all the same
        async with db.transaction() as session:
            await usage_queries.set_token_budget(session, user_id=me["id"], tokens=5000)
        assert (await usage_of(relay.client))["limit"] == 5000


async def test_continuing_a_conversation_reserves_its_history(
    relay_for, fake: FakeUpstream
) -> None:
    fake.script = livepeer_events(["x" * 400])
    async with relay_for(guest_token_budget=needed(QUESTION, 50) + 60) as relay:
        async with relay.client.stream("POST", "/api/chat", json=ask(QUESTION, 50)) as response:
            conversation_id = response.headers["x-conversation-id"]
            await read_answer(response)
        # The stored 400-character answer goes upstream again as history: about 100 tokens.
        body = {**ask("more", 50), "conversation_id": conversation_id}
        refused = await relay.client.post("/api/chat", json=body)
        assert refused.status_code == 429
        assert refused.json()["error"]["needed"] > 150


# The limits store is down


def closed_port_redis() -> dict[str, Any]:
    return {"redis_url": f"redis://127.0.0.1:{free_port()}/0", "redis_timeout": 0.5}


async def test_store_down_fails_closed_and_spends_nothing(relay_for, fake: FakeUpstream) -> None:
    fake.script = livepeer_events(["should not happen"])
    async with relay_for(guest_token_budget=10_000, **closed_port_redis()) as relay:
        response = await relay.client.post("/api/chat", json=ask(QUESTION, 64))
        assert response.status_code == 503
        error = response.json()["error"]
        assert error["code"] == "limits_unavailable"
        assert "limits store (Redis at redis://127.0.0.1:" in error["message"]
        assert "Nothing was sent to the model and nothing was charged" in error["message"]
        assert "CHATRELAY_BUDGET_FAIL_OPEN" in error["message"]
        assert response.headers["retry-after"] == "5"
        assert fake.requests == []
        assert (await relay.client.get("/api/conversations")).json()["data"] == []
        assert await ledger(relay.context.db) == []
        # What is settled is still reported, from the ledger.
        assert (await usage_of(relay.client))["used"] == 0


async def test_store_down_for_rate_limits_fails_closed_too(relay_for, fake: FakeUpstream) -> None:
    async with relay_for(rate_limit="100/minute", **closed_port_redis()) as relay:
        response = await relay.client.post("/api/chat", json=ask(QUESTION, 64))
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "limits_unavailable"
        assert fake.requests == []


async def test_store_down_fail_open_serves_and_still_ledgers(relay_for, fake: FakeUpstream) -> None:
    fake.script = livepeer_events(["served"])
    settings = {**closed_port_redis(), "budget_fail_open": True, "rate_limit": "1/minute"}
    async with relay_for(guest_token_budget=10, max_streams_per_ip=1, **settings) as relay:
        assert await chat_text(relay.client, ask(QUESTION, 64)) == "served"
        assert await chat_text(relay.client, ask(QUESTION, 64)) == "served"
        await wait_until(lambda: not relay.service.answers)
        rows = await ledger(relay.context.db)
    assert [(r.prompt_tokens, r.completion_tokens, r.reserved_tokens) for r in rows] == [
        (42, 1, 0),
        (42, 1, 0),
    ]


async def test_unlimited_users_need_no_store(relay_for, fake: FakeUpstream) -> None:
    """With no budget, rate limit or cap on new guests configured, a Redis outage changes
    nothing."""
    fake.script = livepeer_events(["fine"])
    async with relay_for(guest_create_limit="", **closed_port_redis()) as relay:
        assert await chat_text(relay.client, ask(QUESTION, 64)) == "fine"


@pytest.mark.slow
async def test_the_embedded_model_is_billed_with_its_own_tokenizer(tmp_path) -> None:
    from chatrelay.config import Settings
    from tests.conftest import serve

    settings = Settings(guest_token_budget=100_000, data_dir=tmp_path, finished_job_ttl=0)
    async with serve(settings) as relay:
        body = {**ask("Name three colours.", 16), "temperature": 0}
        async with relay.client.stream("POST", "/api/chat", json=body, timeout=60) as response:
            assert response.status_code == 200
            answer = await read_answer(response)
        await wait_until(lambda: not relay.service.answers)
        [row] = await ledger(relay.context.db)
        report = await usage_of(relay.client)
    assert answer.text.strip()
    assert row.source == "tokenizer" and row.upstream == "embedded"
    assert 1 <= row.completion_tokens <= 16
    assert row.prompt_tokens > 7  # the question's tokens and the chat template's
    assert report["used"] == row.prompt_tokens + row.completion_tokens
