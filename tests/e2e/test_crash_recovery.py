"""`kill -9` in the middle of an answer loses neither the question nor the partial answer."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from functools import partial
from pathlib import Path

import httpx
from sqlalchemy import select

from chatrelay.store.database import Database
from chatrelay.store.models import MessageRow
from tests.fake_upstream import FakeUpstream, livepeer_events, paced
from tests.polling import HANG, wait_until_async
from tests.ports import free_port
from tests.sse_client import events_of, user


async def start_server_process(env: dict[str, str]) -> tuple[asyncio.subprocess.Process, str]:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "chatrelay", "serve", "--port", str(port),
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    await wait_healthy(url, process)
    return process, url


async def wait_healthy(
    url: str, process: asyncio.subprocess.Process | None = None, log: Path | None = None
) -> None:
    """Until ``url`` answers /healthz (a server process, or nginx in front of some), HANG at
    most: on a loaded machine two deployments starting at once took over 30 s. A server that
    exits or never answers fails the test with the tail of ``log``, its output, if given."""
    deadline = time.monotonic() + HANG
    async with httpx.AsyncClient() as probe:
        while True:
            if process is not None and process.returncode is not None:
                why = f"{url} exited (status {process.returncode})"
                break
            with contextlib.suppress(httpx.HTTPError):
                if (await probe.get(f"{url}/healthz")).status_code == 200:
                    return
            if time.monotonic() > deadline:
                why = f"{url} did not come up in {HANG:g} s"
                break
            await asyncio.sleep(0.1)
    raise AssertionError(why + (f"; its log ends:\n{log_tail(log)}" if log else ""))


def log_tail(log: Path, lines: int = 40) -> str:
    """The last ``lines`` lines a server wrote to ``log``."""
    if not log.exists():
        return "(nothing)"
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


async def stored_words_at_least(database_url: str, words: int) -> bool:
    """Whether the (only) answer's stored row holds ``words`` words yet."""
    db = Database(database_url)
    try:
        async with db.read() as session:
            query = select(MessageRow.content).where(MessageRow.role == "assistant")
            content = await session.scalar(query)
    finally:
        await db.close()
    return len((content or "").split()) >= words


async def test_kill_9_mid_answer_then_restart(
    relay_for, fake: FakeUpstream, database_url: str, tmp_path: Path
) -> None:
    fake.script = paced(livepeer_events([f" w{i}" for i in range(1000)]), 0.02)
    env = {
        "PATH": os.environ.get("PATH", ""),
        "LIVEPEER_GATEWAY_URL": fake.base_url,
        "CHATRELAY_DATA_DIR": str(tmp_path / "data"),
        "CHATRELAY_DATABASE_URL": database_url,
        "CHATRELAY_FLUSH_INTERVAL": "0.1",
    }
    process, url = await start_server_process(env)
    try:
        async with httpx.AsyncClient(base_url=url) as client:
            async with client.stream("POST", "/api/chat", json=user("survive this")) as response:
                conversation_id = response.headers["x-conversation-id"]
                seen = 0
                async for event in events_of(response):
                    if event["choices"][0]["delta"].get("content"):
                        seen += 1
                        if seen == 20:
                            break
                # What it has sent so far is in its row (flushed on its timer) when it dies.
                await wait_until_async(partial(stored_words_at_least, database_url, seen))
                process.send_signal(signal.SIGKILL)  # no shutdown code runs
                await process.wait()
            cookies = dict(client.cookies)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    async with relay_for(database_url=database_url) as relay:
        relay.client.cookies.update(cookies)
        stored = (await relay.client.get(f"/api/conversations/{conversation_id}")).json()
    assert "messages" in stored, stored
    question, answer = stored["messages"]
    assert question["content"] == "survive this" and question["status"] == "complete"
    assert answer["status"] == "interrupted"
    assert answer["content"].startswith(" w0 w1 w2")
    assert len(answer["content"].split()) >= 20
