"""Shared by the limits tests: which backend to run on, and reading what a user has spent."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import select

from chatrelay.limits.tokens import estimate_prompt_tokens
from chatrelay.store.database import Database
from chatrelay.store.models import UsageRecord
from tests.sse_client import read_answer, user


@pytest.fixture(params=["memory", "redis"])
def limits_backend(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Relay settings for each backend: in-process, or a real Redis under a prefix of its own."""
    if request.param == "memory":
        return {}
    settings: dict[str, Any] = request.getfixturevalue("redis_limits")
    return settings


def needed(question: str, max_tokens: int) -> int:
    """What a new conversation asking ``question`` reserves."""
    return max_tokens + estimate_prompt_tokens([{"role": "user", "content": question}])


def ask(question: str, max_tokens: int) -> dict[str, Any]:
    return {**user(question), "max_tokens": max_tokens}


async def chat_text(client: httpx.AsyncClient, body: dict[str, Any]) -> str:
    async with client.stream("POST", "/api/chat", json=body) as response:
        assert response.status_code == 200, await response.aread()
        return (await read_answer(response)).text


async def usage_of(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/api/usage")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def ledger(db: Database) -> list[UsageRecord]:
    async with db.read() as session:
        return list(await session.scalars(select(UsageRecord).order_by(UsageRecord.created_at)))
