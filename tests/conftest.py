"""Shared fixtures: a fake upstream and the relay itself, both on real loopback sockets."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis
import uvicorn
from fastapi import FastAPI

from chatrelay.answers.service import ChatService
from chatrelay.app import create_app
from chatrelay.config import Settings
from chatrelay.http.context import AppContext, app_context
from chatrelay.upstreams.sidecar import free_port
from tests.fake_upstream import FakeUpstream

# The browser fixture for the page tests lives in its own module.
pytest_plugins = ["tests.browser"]

# Settings come only from what each test says: never from the developer's shell or .env.
# Nor from a .env file in the working directory.
Settings.model_config["env_file"] = None

# Nor proxy variables: httpx, the tests' client, would send its loopback requests to one.
_PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
for _name in list(os.environ):
    if (
        _name.startswith(("CHATRELAY_", "LIVEPEER_", "OPENAI_"))
        or _name.lower() in _PROXY_VARIABLES
    ):
        del os.environ[_name]


@dataclass
class RunningRelay:
    url: str
    app: FastAPI
    client: httpx.AsyncClient

    @property
    def context(self) -> AppContext:
        """What the running app's routes are given (chatrelay/http/context.py)."""
        return app_context(self.app)

    @property
    def service(self) -> ChatService:
        return self.context.chat


@asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[RunningRelay]:
    """The real app under uvicorn on a free loopback port, in this test's event loop."""
    app = create_app(settings)
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        ws="none",
        lifespan="on",
        proxy_headers=False,  # as `chatrelay serve`: the app reads the proxy headers itself
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            yield RunningRelay(url, app, client)
    finally:
        server.should_exit = True
        await task


@pytest.fixture
async def fake() -> AsyncIterator[FakeUpstream]:
    upstream = FakeUpstream()
    await upstream.start()
    yield upstream
    await upstream.close()


RelayFactory = Callable[..., Any]


POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"


def postgres_available() -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", 5432)) == 0


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """An empty database of each kind: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'chatrelay.db'}"
        return
    if not postgres_available():
        if os.environ.get("CI") == "true":
            pytest.fail("PostgreSQL is not running on 127.0.0.1:5432 (CI must test it)")
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
    name = f"chatrelay_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(POSTGRES_ADMIN_URL)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


REDIS_URL = "redis://127.0.0.1:6379/0"


def redis_available() -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", 6379)) == 0


@pytest.fixture
async def redis_limits() -> AsyncIterator[dict[str, str]]:
    """Settings that keep limits in the real Redis, under a key prefix of this test's own."""
    if not redis_available():
        if os.environ.get("CI") == "true":
            pytest.fail("Redis is not running on 127.0.0.1:6379 (CI must test it)")
        pytest.skip("Redis is not running on 127.0.0.1:6379")
    prefix = f"chatrelay-test-{uuid.uuid4().hex[:12]}:"
    yield {"redis_url": REDIS_URL, "redis_prefix": prefix}
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture
async def relay_for(fake: FakeUpstream, tmp_path: Path) -> AsyncIterator[RelayFactory]:
    """Start a relay pointed at the fake upstream: ``async with relay_for("livepeer") as r``."""

    def factory(dialect: str = "livepeer", **overrides: Any) -> Any:
        upstream = (
            {"livepeer_gateway_urls": [fake.base_url]}
            if dialect == "livepeer"
            else {"openai_base_url": fake.base_url, "models": ["gpt-test"]}
        )
        defaults = {
            "embedded": False,
            "finished_job_ttl": 0,
            "stall_timeout": 2,
            "first_token_timeout": 5,
            "data_dir": tmp_path / "data",
            # One attempt and no breaker unless a test is about retries and failover.
            "retry_deadline": 0,
            "max_failovers": 0,
            "breaker_failures": 1000,
            "health_interval": 0,
            "warm_models": [],
        }
        settings = Settings(**{**defaults, **upstream, **overrides})
        return serve(settings)

    yield factory
