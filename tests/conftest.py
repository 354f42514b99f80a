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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests that start the real llama.cpp server (marked ``slow``) go to one xdist
    worker, one after another (``--dist loadgroup``): its inference takes the cores whole,
    and a module's server (test_embedded_structured.py) is then started once, not once per
    worker. The page tests (those that use the ``browser``) share another worker: Chromium
    takes a core of its own while it renders, and two of them at once on a 2-core machine
    made their waits the slowest of the run."""
    for item in items:
        if item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.xdist_group("llama_cpp"))
        elif "browser" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("browser"))


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


class TestServer(uvicorn.Server):
    """uvicorn's server, stopped at once when the test is done with it.

    uvicorn looks every 0.1 s whether it should exit, and pauses 0.1 s in its shutdown before
    it waits for the open connections to close: a fixed fifth of a second for each of the
    suite's many relays. Here the main loop waits for ``stop()``, and the shutdown waits for
    the connections and tasks to end as uvicorn's does, without the pause. The rest (lifespan,
    protocol, the app's own shutdown) is uvicorn's. ``chatrelay serve`` runs its own server
    (cli/quiet_server.py); its stopping is tested through real signals (test_server.py).
    """

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self.should_exit = True
        self._stopping.set()

    async def main_loop(self) -> None:
        await self.on_tick(0)  # the Date header, once
        await self._stopping.wait()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()
        # uvicorn has no event for either: polled as it does, but every 5 ms instead of 100.
        while self.server_state.connections or self.server_state.tasks:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
        for server in self.servers:
            await server.wait_closed()
        await self.lifespan.shutdown()


@asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[RunningRelay]:
    """The real app under uvicorn on a free loopback port, in this test's event loop."""
    app = create_app(settings)
    # Bound here and handed to uvicorn: no moment when another test could take the port.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listening:
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listening.bind(("127.0.0.1", 0))
        port = listening.getsockname()[1]
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            ws="none",
            lifespan="on",
            proxy_headers=False,  # as `chatrelay serve`: the app reads the proxy headers itself
        )
        server = TestServer(config)
        task = asyncio.create_task(server.serve(sockets=[listening]))
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        url = f"http://127.0.0.1:{port}"
        try:
            async with httpx.AsyncClient(base_url=url, timeout=10) as client:
                yield RunningRelay(url, app, client)
        finally:
            server.stop()
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
            # Far above any gap a loaded machine makes (an argon2 hash in this process held a
            # paced answer past 2 s): the tests of these timers set their own, well below.
            "stall_timeout": 30,
            "first_token_timeout": 30,
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
