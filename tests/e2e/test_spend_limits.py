"""Spend limits in money (issue 24, item 2): per user, per upstream (a cap), reserved as the
worst case before anything is sent and settled to what the attempts cost; 429 with
Retry-After past them; what is left in GET /api/usage."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openai
import pytest
from sqlalchemy import select, update
from typer.testing import CliRunner, Result

from chatrelay.cli import app
from chatrelay.limits.spending import nanos
from chatrelay.store.database import Database
from chatrelay.store.models import ApiKey, User
from tests.e2e.test_openai_api import api_key, client_for
from tests.fake_upstream import MODEL, FakeUpstream, livepeer_events

# 1.0 per million prompt tokens, 10.0 per million completion tokens: a 100-token max_tokens
# answer on Livepeer (billed as requested) costs 0.001 for its completion and a little more.
PRICES = {"input_price": 1.0, "output_price": 10.0}


@pytest.fixture
async def second() -> AsyncIterator[FakeUpstream]:
    upstream = FakeUpstream()
    await upstream.start()
    yield upstream
    await upstream.close()


def livepeer(name: str, url: str, **more: Any) -> dict[str, Any]:
    return {"name": name, "dialect": "livepeer", "base_url": url, "models": [MODEL],
            **PRICES, **more}  # fmt: skip


def ask(max_tokens: int = 100) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": max_tokens}  # fmt: skip


async def test_a_users_spend_limit_refuses_what_would_pass_it(
    relay_for, fake: FakeUpstream
) -> None:
    fake.script = livepeer_events(["ok"])
    upstreams = [livepeer("lp", fake.base_url)]
    # Room for one answer's worst case (about 0.00101) but not two.
    async with relay_for(
        livepeer_gateway_urls=[], upstreams=upstreams, user_spend_limit=0.0015
    ) as relay:
        key, _ = await api_key(relay)
        auth = {"Authorization": f"Bearer {key}"}
        async with client_for(relay, key) as client:
            await client.chat.completions.create(**ask())
            usage = (await relay.client.get("/api/usage", headers=auth)).json()
            with pytest.raises(openai.RateLimitError) as refused:
                await client.chat.completions.create(**ask())
            smaller = await client.chat.completions.create(**ask(max_tokens=20))
    spend = usage["spend"]
    assert spend["limit"] == 0.0015
    assert 0.001 < spend["used"] < 0.0011 and spend["reserved"] == 0
    assert spend["remaining"] == pytest.approx(0.0015 - spend["used"])
    assert refused.value.code == "spend_limit_exceeded"
    assert "your spend limit" in refused.value.message
    assert int(refused.value.response.headers["retry-after"]) > 0
    assert smaller.choices[0].message.content == "ok"  # fewer max_tokens fit
    assert len(fake.requests) == 2  # the refused one was never sent


async def test_parallel_answers_cannot_overspend(relay_for, fake: FakeUpstream) -> None:
    gate = asyncio.Event()
    fake.script = [gate, *livepeer_events(["ok"])]
    upstreams = [livepeer("lp", fake.base_url)]
    settings = {"livepeer_gateway_urls": [], "upstreams": upstreams,
                "user_spend_limit": 0.0015, "stream_start_wait": 0.1}  # fmt: skip
    async with relay_for(**settings) as relay:
        key, _ = await api_key(relay)
        async with client_for(relay, key) as client:
            calls = [
                asyncio.ensure_future(client.chat.completions.create(**ask(), stream=True))
                for _ in range(3)
            ]
            done = await asyncio.gather(*calls, return_exceptions=True)
            gate.set()
            for stream in done:
                if not isinstance(stream, BaseException):
                    async for _ in stream:
                        pass
    refused = [r for r in done if isinstance(r, openai.RateLimitError)]
    assert len(refused) == 2  # only one worst case fits the limit at a time


async def test_an_upstream_past_its_cap_leaves_the_answer_to_the_others(
    relay_for, fake: FakeUpstream, second: FakeUpstream
) -> None:
    fake.script = livepeer_events(["from A"])
    second.script = livepeer_events(["from B"])
    upstreams = [
        livepeer("a", fake.base_url, spend_cap=0.0015),
        livepeer("b", second.base_url, spend_cap=0.0015),
    ]
    async with relay_for(livepeer_gateway_urls=[], upstreams=upstreams) as relay:
        relay.service.registry.upstreams[1].active += 1000  # "a" first while it can
        key, _ = await api_key(relay)
        async with client_for(relay, key) as client:
            first = await client.chat.completions.create(**ask())
            then = await client.chat.completions.create(**ask())  # "a" is past its cap
            with pytest.raises(openai.RateLimitError) as refused:
                await client.chat.completions.create(**ask())  # and now "b" too
    assert first.choices[0].message.content == "from A"
    assert then.choices[0].message.content == "from B"
    assert refused.value.code == "spend_limit_exceeded"
    assert "spend cap of every upstream" in refused.value.message


async def test_a_keys_own_limit_binds_before_its_users(relay_for, fake: FakeUpstream) -> None:
    fake.script = livepeer_events(["ok"])
    upstreams = [livepeer("lp", fake.base_url)]
    async with relay_for(livepeer_gateway_urls=[], upstreams=upstreams) as relay:
        key, _ = await api_key(relay)
        async with relay.context.db.transaction() as session:
            await session.execute(update(ApiKey).values(spend_limit=nanos(0.0015)))
        async with client_for(relay, key) as client:
            await client.chat.completions.create(**ask())
            with pytest.raises(openai.RateLimitError) as refused:
                await client.chat.completions.create(**ask())
    assert refused.value.code == "spend_limit_exceeded"
    assert "this API key's spend limit" in refused.value.message


def test_the_command_line_sets_spend_limits(tmp_path: Path) -> None:
    env = {"CHATRELAY_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "200"}

    def run(*args: str) -> Result:
        return CliRunner().invoke(app, list(args), env=env)

    assert run("users", "create", "dora", "--password", "long enough").exit_code == 0
    set_ = run("users", "spend-limit", "dora", "2.5")
    assert set_.exit_code == 0 and "2.5 per period" in set_.output
    created = run("keys", "create", "--user", "dora", "--spend-limit", "0.75")
    assert created.exit_code == 0
    cleared = run("users", "spend-limit", "dora", "--default")
    assert cleared.exit_code == 0 and "CHATRELAY_USER_SPEND_LIMIT" in cleared.output
    assert run("users", "spend-limit", "dora").exit_code == 1  # neither amount nor --default
    assert run("keys", "create", "--user", "dora", "--spend-limit", "-1").exit_code != 0

    async def limits() -> tuple[int | None, list[int | None]]:
        db = Database(f"sqlite+aiosqlite:///{tmp_path / 'data' / 'chatrelay.db'}")
        try:
            async with db.read() as session:
                user = await session.scalar(select(User).where(User.username == "dora"))
                keys = (await session.scalars(select(ApiKey.spend_limit))).all()
        finally:
            await db.close()
        assert user is not None
        return user.spend_limit, list(keys)

    user_limit, key_limits = asyncio.run(limits())
    assert user_limit is None and key_limits == [nanos(0.75)]
    assert run("users", "spend-limit", "dora", "2.5").exit_code == 0
    assert asyncio.run(limits())[0] == nanos(2.5)
