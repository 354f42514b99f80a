"""aiohttp vs httpx as the client that reads an upstream SSE stream (chatrelay's hot path).

A mock OpenAI-compatible upstream (aiohttp.web, in a separate process, on 127.0.0.1 and a free
port) answers POST /v1/chat/completions with ``text/event-stream``: N ``chat.completion.chunk``
events (~150 bytes each), each stamped with the sender's ``time.time_ns()`` in field ``"t"``,
then ``data: [DONE]``. The measuring process opens C concurrent streams with one client
(``aiohttp.ClientSession`` or ``httpx.AsyncClient``, HTTP/1.1, pool sized for C), reads raw bytes
as they arrive, splits events on ``b"\\n\\n"``, parses each with orjson and records:

* latency per chunk: receive ``time_ns()`` - ``"t"`` (paced mode, default 20 ms between chunks);
* CPU per chunk: ``time.process_time()`` of the measuring process / chunks received, and
  throughput in chunks/s (unpaced mode, ``--pace 0``-style back-to-back sending).

Both libraries run on plain asyncio (no uvloop, to be fair), interleaved, for several rounds.
Every run uses a fresh client whose pool is warmed up first, so TCP connects are not measured.

Run: ``.venv/bin/python bench/http_client_choice.py`` (``--help`` for flags).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing as mp
import socket
import sys
import time
from dataclasses import dataclass, field
from importlib.metadata import version
from multiprocessing.connection import Connection

import aiohttp
import httptools
import httpx
import orjson
from aiohttp import web

HOST = "127.0.0.1"
PATH = "/v1/chat/completions"
DONE = b"[DONE]"


# --------------------------------------------------------------------------- mock upstream


def _chunk(i: int) -> bytes:
    """One SSE event, ~150 bytes, stamped with the send time in ns."""
    body = {
        "id": "chatcmpl-b",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "m",
        "choices": [{"index": 0, "delta": {"content": f"t{i:03d}"}, "finish_reason": None}],
        "t": time.time_ns(),
    }
    return b"data: " + orjson.dumps(body) + b"\n\n"


async def _completions(request: web.Request) -> web.StreamResponse:
    """Stream ``chunks`` events paced every ``pace_ms`` (read from the request's ``bench``)."""
    req = orjson.loads(await request.read())
    n: int = int(req["bench"]["chunks"])
    pace_s: float = float(req["bench"]["pace_ms"]) / 1000.0
    resp = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await resp.prepare(request)
    loop = asyncio.get_running_loop()
    start = loop.time()
    for i in range(n):
        if pace_s > 0:  # absolute schedule, so pacing does not drift under load
            delay = start + i * pace_s - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
        await resp.write(_chunk(i))
    await resp.write(b"data: [DONE]\n\n")
    await resp.write_eof()
    return resp


async def _serve(sock: socket.socket) -> None:
    app = web.Application()
    app.router.add_post(PATH, _completions)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock, backlog=1024).start()
    await asyncio.Event().wait()  # until terminated by the parent


