"""A prompt costs once the upstream has accepted it (answered 200 and began its stream), also
when the answer is stopped or fails before its first token; a request the upstream refused,
or never received, costs nothing. Real sockets, the memory and the Redis limits."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.fake_upstream import DROP, FakeResponse, FakeUpstream, livepeer_chunk
from tests.limits_helpers import ask, ledger, limits_backend, needed, usage_of
from tests.polling import wait_until
from tests.ports import free_port
from tests.sse_client import read_answer

__all__ = ["limits_backend"]  # a fixture, imported to be used here

# As in the attack run: a long prompt, which the upstream reads whether or not it answers.
LONG_QUESTION = "Summarise this. " + "lorem ipsum dolor sit amet " * 592  # ~16,000 characters
PROMPT = needed(LONG_QUESTION, 0)  # the estimate of its tokens


async def test_a_prompt_stopped_before_its_first_token_is_billed(
    relay_for, fake: FakeUpstream, limits_backend: dict[str, Any]
) -> None:
    assert len(LONG_QUESTION) > 15_900 and PROMPT > 4_000
    gate = asyncio.Event()  # the upstream accepted and is "thinking": no token yet
    fake.script = [gate]
    async with relay_for("openai", guest_token_budget=100_000, **limits_backend) as relay:
        async with relay.client.stream(
            "POST", "/api/chat", json=ask(LONG_QUESTION, 64)
        ) as response:
            assert response.status_code == 200
            message_id = response.headers["x-message-id"]
            stopped = await relay.client.post(f"/api/messages/{message_id}/stop")
            assert stopped.status_code == 200, stopped.text
            answer = await read_answer(response)
        assert answer.text == "" and answer.errors == []
        await wait_until(lambda: not relay.service.answers)
        report = await usage_of(relay.client)
        [row] = await ledger(relay.context.db)
    # No usage from the upstream: the prompt's estimate, nothing for the answer.
    assert (report["used"], report["reserved"]) == (PROMPT, 0)
    assert (row.prompt_tokens, row.completion_tokens, row.source) == (PROMPT, 0, "estimate")
    assert row.status == "stopped"


async def test_a_prompt_whose_answer_fails_before_its_first_token_is_billed(
    relay_for, fake: FakeUpstream, limits_backend: dict[str, Any]
) -> None:
    fake.script = [DROP]  # 200, then the connection is cut: no token, no usage
    async with relay_for("openai", guest_token_budget=100_000, **limits_backend) as relay:
        async with relay.client.stream(
            "POST", "/api/chat", json=ask(LONG_QUESTION, 64)
        ) as response:
            answer = await read_answer(response) if response.status_code == 200 else None
            if answer is None:
                await response.aread()
        assert response.status_code == 502 or (answer is not None and answer.errors)
        await wait_until(lambda: not relay.service.answers)
        report = await usage_of(relay.client)
        [row] = await ledger(relay.context.db)
    assert (report["used"], report["reserved"]) == (PROMPT, 0)
    assert (row.prompt_tokens, row.completion_tokens) == (PROMPT, 0)
    assert row.status == "error"


async def test_the_upstreams_own_prompt_count_is_billed_when_it_gives_one(
    relay_for, fake: FakeUpstream, limits_backend: dict[str, Any]
) -> None:
    gate = asyncio.Event()
    # Livepeer reports usage in every chunk: an empty first one says the prompt was 42 tokens.
    fake.script = [livepeer_chunk("", completion_tokens=0), gate]
    async with relay_for(guest_token_budget=100_000, **limits_backend) as relay:
        async with relay.client.stream(
            "POST", "/api/chat", json=ask(LONG_QUESTION, 64)
        ) as response:
            message_id = response.headers["x-message-id"]
            await wait_until(lambda: fake.first_write_done.is_set())
            await relay.client.post(f"/api/messages/{message_id}/stop")
            await read_answer(response)
        await wait_until(lambda: not relay.service.answers)
        report = await usage_of(relay.client)
        [row] = await ledger(relay.context.db)
    assert (row.prompt_tokens, row.completion_tokens, row.source) == (42, 0, "upstream")
    assert report["used"] == 42


async def test_a_request_the_upstream_refused_or_never_got_is_not_billed(
    relay_for, fake: FakeUpstream, limits_backend: dict[str, Any]
) -> None:
    fake.fail(503, {"error": "no capacity"})
    async with relay_for("openai", guest_token_budget=100_000, **limits_backend) as relay:
        response = await relay.client.post("/api/chat", json=ask(LONG_QUESTION, 64))
        assert response.status_code == 502
        await wait_until(lambda: not relay.service.answers)
        assert (await usage_of(relay.client))["used"] == 0
    # Nobody listening at all.
    dead = f"http://127.0.0.1:{free_port()}"
    async with relay_for(
        "openai", openai_base_url=dead, guest_token_budget=100_000, **limits_backend
    ) as relay:
        response = await relay.client.post("/api/chat", json=ask(LONG_QUESTION, 64))
        assert response.status_code in (502, 503)
        await wait_until(lambda: not relay.service.answers)
        assert (await usage_of(relay.client))["used"] == 0
        assert all(row.prompt_tokens == 0 for row in await ledger(relay.context.db))


async def test_stopped_before_the_upstream_answered_is_not_billed(
    relay_for, fake: FakeUpstream, limits_backend: dict[str, Any]
) -> None:
    # A cold upstream holds its status line: it has not accepted the request yet.
    fake.responses = [FakeResponse(hold_headers=asyncio.Event())]
    async with relay_for(
        "openai", guest_token_budget=100_000, stream_start_wait=0.05, **limits_backend
    ) as relay:
        async with relay.client.stream(
            "POST", "/api/chat", json=ask(LONG_QUESTION, 64)
        ) as response:
            assert response.status_code == 200
            message_id = response.headers["x-message-id"]
            await wait_until(lambda: fake.active == 1)
            await relay.client.post(f"/api/messages/{message_id}/stop")
            await read_answer(response)
        await wait_until(lambda: not relay.service.answers)
        report = await usage_of(relay.client)
        [row] = await ledger(relay.context.db)
    assert report["used"] == 0 and (row.prompt_tokens, row.completion_tokens) == (0, 0)
