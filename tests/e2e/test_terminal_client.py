"""`chatrelay chat` in a real pseudo-terminal, against a real relay and the fake upstream."""

from __future__ import annotations

import asyncio
import io
import re
import sys

import pexpect

from tests.fake_upstream import FakeUpstream, livepeer_events, paced
from tests.polling import wait_until
from tests.tcp_proxy import CuttableProxy


async def expect(child: pexpect.spawn, pattern: object) -> None:
    # Blocking expect in a thread: the relay under test runs on this event loop meanwhile.
    await asyncio.to_thread(child.expect, pattern)


def spawn_chat(url: str) -> pexpect.spawn:
    return pexpect.spawn(
        sys.executable,
        ["-m", "chatrelay", "chat", "--url", url],
        encoding="utf-8",
        timeout=10,
        env={"TERM": "dumb", "PATH": "/usr/bin:/bin", "COLUMNS": "200"},
        dimensions=(40, 200),
    )


async def test_chat_streams_and_keeps_history(fake: FakeUpstream, relay_for) -> None:
    fake.script = paced(livepeer_events(["Live", "peer", " says", " hi"]), 0.01)
    async with relay_for() as relay:
        child = spawn_chat(relay.url)
        try:
            await expect(child, "Meta-Llama-3.1-8B-Instruct")
            await expect(child, "you>")
            child.sendline("hello")
            await expect(child, "Livepeer says hi")
            await expect(child, "you>")
            child.sendline("and again")
            await expect(child, "Livepeer says hi")
            await expect(child, "you>")
            child.sendeof()
            await expect(child, pexpect.EOF)
        finally:
            child.close(force=True)
    assert fake.requests[-1].json["messages"] == [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "Livepeer says hi"},
        {"role": "user", "content": "and again"},
    ]


async def test_ctrl_c_stops_the_answer_and_stays(fake: FakeUpstream, relay_for) -> None:
    fake.script = paced(livepeer_events([f" w{i}" for i in range(500)]), 0.03)
    async with relay_for() as relay:
        child = spawn_chat(relay.url)
        try:
            await expect(child, "you>")
            child.sendline("talk a lot")
            await expect(child, " w3")
            child.sendintr()
            await expect(child, r"\(stopped\)")
            await expect(child, "you>")  # still in the chat
            # The relay hung up on the upstream mid-body: long before its 15 s script's end.
            await wait_until(lambda: fake.disconnected_at is not None, within=10.0)
            assert fake.finished_at is None
            child.sendline("/exit")
            await expect(child, pexpect.EOF)
        finally:
            child.close(force=True)


async def test_chat_shows_server_errors(fake: FakeUpstream, relay_for) -> None:
    fake.fail(503, {"error": {"message": "Service Unavailable Error"}})
    async with relay_for() as relay:
        child = spawn_chat(relay.url)
        try:
            await expect(child, "you>")
            child.sendline("hello")
            await expect(child, "Service Unavailable Error")
            await expect(child, "you>")
        finally:
            child.close(force=True)


def test_chat_says_when_server_is_down() -> None:
    child = spawn_chat("http://127.0.0.1:9")
    child.expect("Cannot reach chatrelay")
    child.expect("make run")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 1


async def test_a_dropped_connection_reattaches_and_loses_nothing(
    fake: FakeUpstream, relay_for
) -> None:
    count = 120
    fake.script = paced(livepeer_events([f" w{i}" for i in range(count)]), 0.02)
    async with relay_for() as relay:
        proxy = CuttableProxy(int(relay.url.rsplit(":", 1)[1]))
        url = await proxy.start()
        child = spawn_chat(url)
        child.logfile_read = transcript = io.StringIO()
        try:
            await expect(child, "you>")
            child.sendline("talk a lot")
            await expect(child, " w10 ")
            proxy.cut()  # the network drops; the answer goes on on the server
            await expect(child, "reconnecting")
            await expect(child, f" w{count - 1}")
            await expect(child, "you>")
        finally:
            child.close(force=True)
            await proxy.close()
    # Every token once, in order, across the reconnect (the screen holds both parts).
    numbers = [int(n) for n in re.findall(r" w(\d+)", transcript.getvalue())]
    assert numbers == list(range(count)), numbers
