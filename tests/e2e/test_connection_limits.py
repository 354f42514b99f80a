"""`chatrelay serve` facing slow and oversized clients on its own
(chatrelay/http/connection_limits.py):
real sockets against a real server process, as an attacker on the internet would try it."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson

from tests.e2e.test_crash_recovery import start_server_process
from tests.fake_upstream import FakeUpstream

# Generous bound for what must happen: no test waits this long unless the server never acts.
BOUND = 30.0


@contextlib.asynccontextmanager
async def server(
    fake: FakeUpstream, tmp_path: Path, **limits: str
) -> AsyncIterator[tuple[int, str]]:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "LIVEPEER_GATEWAY_URL": fake.base_url,
        "CHATRELAY_DATA_DIR": str(tmp_path / "data"),
        "CHATRELAY_WARM_MODELS": "",
        **{f"CHATRELAY_{name.upper()}": value for name, value in limits.items()},
    }
    process, url = await start_server_process(env)
    try:
        yield int(url.rsplit(":", 1)[1]), url
    finally:
        process.terminate()
        await process.wait()


async def exchange(port: int, data: bytes) -> bytes:
    """Send ``data`` on a new connection and read until the server closes it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), BOUND)
    finally:
        writer.close()


def status_and_error(response: bytes) -> tuple[int, dict[str, str]]:
    head, _, body = response.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower()
    return int(head.split(b" ", 2)[1]), orjson.loads(body)["error"]


def request(*headers: bytes) -> bytes:
    return b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"".join(headers) + b"\r\n"


async def test_oversized_request_heads_are_refused_with_431(
    fake: FakeUpstream, tmp_path: Path
) -> None:
    async with server(fake, tmp_path, max_header_bytes="8192", max_headers="50") as (port, url):
        # One header of 10 KiB, whole in one go (before: answered 200, whatever its size).
        big = await exchange(port, request(b"X-Big: " + b"a" * 10_000 + b"\r\n"))
        status, error = status_and_error(big)
        assert status == 431 and error["code"] == "headers_too_large"
        assert "CHATRELAY_MAX_HEADER_BYTES" in error["message"]
        # Many small headers.
        many = await exchange(port, request(*(b"X-N%d: 1\r\n" % i for i in range(60))))
        assert status_and_error(many)[0] == 431
        # What a browser sends is well within both.
        async with httpx.AsyncClient(base_url=url) as client:
            ok = await client.get("/healthz", headers={f"X-N{i}": "1" for i in range(30)})
        assert ok.status_code == 200


async def test_a_header_that_never_ends_is_cut_off(fake: FakeUpstream, tmp_path: Path) -> None:
    """Before: the server took all 64 MiB into its memory (and more, for as long as sent)."""
    async with server(fake, tmp_path) as (port, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Endless: ")
        sent, piece = 0, b"a" * 65536
        with contextlib.suppress(ConnectionError):
            while sent < 64 * 1024 * 1024:
                writer.write(piece)
                await asyncio.wait_for(writer.drain(), BOUND)
                sent += len(piece)
        # Cut off after the limit (64 KiB) and what the sockets' buffers took meanwhile.
        assert sent < 32 * 1024 * 1024
        with contextlib.suppress(ConnectionError):
            rest = await asyncio.wait_for(reader.read(), BOUND)
            assert rest == b"" or rest.startswith(b"HTTP/1.1 431 ")
        writer.close()


async def test_slow_and_silent_clients_are_disconnected(fake: FakeUpstream, tmp_path: Path) -> None:
    """Slowloris: connections trickling their headers (and ones that send nothing) are closed
    once the head's time is up, with a 408; before, every one stayed open for ever."""
    async with server(fake, tmp_path, header_timeout="1", idle_timeout="1") as (port, url):

        async def trickle(silent: bool) -> bytes:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            if not silent:
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            answer = asyncio.ensure_future(reader.read())
            try:
                line = 0
                while not answer.done():
                    await asyncio.wait([answer], timeout=0.2)
                    if not silent and not answer.done():
                        with contextlib.suppress(ConnectionError):
                            writer.write(b"X-Slow-%d: 1\r\n" % line)
                        line += 1
                return answer.result()
            finally:
                writer.close()

        answers = await asyncio.wait_for(
            asyncio.gather(*(trickle(silent=i % 4 == 0) for i in range(40))), BOUND
        )
        for answer in answers:
            status, error = status_and_error(answer)
            assert status == 408 and error["code"] == "request_timeout"
        # Meanwhile and after, a client that sends its request gets its answer.
        async with httpx.AsyncClient(base_url=url) as client:
            assert (await client.get("/healthz")).status_code == 200

        # A kept-alive connection left idle after its answer is closed too.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request())
        first = await asyncio.wait_for(reader.readuntil(b'{"status":"ok"}'), BOUND)
        assert first.startswith(b"HTTP/1.1 200 ")
        assert await asyncio.wait_for(reader.read(), BOUND) == b""
        writer.close()


async def test_a_body_that_does_not_arrive_in_time_ends_the_connection(
    fake: FakeUpstream, tmp_path: Path
) -> None:
    async with server(fake, tmp_path, body_timeout="1") as (port, url):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n" + b'{"messages": ['
        )
        await writer.drain()
        # Before: the route waited for the rest of the body for ever.
        await asyncio.wait_for(reader.read(), BOUND)
        assert reader.at_eof()
        writer.close()
        assert fake.requests == []  # nothing was asked of the upstream
        async with httpx.AsyncClient(base_url=url) as client:
            assert (await client.get("/healthz")).status_code == 200


async def test_connections_beyond_the_limit_are_answered_503(
    fake: FakeUpstream, tmp_path: Path
) -> None:
    async with server(fake, tmp_path, max_connections="4", header_timeout="600") as (port, url):
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(4)]
        for _, writer in held:
            writer.write(b"GET /healthz HTTP/1.1\r\n")  # a head not finished yet
            await writer.drain()
        # Before: no limit, answered 200.
        status, error = status_and_error(await exchange(port, request(b"Connection: close\r\n")))
        assert status == 503 and error["code"] == "too_many_connections"
        for _, writer in held:
            writer.close()

        async with httpx.AsyncClient(base_url=url) as client:
            answered: list[int] = []

            async def healthz() -> bool:
                answered.append((await client.get("/healthz")).status_code)
                return answered[-1] == 200

            for _ in range(int(BOUND / 0.05)):  # the closed ones are let go of
                if await healthz():
                    break
                await asyncio.sleep(0.05)
            assert answered[-1] == 200
