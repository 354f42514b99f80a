"""Upstream requests through an HTTP proxy named by HTTP_PROXY / HTTPS_PROXY / NO_PROXY
(docs/proxies.md), against a real forward proxy: Debian's tinyproxy, started per test.

The fake upstreams listen on loopback (tests never leave the machine), and chatrelay never
sends loopback through a proxy. So the proxied tests turn that rule off (``proxied_loopback``)
and name the fake ``localhost``, which tinyproxy resolves, while ``NO_PROXY=127.0.0.1``
keeps the test's own HTTP client (httpx, which reads the same variables) talking to the
relay directly.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from chatrelay.upstreams import http1, proxy
from chatrelay.upstreams.client import Upstream, UpstreamConfig, UpstreamFailure
from chatrelay.upstreams.dialects import GenerationParams
from chatrelay.upstreams.http1 import ConnectionPool
from chatrelay.upstreams.proxy import no_proxy_matches, proxy_for
from chatrelay.upstreams.stream import Timeouts
from tests.fake_upstream import FakeUpstream, livepeer_chunk, livepeer_events
from tests.polling import wait_until
from tests.ports import free_port
from tests.sse_client import DONE, StreamedAnswer, events_of, read_answer, user

TINYPROXY = "/usr/bin/tinyproxy"
PROXY_VARIABLES = ("http_proxy", "https_proxy", "no_proxy", "all_proxy")
SECRET = "s3cret-pw"
SSE_BODY = b'data: {"choices":[{"delta":{"content":"Hi"}}]}\n\ndata: [DONE]\n\n'
OK_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: %d\r\n\r\n%s"
    % (len(SSE_BODY), SSE_BODY)
)


@dataclass
class Tinyproxy:
    url: str  # http://127.0.0.1:port, no credentials
    log: Path

    def with_credentials(self, user: str, password: str) -> str:
        return self.url.replace("http://", f"http://{user}:{password}@")

    def connects(self) -> list[str]:
        """The CONNECT requests it has had (its log line: "Request (...): CONNECT a:b ...")."""
        return re.findall(r"\): CONNECT (\S+) ", self.log.read_text())


StartProxy = Callable[..., Awaitable[Tinyproxy]]


@pytest.fixture
async def tinyproxy(tmp_path: Path) -> AsyncIterator[StartProxy]:
    """Starts tinyproxy in the foreground on a free loopback port: ``await tinyproxy()``,
    ``await tinyproxy(basic_auth=("user", "pass"))``. Stopped at the test's end."""
    if not (shutil.which("tinyproxy") or os.access(TINYPROXY, os.X_OK)):
        if os.environ.get("CI") == "true":
            pytest.fail("tinyproxy is not installed (CI must test the proxy support)")
        pytest.skip("tinyproxy is not installed (apt-get install tinyproxy)")
    started: list[asyncio.subprocess.Process] = []

    async def start(basic_auth: tuple[str, str] | None = None) -> Tinyproxy:
        port = free_port()
        directory = tmp_path / f"tinyproxy-{port}"
        directory.mkdir()
        lines = [
            f"Port {port}",
            "Listen 127.0.0.1",
            "Allow 127.0.0.1",
            "Timeout 60",
            "MaxClients 50",
            "LogLevel Connect",  # one line per request: the CONNECTs are counted from it
        ]
        if basic_auth:
            lines.append(f"BasicAuth {basic_auth[0]} {basic_auth[1]}")
        config = directory / "tinyproxy.conf"
        config.write_text("\n".join(lines) + "\n")
        log = directory / "tinyproxy.log"
        with log.open("wb") as out:
            process = await asyncio.create_subprocess_exec(
                shutil.which("tinyproxy") or TINYPROXY,
                "-d",  # in the foreground, logging to its output
                "-c",
                str(config),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        started.append(process)

        def listening() -> bool:
            assert process.returncode is None, log.read_text()
            with socket.socket() as probe:
                return probe.connect_ex(("127.0.0.1", port)) == 0

        await wait_until(listening)
        return Tinyproxy(f"http://127.0.0.1:{port}", log)

    yield start
    for process in started:
        process.terminate()
        await process.wait()


@pytest.fixture
def proxied_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loopback upstreams through the proxy, as remote ones would be (see the module doc)."""
    monkeypatch.setattr(proxy, "always_direct", lambda host: False)


def set_proxies(monkeypatch: pytest.MonkeyPatch, **variables: str) -> None:
    """Exactly these proxy variables (a test never inherits the developer's)."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)


def as_localhost(url: str) -> str:
    return url.replace("127.0.0.1", "localhost")


@asynccontextmanager
async def upstream_at(base_url: str) -> AsyncIterator[Upstream]:
    config = UpstreamConfig(name="u", dialect="openai", base_url=base_url, models=("m",))
    upstream = Upstream(config, timeouts=Timeouts(connect=5, first_token=5, stall=5))
    try:
        yield upstream
    finally:
        await upstream.close()


async def answer_of(upstream: Upstream) -> str:
    parts: list[str] = []
    async with upstream.stream("m", [user("x")["messages"][0]], GenerationParams(8)) as stream:
        await stream.relay(lambda chunk: parts.append(chunk.content))
    return "".join(parts)


def via_proxy(fake: FakeUpstream) -> bool:
    """Whether the last request reached the fake through tinyproxy (which adds a Via)."""
    return "tinyproxy" in fake.requests[-1].headers.get("Via", "")


async def first_token_then_rest(relay, fake: FakeUpstream, gate: asyncio.Event) -> list[object]:
    """Reads the answer up to its first token, checks the fake is still held back at the
    gate (nothing on the way buffered the token), opens the gate and reads the rest."""
    async with relay.client.stream("POST", "/api/chat", json=user("x")) as response:
        assert response.status_code == 200, await response.aread()
        events = events_of(response)
        async for event in events:
            if event["choices"][0]["delta"].get("content"):
                assert event["choices"][0]["delta"]["content"] == "first"
                break
        assert fake.finished_at is None  # the fake is still held at the gate
        gate.set()
        return [event async for event in events]


# --------------------------------------------------------------------- http:// upstreams


@pytest.mark.usefixtures("proxied_loopback")
async def test_a_streamed_answer_goes_through_http_proxy_unbuffered(
    fake: FakeUpstream, relay_for, tinyproxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy_server = await tinyproxy()
    set_proxies(monkeypatch, HTTP_PROXY=proxy_server.url, NO_PROXY="127.0.0.1")
    gate = asyncio.Event()
    fake.script = [livepeer_chunk("first"), gate, *livepeer_events([" second"])]
    async with relay_for(livepeer_gateway_urls=[as_localhost(fake.base_url)]) as relay:
        rest = await first_token_then_rest(relay, fake, gate)
    assert StreamedAnswer(rest).text == " second"
    assert rest[-1] == DONE
    assert via_proxy(fake)
    assert fake.requests[-1].path == "/llm"


@pytest.mark.parametrize(
    ("no_proxy", "proxied"),
    [
        ("localhost", False),
        (".LOCALHOST", False),  # a leading dot and any case: the name itself too (as curl)
        ("*", False),
        ("localhost:{port}", False),
        ("localhost:{other}", True),  # another port: this entry is not for it
        ("example.com", True),
    ],
)
@pytest.mark.usefixtures("proxied_loopback")
async def test_no_proxy_sends_matching_upstreams_directly(
    fake: FakeUpstream,
    relay_for,
    tinyproxy,
    monkeypatch: pytest.MonkeyPatch,
    no_proxy: str,
    proxied: bool,
) -> None:
    proxy_server = await tinyproxy()
    port = int(fake.base_url.rsplit(":", 1)[1])
    entry = no_proxy.format(port=port, other=port + 1)
    set_proxies(monkeypatch, HTTP_PROXY=proxy_server.url, NO_PROXY=f"127.0.0.1, {entry}")
    fake.script = livepeer_events(["ok"])
    async with relay_for(livepeer_gateway_urls=[as_localhost(fake.base_url)]) as relay:
        async with relay.client.stream("POST", "/api/chat", json=user("x")) as response:
            assert (await read_answer(response)).text == "ok"
    assert via_proxy(fake) is proxied


@pytest.mark.usefixtures("proxied_loopback")
async def test_lower_case_variables_and_they_win_over_upper_case(
    fake: FakeUpstream, relay_for, tinyproxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the standard library, requests and httpx: http_proxy over HTTP_PROXY (here a
    proxy nobody listens on, which would fail the request)."""
    proxy_server = await tinyproxy()
    set_proxies(
        monkeypatch,
        HTTP_PROXY=f"http://127.0.0.1:{free_port()}",
        http_proxy=proxy_server.url,
        no_proxy="127.0.0.1",
    )
    fake.script = livepeer_events(["lower"])
    async with relay_for(livepeer_gateway_urls=[as_localhost(fake.base_url)]) as relay:
        async with relay.client.stream("POST", "/api/chat", json=user("x")) as response:
            assert (await read_answer(response)).text == "lower"
    assert via_proxy(fake)


async def test_loopback_upstreams_never_go_through_a_proxy(
    fake: FakeUpstream, relay_for, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The embedded model (127.0.0.1) keeps working on a machine whose HTTP_PROXY would
    not reach it, with a NO_PROXY that does not list it: localhost is reached directly
    (the proxy here is not even running)."""
    dead_proxy = f"http://127.0.0.1:{free_port()}"
    set_proxies(monkeypatch, HTTP_PROXY=dead_proxy, HTTPS_PROXY=dead_proxy, NO_PROXY="127.0.0.1")
    fake.script = livepeer_events(["direct"])
    async with relay_for(livepeer_gateway_urls=[as_localhost(fake.base_url)]) as relay:
        async with relay.client.stream("POST", "/api/chat", json=user("x")) as response:
            assert (await read_answer(response)).text == "direct"
    assert not via_proxy(fake)
    set_proxies(monkeypatch, HTTP_PROXY=dead_proxy, HTTPS_PROXY=dead_proxy)
    for url in ("http://127.0.0.1:8080/v1", "https://[::1]:8443/llm", "http://127.0.0.53/llm",
                "http://localhost/llm", "https://model.localhost/llm"):  # fmt: skip
        assert ConnectionPool(url, connect_timeout=1).proxy is None, url


@pytest.mark.usefixtures("proxied_loopback")
async def test_a_proxy_that_is_down_is_upstream_unreachable_at_once(
    fake: FakeUpstream, relay_for, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Refused, not waited for: the connect timeout here is far longer than the test's."""
    dead_proxy = f"http://127.0.0.1:{free_port()}"
    set_proxies(monkeypatch, HTTP_PROXY=dead_proxy, NO_PROXY="127.0.0.1")
    gateway = as_localhost(fake.base_url)
    async with relay_for(livepeer_gateway_urls=[gateway], connect_timeout=600) as relay:
        response = await relay.client.post("/api/chat", json=user("x"))
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "upstream_unreachable"
    assert f"the proxy {dead_proxy} (HTTP_PROXY) cannot be reached" in error["message"]
    assert f"{gateway}/llm" in error["message"]
    assert not fake.requests


# --------------------------------------------------------------------- credentials


@pytest.mark.parametrize("scheme", ["http", "https"])
@pytest.mark.usefixtures("proxied_loopback")
async def test_a_proxy_asking_for_credentials(
    fake: FakeUpstream,
    tls_fake: FakeUpstream,
    relay_for,
    tinyproxy,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    scheme: str,
) -> None:
    """Basic credentials in the proxy URL are sent to the proxy (a request header for
    http://, the CONNECT's for https://), never to the upstream; without them, or wrong,
    the proxy's 407 is a clear failure; they appear in no message and no log line."""
    caplog.set_level(logging.DEBUG)
    proxy_server = await tinyproxy(basic_auth=("relay", SECRET))
    upstream = fake if scheme == "http" else tls_fake
    variable = f"{scheme.upper()}_PROXY"
    gateway = as_localhost(upstream.base_url)
    upstream.script = livepeer_events(["authorized"])

    async def chat(proxy_url: str) -> tuple[int, str]:
        set_proxies(monkeypatch, **{variable: proxy_url, "NO_PROXY": "127.0.0.1"})
        async with relay_for(livepeer_gateway_urls=[gateway]) as relay:
            async with relay.client.stream("POST", "/api/chat", json=user("x")) as response:
                if response.status_code != 200:
                    return response.status_code, (await response.aread()).decode()
                return 200, (await read_answer(response)).text

    assert await chat(proxy_server.with_credentials("relay", SECRET)) == (200, "authorized")
    assert "Proxy-Authorization" not in upstream.requests[-1].headers
    if scheme == "https":
        assert proxy_server.connects() == [gateway.removeprefix("https://")]

    status, body = await chat(proxy_server.url)
    assert status == 502
    assert '"code":"upstream_unreachable"' in body.replace(" ", "")
    assert f"the proxy {proxy_server.url} refused" in body
    assert f"407 Proxy Authentication Required; check {variable}" in body

    status, body = await chat(proxy_server.with_credentials("relay", "wrong-" + SECRET))
    assert status == 502
    assert SECRET not in body
    # tinyproxy 1.11.1 answers wrong credentials with 401 (later versions: 407). Through a
    # tunnel that is still the proxy refusing; forwarded, it cannot be told from the
    # upstream's own 401, and is reported as the upstream's answer.
    if scheme == "https":
        assert f"the proxy {proxy_server.url} refused" in body
    assert len(upstream.requests) == 1
    assert caplog.records  # the relay did log (the proxy it goes through, the failures)
    assert SECRET not in caplog.text
    assert f"go through the proxy {proxy_server.url} ({variable})" in caplog.text


async def test_what_goes_to_the_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """http://: the request in absolute form, with the proxy's credentials (decoded); the
    upstream's own credentials as its Authorization. https://: a CONNECT with the proxy's
    credentials. The upstream's name is never looked up by chatrelay (the proxy does it):
    gw.example does not exist."""
    received: list[bytes] = []

    async def proxy_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        received.append(head)
        if head.startswith(b"CONNECT "):
            writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
        else:
            writer.write(OK_RESPONSE)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(proxy_server, "127.0.0.1", 0)
    proxy_url = f"http://us%40er:p%3Ass@127.0.0.1:{server.sockets[0].getsockname()[1]}"
    set_proxies(monkeypatch, HTTP_PROXY=proxy_url, HTTPS_PROXY=proxy_url)
    try:
        async with upstream_at("http://key:word@gw.example:8080") as upstream:
            assert await answer_of(upstream) == "Hi"
        async with upstream_at("https://gw.example") as upstream:
            with pytest.raises(UpstreamFailure) as refused:
                await answer_of(upstream)
    finally:
        server.close()
        await server.wait_closed()
    forwarded, connect = (head.decode() for head in received)
    assert forwarded.startswith("POST http://gw.example:8080/v1/chat/completions HTTP/1.1\r\n")
    assert "\r\nHost: gw.example:8080\r\n" in forwarded
    assert "\r\nProxy-Authorization: Basic dXNAZXI6cDpzcw==\r\n" in forwarded  # us@er:p:ss
    assert "\r\nAuthorization: Basic a2V5OndvcmQ=\r\n" in forwarded  # key:word, the upstream's
    assert connect.startswith("CONNECT gw.example:443 HTTP/1.1\r\nHost: gw.example:443\r\n")
    assert "\r\nProxy-Authorization: Basic dXNAZXI6cDpzcw==\r\n" in connect
    assert refused.value.code == "upstream_unreachable"
    assert (
        f"the proxy {proxy_url.replace('us%40er:p%3Ass@', '')} refused a tunnel to "
        "gw.example:443: 403 Forbidden; check HTTPS_PROXY"
    ) in refused.value.message


@pytest.mark.parametrize(
    ("answer", "words"),
    [
        (b"", "closed the connection instead of answering CONNECT"),
        (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", "answered CONNECT with something not HTTP"),
        (b"HTTP/1.1 200 OK\r\n\r\nHTTP/1.1 200 OK\r\n", "sent more than its answer"),
        (b"HTTP/1.1 502 Bad Gateway\r\n\r\n", "refused a tunnel to gw.example:443: 502"),
    ],
)
async def test_a_proxy_that_does_not_open_the_tunnel(
    monkeypatch: pytest.MonkeyPatch, answer: bytes, words: str
) -> None:
    async def proxy_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(proxy_server, "127.0.0.1", 0)
    set_proxies(monkeypatch, HTTPS_PROXY=f"127.0.0.1:{server.sockets[0].getsockname()[1]}")
    try:
        async with upstream_at("https://gw.example") as upstream:
            with pytest.raises(UpstreamFailure) as refused:
                await answer_of(upstream)
    finally:
        server.close()
        await server.wait_closed()
    assert refused.value.code == "upstream_unreachable"
    assert words in refused.value.message
    assert "(HTTPS_PROXY)" in refused.value.message or "check HTTPS_PROXY" in refused.value.message


def test_credentials_never_in_a_repr_or_a_message(monkeypatch: pytest.MonkeyPatch) -> None:
    set_proxies(monkeypatch, HTTPS_PROXY=f"http://us%40er:{SECRET}@proxy.example:3128")
    pool = ConnectionPool("https://gateway.example/llm", connect_timeout=1)
    assert pool.proxy is not None
    assert pool.proxy.authorization  # kept, to be sent
    shown = [repr(pool.proxy), str(pool.proxy), str(pool.proxy.refused(407, "a tunnel"))]
    shown.append(str(pool.proxy.unreachable(ConnectionRefusedError(111, "Connect call failed"))))
    for text in shown:
        assert SECRET not in text and "us%40er" not in text and "us@er" not in text
        assert "http://proxy.example:3128" in text


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (f"https://user:{SECRET}@proxy.example:443", ["HTTPS_PROXY", "over TLS", "http://"]),
        (f"socks5://user:{SECRET}@proxy.example:1080", ["HTTPS_PROXY", "socks5://"]),
    ],
)
def test_a_proxy_url_chatrelay_cannot_use_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, value: str, words: list[str]
) -> None:
    """Never a silent direct connection instead: the operator asked for a proxy."""
    set_proxies(monkeypatch, HTTPS_PROXY=value)
    with pytest.raises(ValueError) as refused:
        ConnectionPool("https://gateway.example/llm", connect_timeout=1)
    for word in words:
        assert word in str(refused.value)
    assert SECRET not in str(refused.value)


# --------------------------------------------------------------------- https:// upstreams


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for localhost and 127.0.0.1, made by the openssl command."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "1", "-subj", "/CN=localhost", "-addext",
         "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def server_tls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ssl.SSLContext:
    """A TLS server context whose certificate the relay trusts (SSL_CERT_FILE, as an
    operator with a private CA does)."""
    cert, key = self_signed(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    monkeypatch.setattr(http1, "_SSL_CONTEXT", None)  # made again, with the certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


class TLSFakeUpstream(FakeUpstream):
    """The fake upstream behind TLS, at https://127.0.0.1:port."""

    def __init__(self, tls: ssl.SSLContext) -> None:
        super().__init__()
        self._tls = tls

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/llm", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self._tls)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"https://127.0.0.1:{port}"
        return self.base_url


@pytest.fixture
async def tls_fake(server_tls: ssl.SSLContext) -> AsyncIterator[FakeUpstream]:
    upstream = TLSFakeUpstream(server_tls)
    await upstream.start()
    yield upstream
    await upstream.close()


@pytest.mark.usefixtures("proxied_loopback")
async def test_a_streamed_answer_through_a_connect_tunnel_unbuffered(
    tls_fake: FakeUpstream, relay_for, tinyproxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy_server = await tinyproxy()
    set_proxies(monkeypatch, HTTPS_PROXY=proxy_server.url, NO_PROXY="127.0.0.1")
    gate = asyncio.Event()
    tls_fake.script = [livepeer_chunk("first"), gate, *livepeer_events([" second"])]
    gateway = as_localhost(tls_fake.base_url)
    async with relay_for(livepeer_gateway_urls=[gateway]) as relay:
        rest = await first_token_then_rest(relay, tls_fake, gate)
    assert rest[-1] == DONE
    assert proxy_server.connects() == [gateway.removeprefix("https://")]
    # The tunnel is end to end: the proxy saw no request to add its Via to.
    assert "Via" not in tls_fake.requests[-1].headers


@pytest.mark.usefixtures("proxied_loopback")
async def test_answers_share_one_tunnel(
    server_tls: ssl.SSLContext, tinyproxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keep-alive through the proxy: one CONNECT, one TLS connection, several answers."""
    proxy_server = await tinyproxy()
    set_proxies(monkeypatch, HTTPS_PROXY=proxy_server.url)
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
                writer.write(OK_RESPONSE)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=server_tls)
    port = server.sockets[0].getsockname()[1]
    try:
        async with upstream_at(f"https://localhost:{port}") as upstream:
            answers = [await answer_of(upstream) for _ in range(3)]
    finally:
        server.close()
        await server.wait_closed()
    assert answers == ["Hi", "Hi", "Hi"]
    assert connections == 1
    assert proxy_server.connects() == [f"localhost:{port}"]


# --------------------------------------------------------------------- the rules


@pytest.mark.parametrize(
    ("host", "port", "no_proxy", "direct"),
    [
        ("gw.example.com", 443, "*", True),
        ("gw.example.com", 443, "example.com", True),
        ("example.com", 443, "example.com", True),
        ("example.com", 443, ".example.com", True),  # as curl (httpx: the names under only)
        ("gw.example.com", 443, "*.example.com", True),
        ("gw.example.com", 443, "EXAMPLE.COM.", True),
        ("badexample.com", 443, "example.com", False),
        ("example.com", 443, "gw.example.com", False),
        ("gw.example.com", 443, "example.com:443", True),
        ("gw.example.com", 8443, "example.com:443", False),
        ("gw.example.com", 443, " other.org , example.com ", True),
        ("gw.example.com", 443, "", False),
        ("10.1.2.3", 443, "10.0.0.0/8", True),
        ("10.1.2.3", 443, "10.0.0.0/8:443", True),
        ("11.1.2.3", 443, "10.0.0.0/8", False),
        ("10.1.2.3", 443, "10.1.2.3", True),
        ("10.1.2.3", 443, "10.1.2.4", False),
        ("fd00::1", 443, "fd00::/8", True),
        ("fd00::1", 443, "fd00:0::1", True),
        ("fd00::1", 443, "[fd00::1]:443", True),
        ("fd00::1", 80, "[fd00::1]:443", False),
        ("gw.internal", 443, "10.0.0.0/8", False),  # names are not resolved to be compared
        ("10.1.2.3", 443, "not a network/8,example.com:port", False),
    ],
)
def test_no_proxy_rules(host: str, port: int, no_proxy: str, direct: bool) -> None:
    assert no_proxy_matches(host, port, {"no": no_proxy}) is direct


def test_which_variable_for_which_upstream(monkeypatch: pytest.MonkeyPatch) -> None:
    set_proxies(
        monkeypatch,
        HTTP_PROXY="plain.example:3128",  # no scheme: http://, as curl and httpx take it
        HTTPS_PROXY="http://tls.example:8080",
        ALL_PROXY="http://all.example:1",  # not read (see docs/proxies.md)
    )
    plain, tls = proxy_for("http://gw.example/llm"), proxy_for("https://gw.example/llm")
    assert plain is not None and (plain.host, plain.port, plain.variable) == (
        "plain.example",
        3128,
        "HTTP_PROXY",
    )
    assert tls is not None and (tls.host, tls.port, tls.variable) == (
        "tls.example",
        8080,
        "HTTPS_PROXY",
    )
    set_proxies(monkeypatch, HTTP_PROXY="http://plain.example:3128")
    assert proxy_for("https://gw.example/llm") is None  # https:// goes by HTTPS_PROXY only
    # An empty lower-case variable turns the upper-case one off (the standard library's rule).
    set_proxies(monkeypatch, HTTPS_PROXY="http://tls.example:8080", https_proxy="")
    assert proxy_for("https://gw.example/llm") is None


@pytest.mark.parametrize("reserved", ["#", "/", "?"])
def test_a_password_that_breaks_the_url_is_never_shown(
    monkeypatch: pytest.MonkeyPatch, reserved: str
) -> None:
    """Unescaped, '#', '/' or '?' end the URL's authority inside the password: the error
    says how to write it, and shows none of the value."""
    set_proxies(monkeypatch, HTTPS_PROXY=f"http://alice:s3cr{reserved}{SECRET}@proxy.example:3128")
    with pytest.raises(ValueError) as refused:
        ConnectionPool("https://gateway.example/llm", connect_timeout=1)
    message = str(refused.value)
    assert "HTTPS_PROXY" in message and "percent-encode" in message
    assert SECRET not in message and "s3cr" not in message and "alice" not in message
