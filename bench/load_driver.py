"""The load driver: C concurrent clients against one OpenAI-compatible URL, in its own process.

Each client keeps one HTTP/1.1 connection (as a browser or an SDK would) and sends its requests
one after another; the clients' first requests are spread evenly over ``--ramp-s`` so that
paced chunks of different streams do not all fall due at the same instant. For every content
chunk it records when the mock sent it (the chunk's content is the mock's ``time.time_ns()``)
and when it arrived here, so per-chunk latency, time to first token and the gaps between
chunks need no clock but this machine's.

It is a bare asyncio protocol with httptools' C parser (what uvicorn uses): at C=512 the driver
reads ~25,000 chunks a second on the same 2 cores as the system under test, so it must be cheap.
Content chunks are found by one regular expression over each complete block of events instead
of a JSON parse per event: every system relays the mock's digits unchanged.

    .venv/bin/python bench/load_driver.py --url http://127.0.0.1:8000/v1/chat/completions \\
        --concurrency 32 --chunks 64 --pace-ms 20 [--api-key cr_...] [--non-streaming]

Prints one JSON object of figures on stdout. Only 127.0.0.1 is accepted as a target.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import resource
import sys
import time
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit

import httptools
import orjson

from mock_upstream import run_fast

# A gap longer than this between two chunks of one stream is a stall (what a reader notices).
STALL_NS = 100_000_000
# The mock's content: a space and time.time_ns(), in any JSON spacing a relay re-encodes with.
# (A Responses API stream carries it as a text delta's "delta".)
CONTENT_TIME = re.compile(rb'"(?:content|arguments|delta)":\s*"\s*(\d{16,20})')


def loopback_only(url: str) -> tuple[str, int, str]:
    """(host, port, path) of ``url``; refuses anything but plain http on 127.0.0.1."""
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname != "127.0.0.1":
        raise SystemExit(f"refused: {url!r} is not http://127.0.0.1 (load goes to loopback only)")
    return "127.0.0.1", parts.port or 80, parts.path or "/"


def percentile(values: list[int] | list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(len(ordered) * share))])


@dataclass(slots=True)
class Exchange:
    """One request and what came back."""

    started: int = 0  # time.time_ns() just before the request was written
    ended: int = 0
    status: int = 0
    complete: bool = False
    error: str = ""
    sent: list[int] = field(default_factory=list)  # per content chunk: the mock's send time
    received: list[int] = field(default_factory=list)  # and its arrival here
    pending: bytearray = field(default_factory=bytearray)  # body bytes of an unfinished event
    body_head: bytes = b""  # the start of a non-200 body, for the report

    def feed(self, data: bytes) -> None:
        now = time.time_ns()
        pending = self.pending
        pending += data
        end = pending.rfind(b"\n\n")
        if end < 0:
            return
        for match in CONTENT_TIME.finditer(pending, 0, end):
            self.sent.append(int(match.group(1)))
            self.received.append(now)
        del pending[: end + 2]


class Connection(asyncio.Protocol):
    """One keep-alive client connection, one exchange at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.exchange: Exchange | None = None
        self.finished: asyncio.Future[None] | None = None
        self.closed = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._end(f"bad HTTP: {exc}")
            if self.transport is not None:
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._end(f"connection closed ({exc})" if exc else "connection closed")

    # httptools callbacks
    def on_headers_complete(self) -> None:
        if self.exchange is not None:
            self.exchange.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        exchange = self.exchange
        if exchange is None:
            return
        if exchange.status == 200:
            exchange.feed(body)
        elif len(exchange.body_head) < 300:
            exchange.body_head += body

    def on_message_complete(self) -> None:
        if self.exchange is not None:
            self.exchange.complete = True
        self._end("")

    def _end(self, error: str) -> None:
        exchange, finished = self.exchange, self.finished
        if exchange is not None:
            exchange.ended = time.time_ns()
            if error and not exchange.complete:
                exchange.error = error
        self.exchange = None
        if finished is not None and not finished.done():
            finished.set_result(None)

    async def send(self, request: bytes, exchange: Exchange) -> None:
        assert self.transport is not None
        self.exchange = exchange
        self.finished = asyncio.get_running_loop().create_future()
        exchange.started = time.time_ns()
        self.transport.write(request)
        await self.finished
        if self.parser.should_keep_alive() is False and self.transport is not None:
            self.transport.close()
            self.closed = True


def build_request(
    host: str, port: int, path: str, body: dict[str, Any], api_key: str | None
) -> bytes:
    payload = orjson.dumps(body)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Accept: text/event-stream, application/json\r\nContent-Length: {len(payload)}\r\n"
    )
    if api_key:
        head += f"Authorization: Bearer {api_key}\r\n"
    return (head + "\r\n").encode() + payload