def _server_main(conn: Connection) -> None:
    """Entry point of the upstream process: bind a free port on 127.0.0.1, report it, serve."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, 0))
    conn.send(sock.getsockname()[1])
    conn.close()
    asyncio.run(_serve(sock))


def start_upstream() -> tuple[mp.process.BaseProcess, int]:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_server_main, args=(child,), daemon=True, name="mock-upstream")
    proc.start()
    child.close()
    if not parent.poll(20):
        proc.terminate()
        raise RuntimeError("mock upstream did not start")
    port: int = parent.recv()
    for _ in range(200):  # wait until it accepts connections
        try:
            socket.create_connection((HOST, port), timeout=0.1).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.terminate()
    raise RuntimeError("mock upstream not accepting connections")


# --------------------------------------------------------------------------- client side


@dataclass
class Stats:
    """Per-run samples shared by all streams of a run (ns)."""

    latencies: list[int] = field(default_factory=list)  # chunk: receive - send
    first: list[int] = field(default_factory=list)  # per stream: first chunk - request issued


class SSECounter:
    """Splits raw bytes into SSE events; records per-chunk latency and time to first chunk (ns)."""

    __slots__ = ("buf", "done", "started", "stats")

    def __init__(self, stats: Stats) -> None:
        self.buf = b""
        self.stats = stats
        self.started = time.time_ns()  # the request is about to be issued
        self.done = False

    def feed(self, data: bytes) -> None:
        now = time.time_ns()
        *events, self.buf = (self.buf + data).split(b"\n\n")
        for ev in events:
            if not ev.startswith(b"data: "):
                continue
            payload = ev[6:]
            if payload == DONE:
                self.done = True
                continue
            if self.started:
                self.stats.first.append(now - self.started)
                self.started = 0
            self.stats.latencies.append(now - orjson.loads(payload)["t"])


def _body(chunks: int, pace_ms: float) -> bytes:
    return orjson.dumps(
        {
            "model": "m",
            "stream": True,
            "messages": [{"role": "user", "content": "hi"}],
            "bench": {"chunks": chunks, "pace_ms": pace_ms},
        }
    )


class AiohttpClient:
    name = "aiohttp"

    def __init__(self, url: str, concurrency: int) -> None:
        self.url = url
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency),
            timeout=aiohttp.ClientTimeout(total=None, sock_read=30),
        )

    async def stream(self, body: bytes, stats: Stats) -> bool:
        sse = SSECounter(stats)
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        async with self.session.post(self.url, data=body, headers=headers) as resp:
            resp.raise_for_status()
            async for data in resp.content.iter_any():
                sse.feed(data)
        return sse.done

    async def aclose(self) -> None:
        await self.session.close()


class HttpxClient:
    name = "httpx"

    def __init__(self, url: str, concurrency: int) -> None:
        self.url = url
        self.client = httpx.AsyncClient(
            http1=True,
            http2=False,
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
            timeout=httpx.Timeout(30.0),
        )

    async def stream(self, body: bytes, stats: Stats) -> bool:
        sse = SSECounter(stats)
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        async with self.client.stream("POST", self.url, content=body, headers=headers) as resp:
            resp.raise_for_status()
            async for data in resp.aiter_raw():
                sse.feed(data)
        return sse.done

    async def aclose(self) -> None:
        await self.client.aclose()


class _ProtocolStream(asyncio.Protocol):
    """One keep-alive connection read by httptools' parser, body bytes pushed to the counter
    as they arrive (no reading task woken per chunk): the floor for a Python client."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.sink: SSECounter | None = None
        self.ended: asyncio.Future[bool] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_body(self, body: bytes) -> None:
        assert self.sink is not None
        self.sink.feed(body)

    def on_message_complete(self) -> None:
        assert self.ended is not None and self.sink is not None
        self.ended.set_result(self.sink.done)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.ended is not None and not self.ended.done():
            self.ended.set_exception(exc or ConnectionError("closed"))


