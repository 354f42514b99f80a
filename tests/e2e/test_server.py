"""`chatrelay serve` as an operator runs it: a stop signal ends it cleanly, at once when idle,
and an answer still streaming is kept, marked interrupted (cli/quiet_server.py's once-a-second
tick must not slow either down)."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_admin_cli import run
from tests.e2e.test_crash_recovery import start_server_process
from tests.fake_upstream import FakeUpstream, livepeer_events, paced
from tests.sse_client import DONE, events_of, user


def server_env(fake: FakeUpstream, tmp_path: Path, database_url: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", ""),
        "LIVEPEER_GATEWAY_URL": fake.base_url,
        "CHATRELAY_DATA_DIR": str(tmp_path / "data"),
        "CHATRELAY_DATABASE_URL": database_url,
        "CHATRELAY_WARM_MODELS": "",
    }


async def api_key_for(env: dict[str, str]) -> str:
    """A user and an API key, made with the CLI as an operator would."""
    made = await asyncio.to_thread(run, env, "users", "create", "ops", "--password", "long enough")
    assert made.exit_code == 0, made.output
    issued = await asyncio.to_thread(run, env, "keys", "create", "--user", "ops")
    assert issued.exit_code == 0, issued.output
    return issued.stdout.strip()


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


@pytest.mark.parametrize("api", ["page", "openai", "reattach"])
async def test_a_stop_signal_mid_answer_ends_the_stream_and_keeps_the_answer(
    relay_for, fake: FakeUpstream, tmp_path: Path, database_url: str, api: str
) -> None:
    fake.script = paced(livepeer_events([f" w{i}" for i in range(1000)]), 0.02)
    env = server_env(fake, tmp_path, database_url)
    path, body, key = "/api/chat", user("keep this"), None
    if api == "openai":
        key = await api_key_for(env)
        path, body = "/v1/chat/completions", {**user("keep this"), "stream": True}
    auth = {"Authorization": f"Bearer {key}"} if key else {}
    process, url = await start_server_process(env)
    events = []
    try:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            async with client.stream("POST", path, json=body, headers=auth) as response:
                conversation_id = response.headers["x-conversation-id"]
                followed = response
                if api == "reattach":  # a second tab follows the answer; the first one too
                    answer_url = f"/api/messages/{response.headers['x-message-id']}/stream"
                    followed = await client.send(
                        client.build_request("GET", answer_url), stream=True
                    )
                try:
                    async for event in events_of(followed):
                        events.append(event)
                        if len(events) == 10:
                            process.send_signal(signal.SIGTERM)
                finally:
                    await followed.aclose()
            cookies = dict(client.cookies)
        await asyncio.wait_for(process.wait(), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    # The stream ended with the server, after its grace period, and says so: a complete
    # response, not a connection cut mid-chunk.
    assert 10 <= len(events) < 1000 and events[-1] == DONE, events[-3:]
    error = events[-2]["error"]
    assert error["code"] == "shutdown" and "kept" in error["message"]

    async with relay_for(database_url=database_url) as relay:
        relay.client.cookies.update(cookies)
        stored = (
            await relay.client.get(f"/api/conversations/{conversation_id}", headers=auth)
        ).json()
    question, answer = stored["messages"]
    assert question["content"] == "keep this"
    assert answer["status"] == "interrupted"
    # Stored by the answer's own ending (not just its last flush), and every token of it
    # reached the client before the shutdown event.
    streamed = "".join(
        e["choices"][0]["delta"].get("content", "") for e in events[:-2] if e.get("choices")
    )
    assert answer["content"] == streamed and streamed.startswith(" w0 w1 w2 w3 w4 w5 w6 w7 w8")