async def drive(args: argparse.Namespace) -> dict[str, Any]:
    host, port, path = loopback_only(args.url)
    loop = asyncio.get_running_loop()
    streaming = not args.non_streaming
    directives = f"chunks={args.chunks} pace={args.pace_ms:g} bytes={args.chunk_bytes}"
    directives += f" kind={args.kind}"
    body: dict[str, Any] = {"model": args.model, "stream": streaming}
    if args.api == "responses":  # the same answer asked of POST /v1/responses
        body.update(input=f"bench: {directives}", max_output_tokens=args.chunks)
        path = path.replace("/chat/completions", "/responses")
    else:
        body.update(
            messages=[{"role": "user", "content": f"bench: {directives}"}],
            max_tokens=args.chunks,
        )
    request = build_request(host, port, path, body, args.api_key)
    exchanges: list[Exchange] = []
    per_client = args.requests_per_client

    async def client(index: int) -> None:
        await asyncio.sleep(args.ramp_s * index / args.concurrency)
        connection: Connection | None = None
        for _ in range(per_client):
            if connection is None or connection.closed:
                _, connection = await loop.create_connection(Connection, host, port)
            exchange = Exchange()
            exchanges.append(exchange)
            await connection.send(request, exchange)
        if connection is not None and connection.transport is not None:
            connection.transport.close()

    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.time_ns()
    tasks = [asyncio.ensure_future(client(i)) for i in range(args.concurrency)]
    _, late = await asyncio.wait(tasks, timeout=args.deadline_s)
    timed_out = bool(late)
    for task in late:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            exchanges.append(Exchange(error=f"client failed: {exc!r}"))
    elapsed = (time.time_ns() - started) / 1e9
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    driver_cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (
        cpu_after.ru_stime - cpu_before.ru_stime
    )
    figures = summarise(exchanges, streaming=streaming, chunks=args.chunks)
    figures.update(
        url=args.url,
        mode="stream" if streaming else "non-stream",
        concurrency=args.concurrency,
        requests_per_client=per_client,
        chunks_per_answer=args.chunks,
        pace_ms=args.pace_ms,
        chunk_bytes=args.chunk_bytes,
        elapsed_s=round(elapsed, 3),
        timed_out=timed_out,
        driver_cpu_s=round(driver_cpu, 3),
    )
    active = figures["active_s"] or elapsed
    if streaming:
        figures["chunks_per_s"] = round(figures["chunks"] / active, 1) if active else None
    else:
        figures["requests_per_s"] = round(figures["completed"] / active, 1) if active else None
    return figures


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value / 1e6, 3)


def summarise(exchanges: list[Exchange], *, streaming: bool, chunks: int) -> dict[str, Any]:
    ttft: list[int] = []
    latency: list[int] = []
    gaps: list[int] = []
    completed = no_stall = received = 0
    errors: dict[str, int] = {}
    for ex in exchanges:
        ok = ex.complete and ex.status == 200 and not ex.error
        if streaming:
            ok = ok and len(ex.received) >= chunks
        else:
            ok = ok and bool(ex.received or ex.pending)
        if not ok:
            why = ex.error or (
                f"HTTP {ex.status}: {ex.body_head[:120]!r}"
                if ex.status != 200
                else f"incomplete: {len(ex.received)}/{chunks} chunks"
            )
            if not ex.complete and not ex.error and ex.started:
                why = f"unfinished at the deadline: {len(ex.received)}/{chunks} chunks"
            errors[why] = errors.get(why, 0) + 1
        received += len(ex.received)
        if streaming and ex.received:
            ttft.append(ex.received[0] - ex.started)
            latency.extend(r - s for r, s in zip(ex.received, ex.sent, strict=True))
            stream_gaps = [b - a for a, b in zip(ex.received, ex.received[1:], strict=False)]
            gaps.extend(stream_gaps)
            if ok and max(stream_gaps, default=0) <= STALL_NS:
                no_stall += 1
        elif not streaming and ok:
            latency.append(ex.ended - ex.started)
        completed += ok
    spans = [ex for ex in exchanges if ex.started]
    active = (
        (max(ex.ended or ex.started for ex in spans) - min(ex.started for ex in spans)) / 1e9
        if spans
        else 0.0
    )
    figures: dict[str, Any] = {
        "requests": len(exchanges),
        "completed": completed,
        "failed": len(exchanges) - completed,
        "errors": dict(sorted(errors.items(), key=lambda kv: -kv[1])[:5]),
        "active_s": round(active, 3),
    }
    if streaming:
        figures.update(
            no_stall=no_stall,
            chunks=received,
            ttft_ms={"p50": _ms(percentile(ttft, 0.5)), "p99": _ms(percentile(ttft, 0.99))},
            latency_ms={
                "p50": _ms(percentile(latency, 0.5)),
                "p99": _ms(percentile(latency, 0.99)),
            },
            gap_ms={
                "p50": _ms(percentile(gaps, 0.5)),
                "p99": _ms(percentile(gaps, 0.99)),
                "max": _ms(max(gaps, default=None)),
            },
        )
    else:
        figures["latency_ms"] = {
            "p50": _ms(percentile(latency, 0.5)),
            "p99": _ms(percentile(latency, 0.99)),
        }
    return figures


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--requests-per-client", type=int, default=2)
    parser.add_argument("--chunks", type=int, default=64)
    parser.add_argument("--pace-ms", type=float, default=20.0)
    parser.add_argument("--chunk-bytes", type=int, default=20)
    parser.add_argument("--kind", choices=("text", "tool", "logprobs"), default="text")
    parser.add_argument(
        "--api",
        choices=("chat", "responses"),
        default="chat",
        help="responses: ask the same answer of /v1/responses (the URL's chat path replaced)",
    )
    parser.add_argument(
        "--ramp-s",
        type=float,
        default=None,
        help="spread of the clients' first requests (default: one answer's "
        "duration, so that C streams are open at once in steady state)",
    )
    parser.add_argument("--deadline-s", type=float, default=120.0)
    parser.add_argument("--model", default="bench")
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--non-streaming", action="store_true")
    args = parser.parse_args(argv)
    loopback_only(args.url)
    if args.ramp_s is None:
        args.ramp_s = 0.0 if args.non_streaming else args.chunks * args.pace_ms / 1000
    return args


def main() -> None:
    args = parse_args()
    figures = run_fast(drive(args))
    sys.stdout.write(orjson.dumps(figures).decode() + "\n")


if __name__ == "__main__":
    main()
