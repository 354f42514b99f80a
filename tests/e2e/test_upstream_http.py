"""chatrelay's own upstream HTTP client (upstreams/http1.py) against real servers: kept-alive
connections, the three ways a body can end, a connection the server closed while idle, TLS."""

from __future__ import annotations

import asyncio
import gc
import socket
import ssl
import struct
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from chatrelay.upstreams import http1
from chatrelay.upstreams.chunk import UpstreamChunk
from chatrelay.upstreams.client import Upstream, UpstreamConfig, UpstreamFailure
from chatrelay.upstreams.dialects import GenerationParams
from chatrelay.upstreams.stream import Timeouts, UpstreamStream, Watchdog
from tests.fake_upstream import FakeUpstream, livepeer_events, openai_events, paced
from tests.polling import wait_until
from tests.sse_client import read_answer, user

QUESTION = [{"role": "user", "content": "x"}]
SSE_BODY = b'data: {"choices":[{"delta":{"content":"Hi"}}]}\n\ndata: [DONE]\n\n'


def ok_response(body: bytes = SSE_BODY) -> bytes:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: %d\r\n\r\n"
    return head % len(body) + body


def numbered(n: int) -> bytes:
    """The SSE body of answer number ``n`` ("answer1", ...)."""
    return SSE_BODY.replace(b"Hi", b"answer%d" % n)


@asynccontextmanager
async def upstream_at(base_url: str, dialect: str = "openai") -> AsyncIterator[Upstream]:
    config = UpstreamConfig(name="u", dialect=dialect, base_url=base_url, models=("m",))
    upstream = Upstream(config, timeouts=Timeouts(connect=2, first_token=2, stall=2))
    try:
        yield upstream
    finally:
        await upstream.close()


async def answer_of(upstream: Upstream) -> str:
    parts: list[str] = []
    async with upstream.stream("m", QUESTION, GenerationParams(8)) as stream:
        await stream.relay(lambda chunk: parts.append(chunk.content))
    return "".join(parts)


async def test_answers_one_after_another_share_one_connection(
    fake: FakeUpstream, relay_for
) -> None:
    """[DONE] comes before the body's chunked end: the relay waits for that end and reuses
    the connection, instead of opening (and on a real gateway, TLS-handshaking) a new one."""
    fake.script = paced(openai_events(["one", " two"]), 0.01)
    async with relay_for("openai") as relay:
        for _ in range(3):
            async with relay.client.stream("POST", "/api/chat", json=user("x")) as response:
                assert (await read_answer(response)).text == "one two"
            await asyncio.sleep(0.05)  # the body's end, a moment after [DONE]
    assert len(fake.requests) == 3
    assert len({r.peer for r in fake.requests}) == 1


async def test_a_stopped_answer_does_not_reuse_its_connection(fake: FakeUpstream) -> None:
    fake.script = paced(livepeer_events(["a", "b", "c", "d"]), 0.2)
    async with upstream_at(fake.base_url, "livepeer") as upstream:
        async with upstream.stream("m", QUESTION, GenerationParams(8)) as stream:
            # Enough after the first token: the rest of the body is never read.
            await stream.relay(lambda chunk: bool(chunk.content))
        fake.script = livepeer_events(["again"])
        assert await answer_of(upstream) == "again"
    assert fake.requests[0].peer != fake.requests[1].peer
    # The first answer's upstream was hung up on (let be, it would have ended, not been cut).
    await wait_until(lambda: fake.disconnected_at is not None)