class ProtocolClient:
    name = "protocol"

    def __init__(self, url: str, concurrency: int) -> None:
        parts = url.split("/", 3)
        self.host, port = parts[2].split(":")
        self.port, self.path = int(port), "/" + parts[3]
        self.idle: list[_ProtocolStream] = []

    async def stream(self, body: bytes, stats: Stats) -> bool:
        loop = asyncio.get_running_loop()
        if self.idle:
            conn = self.idle.pop()
        else:
            _, conn = await loop.create_connection(_ProtocolStream, self.host, self.port)
        conn.sink, conn.ended = SSECounter(stats), loop.create_future()
        head = (
            f"POST {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            "Content-Type: application/json\r\nAccept: text/event-stream\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        assert conn.transport is not None
        conn.transport.write(head + body)
        done = await conn.ended
        self.idle.append(conn)
        return done

    async def aclose(self) -> None:
        for conn in self.idle:
            if conn.transport is not None:
                conn.transport.close()


Client = AiohttpClient | HttpxClient | ProtocolClient
CLIENTS: dict[str, type[AiohttpClient] | type[HttpxClient] | type[ProtocolClient]] = {
    "aiohttp": AiohttpClient,
    "httpx": HttpxClient,
    "protocol": ProtocolClient,
}


@dataclass
class Result:
    library: str
    mode: str
    round: str
    streams_ok: int = 0
    streams: int = 0
    stats: Stats = field(default_factory=lambda: Stats())
    cpu_s: float = 0.0
    wall_s: float = 0.0

    @property
    def chunks(self) -> int:
        return len(self.stats.latencies)


async def run_once(
    lib: str, url: str, mode: str, rnd: int, concurrency: int, chunks: int, pace_ms: float
) -> Result:
    client: Client = CLIENTS[lib](url, concurrency)
    try:
        # Warm-up: open and pool `concurrency` keep-alive connections (not measured).
        warm = Stats()
        await asyncio.gather(*(client.stream(_body(1, 0), warm) for _ in range(concurrency)))
        gc.collect()
        body = _body(chunks, pace_ms)
        stats = Stats()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        oks = await asyncio.wait_for(
            asyncio.gather(*(client.stream(body, stats) for _ in range(concurrency))),
            timeout=60,
        )
        cpu1, wall1 = time.process_time(), time.perf_counter()
    finally:
        await client.aclose()
    return Result(lib, mode, str(rnd), sum(oks), concurrency, stats, cpu1 - cpu0, wall1 - wall0)


# --------------------------------------------------------------------------- report


def pct(sorted_ns: list[int], q: float) -> float:
    """Nearest-rank percentile, in ms."""
    if not sorted_ns:
        return float("nan")
    k = min(len(sorted_ns) - 1, max(0, round(q / 100 * len(sorted_ns)) - 1))
    return sorted_ns[k] / 1e6


def merge(results: list[Result]) -> Result:
    first = results[0]
    merged = Result(first.library, first.mode, "all")
    for r in results:
        merged.streams_ok += r.streams_ok
        merged.streams += r.streams
        merged.stats.latencies.extend(r.stats.latencies)
        merged.stats.first.extend(r.stats.first)
        merged.cpu_s += r.cpu_s
        merged.wall_s += r.wall_s
    return merged


def print_table(results: list[Result]) -> None:
    cols = (
        "library",
        "mode",
        "round",
        "chunks",
        "p50 ms",
        "p99 ms",
        "1st p50",
        "1st p99",
        "CPU us/chunk",
        "chunks/s",
    )
    fmt = "{:<8} {:<8} {:>5} {:>7} {:>7} {:>7} {:>7} {:>7} {:>12} {:>9}"
    print(fmt.format(*cols))
    print("-" * 88)
    for r in results:
        lat, first = sorted(r.stats.latencies), sorted(r.stats.first)
        n = max(r.chunks, 1)
        print(
            fmt.format(
                r.library,
                r.mode,
                r.round,
                r.chunks,
                f"{pct(lat, 50):.2f}",
                f"{pct(lat, 99):.2f}",
                f"{pct(first, 50):.1f}",
                f"{pct(first, 99):.1f}",
                f"{r.cpu_s / n * 1e6:.1f}",
                f"{r.chunks / r.wall_s:,.0f}" if r.wall_s else "-",
            )
            + ("" if r.streams_ok == r.streams else f"  ({r.streams - r.streams_ok} incomplete)")
        )


async def main_async(args: argparse.Namespace, port: int) -> list[Result]:
    loop = asyncio.get_running_loop()
    print(f"event loop: {type(loop).__module__}.{type(loop).__name__} (plain asyncio, both)")
    url = f"http://{HOST}:{port}{PATH}"
    # --pace 0 means no pacing: only the unpaced mode runs.
    modes = ([("paced", args.pace)] if args.pace > 0 else []) + [("unpaced", 0.0)]
    results: list[Result] = []
    for rnd in range(1, args.rounds + 1):
        for mode, pace in modes:
            chunks = args.chunks if mode == "paced" else args.unpaced_chunks
            for lib in args.libs:
                r = await run_once(lib, url, mode, rnd, args.concurrency, chunks, pace)
                results.append(r)
                print(
                    f"  round {rnd} {lib:<7} {mode:<7} {r.chunks} chunks in {r.wall_s:.2f}s",
                    file=sys.stderr,
                )
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--host", default=HOST, help="must be 127.0.0.1 (anything else is refused)")
    p.add_argument("--concurrency", "-c", type=int, default=100, help="concurrent streams")
    p.add_argument("--chunks", "-n", type=int, default=64, help="chunks per stream (paced)")
    p.add_argument(
        "--unpaced-chunks",
        type=int,
        default=64,
        help="chunks per stream in the unpaced (throughput/CPU) mode",
    )
    p.add_argument(
        "--pace", type=float, default=20.0, help="ms between chunks in paced mode (0: no pacing)"
    )
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds")
    p.add_argument("--libs", nargs="+", choices=list(CLIENTS), default=list(CLIENTS))
    args = p.parse_args(argv)
    if args.host != HOST:
        p.error(f"refusing host {args.host!r}: this benchmark only talks to {HOST}")
    if args.pace < 0:
        p.error("--pace must be >= 0")
    if min(args.concurrency, args.chunks, args.unpaced_chunks, args.rounds) < 1:
        p.error("--concurrency, --chunks, --unpaced-chunks and --rounds must be >= 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    print(
        f"python {sys.version.split()[0]}  aiohttp {version('aiohttp')}  "
        f"httpx {version('httpx')}  httpcore {version('httpcore')}  orjson {version('orjson')}"
    )
    print(
        f"concurrency={args.concurrency} chunks={args.chunks} pace={args.pace}ms "
        f"unpaced_chunks={args.unpaced_chunks} rounds={args.rounds} "
        f"event size={len(_chunk(0))}B host={HOST}"
    )
    proc, port = start_upstream()
    try:
        results = asyncio.run(main_async(args, port))
    finally:
        proc.terminate()
        proc.join(5)
    print()
    print_table(results)
    print()
    summary = [
        merge([r for r in results if r.library == lib and r.mode == mode])
        for mode in dict.fromkeys(r.mode for r in results)
        for lib in args.libs
    ]
    print_table(summary)
    print(
        "\np50/p99: chunk send->receive latency. 1st p50/p99: request issued -> first chunk "
        "received (ms).\npaced rows: read the latencies; unpaced rows: read CPU us/chunk and "
        "chunks/s (unpaced latency is queueing;\nchunks/s may be capped by the mock upstream). "
        "CPU us/chunk includes per-request cost (pool, headers)\namortised over --chunks; raise "
        "--unpaced-chunks to isolate the per-chunk read cost."
    )


if __name__ == "__main__":
    main()
