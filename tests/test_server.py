"""`chatrelay serve` as an operator runs it: a stop signal ends it cleanly, at once when idle,
and an answer still streaming is kept, marked interrupted (server.py's once-a-second tick must
not slow either down)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

import httpx
import pytest

from tests.fake_upstream import FakeUpstream, livepeer_events, paced
from tests.sse_client import events_of, user
from tests.test_crash_recovery import start_server_process


def server_env(fake: FakeUpstream, tmp_path: Path, database_url: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", ""),
        "LIVEPEER_GATEWAY_URL": fake.base_url,
        "CHATRELAY_DATA_DIR": str(tmp_path / "data"),
        "CHATRELAY_DATABASE_URL": database_url,
        "CHATRELAY_WARM_MODELS": "",
    }


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
async def test_an_idle_server_stops_on_a_signal(
    fake: FakeUpstream, tmp_path: Path, database_url: str, stop: signal.Signals
) -> None:
    process, url = await start_server_process(server_env(fake, tmp_path, database_url))
    async with httpx.AsyncClient(base_url=url) as client:
        response = await client.get("/healthz")
    # uvicorn's Date header, refreshed by the server's tick.
    assert response.status_code == 200 and response.headers["date"].endswith(" GMT")
    await asyncio.sleep(1.5)  # idle, between two ticks
    process.send_signal(stop)
    # Generous: a stop that waited for nothing would take milliseconds.
    await asyncio.wait_for(process.wait(), 10)
    # uvicorn re-raises the signal it caught once it has shut down cleanly.
    assert process.returncode in (0, -stop)


async def test_a_stop_signal_mid_answer_keeps_the_answer(
    relay_for, fake: FakeUpstream, tmp_path: Path, database_url: str
) -> None:
    fake.script = paced(livepeer_events([f" w{i}" for i in range(1000)]), 0.02)
    process, url = await start_server_process(server_env(fake, tmp_path, database_url))
    seen = 0
    try:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            # uvicorn gives open streams its grace period (5 s), then cuts them.
            with contextlib.suppress(httpx.RemoteProtocolError):
                async with client.stream("POST", "/api/chat", json=user("keep this")) as response:
                    conversation_id = response.headers["x-conversation-id"]
                    async for event in events_of(response):
                        if event.get("choices") and event["choices"][0]["delta"].get("content"):
                            seen += 1
                            if seen == 10:
                                process.send_signal(signal.SIGTERM)
            cookies = dict(client.cookies)
        await asyncio.wait_for(process.wait(), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert 10 <= seen < 1000  # the stream ended with the server, not with the answer

    async with relay_for(database_url=database_url) as relay:
        relay.client.cookies.update(cookies)
        stored = (await relay.client.get(f"/api/conversations/{conversation_id}")).json()
    question, answer = stored["messages"]
    assert question["content"] == "keep this"
    assert answer["status"] == "interrupted"
    assert answer["content"].startswith(" w0 w1 w2 w3 w4 w5 w6 w7 w8 w9")