@pytest.mark.parametrize("stopped", [False, True])
async def test_a_stream_once_over_leaves_no_garbage_for_the_collector(
    fake: FakeUpstream, stopped: bool
) -> None:
    """What an answer's stream used is freed when the stream is let go of, without waiting
    for the garbage collector: an open stream outlives young collections, so a reference
    cycle (its timer's callback pointing back at it) would be kept until a rare full one.
    (A failure's traceback still makes a cycle: failures are rare.)"""
    fake.script = paced(openai_events(["a", "b", "c"]), 0.01)
    gc.collect()
    gc.disable()
    try:
        async with upstream_at(fake.base_url) as upstream:
            async with upstream.stream("m", QUESTION, GenerationParams(8)) as stream:
                await stream.relay(lambda chunk: stopped and bool(chunk.content))
            del stream

            def left() -> list[object]:
                return [o for o in gc.get_objects() if isinstance(o, (UpstreamStream, Watchdog))]

            # Until the body's end after [DONE] (or a dropped connection's close) is handled:
            # at the latest when the drain gives up (DRAIN_SECONDS), which on a loaded machine
            # (the whole suite before it) came later than 2 s after the stream ended, and on
            # a machine running other test suites besides later than 5 s.
            await wait_until(lambda: not left())
    finally:
        gc.enable()


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def url_of(server: asyncio.Server, scheme: str = "http") -> str:
    port = server.sockets[0].getsockname()[1]
    return f"{scheme}://127.0.0.1:{port}"


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head + await reader.readexactly(length)


async def requests_of(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    """Each request that comes on a connection, until the client ends it."""
    while True:
        try:
            yield await read_request(reader)
        except (asyncio.IncompleteReadError, ConnectionError):
            return


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[..., asyncio.Future[asyncio.Server]]]:
    """Starts a bare TCP (or TLS) server whose connections ``handler`` answers byte by byte."""
    servers: list[asyncio.Server] = []

    async def start(handler: Handler, tls: ssl.SSLContext | None = None) -> asyncio.Server:
        async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await handler(reader, writer)
            finally:
                writer.close()

        server = await asyncio.start_server(connection, "127.0.0.1", 0, ssl=tls)
        servers.append(server)
        return server

    yield start  # type: ignore[misc]
    for server in servers:
        server.close()
        await server.wait_closed()


async def test_a_body_that_ends_with_the_connection(raw_server) -> None:
    """No Content-Length, not chunked: the body ends when the server closes (HTTP/1.0
    style); that end is the answer's end, not a dropped connection."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n")
        writer.write(SSE_BODY[:20])
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(SSE_BODY[20:])
        writer.close()

    async with upstream_at(url_of(await raw_server(handler))) as upstream:
        assert await answer_of(upstream) == "Hi"


async def test_a_body_with_content_length(raw_server) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async for _ in requests_of(reader):
            writer.write(ok_response())

    async with upstream_at(url_of(await raw_server(handler))) as upstream:
        assert [await answer_of(upstream) for _ in range(2)] == ["Hi", "Hi"]


async def test_a_kept_alive_connection_closed_by_the_server_is_replaced(raw_server) -> None:
    """The server answers one request per connection and closes the connection when the next
    request arrives on it, without a word (what a server whose idle timeout has just run
    out does): the request goes again on a new connection, and the caller sees nothing."""
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await read_request(reader)
        writer.write(ok_response())
        await read_request(reader)
        writer.transport.abort()

    async with upstream_at(url_of(await raw_server(handler))) as upstream:
        assert [await answer_of(upstream) for _ in range(3)] == ["Hi", "Hi", "Hi"]
    assert connections == 3


async def test_a_connection_dropped_mid_body_is_a_disconnect(raw_server) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        event = b'data: {"choices":[{"delta":{"content":"Hi"}}]}\n\n'
        writer.write(b"%x\r\n%s\r\n" % (len(event), event))
        await writer.drain()
        writer.transport.abort()

    seen: list[UpstreamChunk] = []
    async with upstream_at(url_of(await raw_server(handler))) as upstream:
        with pytest.raises(UpstreamFailure) as failure:
            async with upstream.stream("m", QUESTION, GenerationParams(8)) as stream:
                await stream.relay(seen.append)
    assert [c.content for c in seen] == ["Hi"]
    assert failure.value.kind == "disconnect"
    assert "dropped the connection mid-answer" in failure.value.message


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1, made by the openssl command (Debian's openssl)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext",
         "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_tls_upstream_verified_against_trusted_certificates(
    raw_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = self_signed(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await read_request(reader)
        except (asyncio.IncompleteReadError, ConnectionError):
            return  # the client refused the certificate
        writer.write(ok_response())
        await writer.drain()

    url = url_of(await raw_server(handler, server_tls), "https")
    # Not trusted by the system's certificates: refused, with the reason.
    monkeypatch.setattr(http1, "_SSL_CONTEXT", None)
    async with upstream_at(url) as upstream:
        with pytest.raises(UpstreamFailure) as refused:
            await answer_of(upstream)
        assert refused.value.code == "upstream_unreachable"
        assert "CERTIFICATE_VERIFY_FAILED" in refused.value.message
    # Trusted (SSL_CERT_FILE, as docs/api.md says): the answer comes through TLS.
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    monkeypatch.setattr(http1, "_SSL_CONTEXT", None)
    async with upstream_at(url) as upstream:
        assert await answer_of(upstream) == "Hi"


async def test_interim_responses_are_skipped_and_never_answer_the_next_request(
    raw_server,
) -> None:
    """A 100 Continue (or 103) before the answer is not the answer; nor is a 200 that comes
    after it, late, someone else's. Each request gets its own answer."""
    count = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal count
        async for _ in requests_of(reader):
            count += 1
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\n\r\n")
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(ok_response(numbered(count)))

    async with upstream_at(url_of(await raw_server(handler))) as upstream:
        assert [await answer_of(upstream) for _ in range(3)] == ["answer1", "answer2", "answer3"]


@pytest.mark.parametrize("extra", [b"HTTP/1.1 200 OK\r\nX-Junk: 1\r\n", b"late"])
async def test_bytes_after_an_answer_are_nobody_s_answer(raw_server, extra: bytes) -> None:
    """What a server sends after a whole response (in the same packet, or later on the idle
    connection) makes that connection unusable: the next request goes on a new one."""
    count = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal count
        async for _ in requests_of(reader):
            count += 1
            writer.write(ok_response(numbered(count)))
            if extra != b"late":
                writer.write(extra)
            await writer.drain()
            await asyncio.sleep(0.05)
            if extra == b"late":
                writer.write(ok_response(SSE_BODY.replace(b"Hi", b"STALE")))

    async with upstream_at(url_of(await raw_server(handler))) as upstream:
        first = await answer_of(upstream)
        await asyncio.sleep(0.1)
        assert [first, await answer_of(upstream)] == ["answer1", "answer2"]


async def test_a_reset_ends_a_connection_delimited_body_as_a_failure(raw_server) -> None:
    """A body that ends with the connection ends cleanly only with a clean close: a reset
    half-way is a dropped answer, never a finished one."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n")
        writer.write(b'data: {"choices":[{"delta":{"content":"Hel"}}]}\n\n')
        await writer.drain()
        await asyncio.sleep(0.05)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # with SO_LINGER 0: a reset, not a clean close

    async with upstream_at(url_of(await raw_server(handler)), "livepeer") as upstream:
        with pytest.raises(UpstreamFailure) as failure:
            await answer_of(upstream)
    assert failure.value.kind == "disconnect"


async def test_what_goes_on_the_wire(raw_server) -> None:
    """Credentials in the URL as HTTP basic auth (decoded), a path with a space quoted."""
    received: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await read_request(reader))
        writer.write(ok_response())

    base = url_of(await raw_server(handler))
    async with upstream_at(
        base.replace("http://", "http://us%40er:p%3Ass@") + "/my models"
    ) as upstream:
        assert await answer_of(upstream) == "Hi"
    head = received[0].split(b"\r\n\r\n")[0].decode()
    assert head.startswith("POST /my%20models/v1/chat/completions HTTP/1.1\r\n")
    assert "Authorization: Basic dXNAZXI6cDpzcw==" in head  # base64 of "us@er:p:ss"
    assert f"Host: {base.removeprefix('http://')}" in head
    assert "Content-Length: " in head


async def test_errors_never_show_the_credentials_of_an_upstream_url() -> None:
    dead = url_of_dead_port()
    async with upstream_at(dead.replace("http://", "http://operator:s3cret-pass@")) as upstream:
        with pytest.raises(UpstreamFailure) as refused:
            await answer_of(upstream)
    assert refused.value.code == "upstream_unreachable"
    assert "s3cret-pass" not in refused.value.message and "operator" not in refused.value.message
    assert f"http://***@{dead.removeprefix('http://')}/v1/chat/completions" in refused.value.message


def url_of_dead_port() -> str:
    with socket.socket() as probe:  # a port nobody listens on once this socket is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"
