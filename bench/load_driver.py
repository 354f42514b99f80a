"""The load driver: C concurrent clients against one OpenAI-compatible URL, in its own process.

Each client keeps one HTTP/1.1 connection (as a browser or an SDK would) and sends its requests
one after another; the clients' first requests are spread evenly over ``--ramp-s`` so that
paced chunks of different streams do not all fall due at the same instant (``--arrival
spread``, the default: a relay in its steady state). Two other arrivals measure admission:

- ``--arrival burst``: the C clients connect first, then at one instant each writes its
  request (a class pressing Send together, a retry storm); with ``--requests-per-client N``
  that is N bursts, each once every answer of the last has ended. Time to first token counts
  from the burst's instant; per burst, the time until the last stream's first token and the
  admissions per second (answers whose first token arrived, per second of the burst).
- ``--arrival poisson --rate R --duration-s D``: new answers at R per second with exponential
  gaps for D seconds (open loop: an answer is asked when due, whatever the earlier ones are
  doing), each on an idle keep-alive connection or a new one. Time to first token counts from
  when the answer was due, so a driver or a server that falls behind cannot hide it.

For every content chunk it records when the mock sent it (the chunk's content is the mock's
``time.time_ns()``) and when it arrived here, so per-chunk latency, time to first token and
the gaps between chunks need no clock but this machine's.

It is a bare asyncio protocol with httptools' C parser (what uvicorn uses): at C=512 the driver
reads ~25,000 chunks a second on the same 2 cores as the system under test, so it must be cheap.
Content chunks are found by one regular expression over each complete block of events instead
of a JSON parse per event: every system relays the mock's digits unchanged.

    .venv/bin/python bench/load_driver.py --url http://127.0.0.1:8000/v1/chat/completions \\
        --concurrency 32 --chunks 64 --pace-ms 20 [--api-key cr_...] [--non-streaming]
        [--arrival burst | --arrival poisson --rate 50 --duration-s 5]

Prints one JSON object of figures on stdout. Only 127.0.0.1 is accepted as a target.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import resource
import statistics
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
    # When it was due (the burst's instant, the Poisson arrival): time to first token counts
    # from here. 0: from ``started`` (spread arrivals, whose clients are never late).
    due: int = 0
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

    def begin(self, request: bytes, exchange: Exchange) -> asyncio.Future[None]:
        """Write the request; the future is done when its answer has ended."""
        assert self.transport is not None
        self.exchange = exchange
        self.finished = asyncio.get_running_loop().create_future()
        exchange.started = time.time_ns()
        self.transport.write(request)
        return self.finished

    def after(self) -> None:
        """Once an answer has ended: close the connection if the server will not keep it."""
        if self.parser.should_keep_alive() is False and self.transport is not None:
            self.transport.close()
            self.closed = True

    async def send(self, request: bytes, exchange: Exchange) -> None:
        await self.begin(request, exchange)
        self.after()


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
    if args.arrival == "spread":
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
    else:
        timed_out = await arrivals(args, request, host, port, exchanges)
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
    if args.arrival != "spread":  # (a spread run's figures stay exactly what they were)
        figures.update(admission_figures(exchanges, args, streaming=streaming))
    return figures


async def connect(host: str, port: int, opened: list[Connection]) -> Connection:
    _, connection = await asyncio.get_running_loop().create_connection(Connection, host, port)
    opened.append(connection)
    return connection


async def arrivals(
    args: argparse.Namespace, request: bytes, host: str, port: int, exchanges: list[Exchange]
) -> bool:
    """Bursts or Poisson arrivals until done or the deadline; whether the deadline came."""
    opened: list[Connection] = []
    run = bursts if args.arrival == "burst" else poisson
    try:
        await asyncio.wait_for(run(args, request, host, port, exchanges, opened), args.deadline_s)
        return False
    except TimeoutError:
        return True
    finally:
        for connection in opened:
            if connection.transport is not None:
                connection.transport.close()


# Between connecting and the burst: time for the server to accept every connection, so the
# burst measures admission, not the accept queue.
SETTLE_S = 0.25


async def bursts(
    args: argparse.Namespace,
    request: bytes,
    host: str,
    port: int,
    exchanges: list[Exchange],
    opened: list[Connection],
) -> None:
    """C connections, then every request written in one go, in one turn of the loop: the
    burst's instant is just before the first write. The next burst once all have ended."""
    pool: list[Connection | None] = [None] * args.concurrency
    for number in range(args.requests_per_client):
        missing = [i for i, c in enumerate(pool) if c is None or c.closed]
        made = await asyncio.gather(
            *(connect(host, port, opened) for _ in missing), return_exceptions=True
        )
        failures = []
        for i, connection in zip(missing, made, strict=True):
            if isinstance(connection, BaseException):
                pool[i] = None
                failures.append(f"connect failed: {connection!r}")
            else:
                pool[i] = connection
        if missing:
            await asyncio.sleep(SETTLE_S)
        elif number:
            await asyncio.sleep(args.burst_pause_s)  # what the last burst left running ends
        due = time.time_ns()
        exchanges.extend(Exchange(due=due, error=why) for why in failures)
        answers = []
        for connection in pool:
            if connection is not None:
                exchange = Exchange(due=due)
                exchanges.append(exchange)
                answers.append(connection.begin(request, exchange))
        await asyncio.gather(*answers)
        for connection in pool:
            if connection is not None:
                connection.after()


async def poisson(
    args: argparse.Namespace,
    request: bytes,
    host: str,
    port: int,
    exchanges: list[Exchange],
    opened: list[Connection],
) -> None:
    """Answers asked at ``args.rate`` a second, exponential gaps (a fixed seed: the same
    arrivals at the same rate), for ``args.duration_s``; then until every one has ended."""
    gaps = random.Random(args.seed)
    idle: list[Connection] = []
    answers: list[asyncio.Future[None]] = []

    async def answer(due: int) -> None:
        exchange = Exchange(due=due)
        exchanges.append(exchange)
        while idle and idle[-1].closed:
            idle.pop()
        try:
            connection = idle.pop() if idle else await connect(host, port, opened)
        except OSError as exc:
            exchange.error = f"connect failed: {exc!r}"
            return
        await connection.send(request, exchange)
        if not connection.closed:
            idle.append(connection)

    due = time.time_ns()
    end = due + int(args.duration_s * 1e9)
    while True:
        due += int(gaps.expovariate(args.rate) * 1e9)
        if due >= end:
            break
        wait = (due - time.time_ns()) / 1e9
        if wait > 0:
            await asyncio.sleep(wait)
        answers.append(asyncio.ensure_future(answer(due)))
    await asyncio.gather(*answers)


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
            ttft.append(ex.received[0] - (ex.due or ex.started))
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


def first_token(ex: Exchange, *, streaming: bool) -> int | None:
    """When its first content arrived (a whole answer: when it ended), if it did."""
    if streaming:
        return ex.received[0] if ex.received else None
    return ex.ended if ex.complete and ex.status == 200 else None


def admission_figures(
    exchanges: list[Exchange], args: argparse.Namespace, *, streaming: bool
) -> dict[str, Any]:
    """What bursts and arrivals say about admission: per burst, the time until its last
    stream's first token and the admissions per second until then; streams that stalled once
    their first token had come; how late the driver itself wrote the requests."""
    stalled = sum(
        1
        for ex in exchanges
        if max((b - a for a, b in zip(ex.received, ex.received[1:], strict=False)), default=0)
        > STALL_NS
    )
    lag = [ex.started - ex.due for ex in exchanges if ex.started and ex.due]
    figures: dict[str, Any] = {
        "arrival": args.arrival,
        "stalled": stalled,
        "driver_lag_ms": {"p50": _ms(percentile(lag, 0.5)), "p99": _ms(percentile(lag, 0.99))},
    }
    if args.arrival == "poisson":
        admitted = sum(first_token(ex, streaming=streaming) is not None for ex in exchanges)
        # C of a Poisson run: the most answers open at once (from due to ended, or to the end).
        never = 2**63
        edges = sorted(
            [(ex.due, 1) for ex in exchanges] + [(ex.ended or never, -1) for ex in exchanges]
        )
        open_now = open_max = 0
        for _, step in edges:
            open_now += step
            open_max = max(open_max, open_now)
        figures.update(
            concurrency=open_max,
            rate=args.rate,
            duration_s=args.duration_s,
            seed=args.seed,
            offered_per_s=round(len(exchanges) / args.duration_s, 2),
            admitted=admitted,
        )
        return figures
    last_ms: list[float] = []
    per_s: list[float] = []
    admitted = 0
    for due in sorted({ex.due for ex in exchanges}):
        firsts = [first_token(ex, streaming=streaming) for ex in exchanges if ex.due == due]
        arrived = [t for t in firsts if t is not None]
        admitted += len(arrived)
        if arrived:
            last = max(arrived) - due
            last_ms.append(last / 1e6)
            per_s.append(len(arrived) / (last / 1e9) if last > 0 else 0.0)
    figures.update(
        bursts=len(last_ms),
        admitted=admitted,
        # the median burst, and the worst
        last_first_token_ms={
            "p50": round(statistics.median(last_ms), 3) if last_ms else None,
            "max": round(max(last_ms), 3) if last_ms else None,
        },
        admissions_per_s={
            "p50": round(statistics.median(per_s), 1) if per_s else None,
            "min": round(min(per_s), 1) if per_s else None,
        },
    )
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
    parser.add_argument(
        "--arrival",
        choices=("spread", "burst", "poisson"),
        default="spread",
        help="spread: first requests over --ramp-s (steady state); burst: all C at one instant "
        "(--requests-per-client bursts in a row); poisson: --rate answers a second for "
        "--duration-s",
    )
    parser.add_argument("--rate", type=float, default=None, help="poisson: answers a second")
    parser.add_argument("--duration-s", type=float, default=5.0, help="poisson: how long")
    parser.add_argument("--seed", type=int, default=1, help="poisson: the arrivals' seed")
    parser.add_argument(
        "--burst-pause-s", type=float, default=0.25, help="burst: pause between two bursts"
    )
    parser.add_argument("--deadline-s", type=float, default=120.0)
    parser.add_argument("--model", default="bench")
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--non-streaming", action="store_true")
    args = parser.parse_args(argv)
    loopback_only(args.url)
    if args.arrival == "poisson" and not (args.rate and args.rate > 0):
        parser.error("--arrival poisson needs --rate above 0")
    if args.ramp_s is None:
        args.ramp_s = 0.0 if args.non_streaming else args.chunks * args.pace_ms / 1000
    return args


def main() -> None:
    args = parse_args()
    figures = run_fast(drive(args))
    sys.stdout.write(orjson.dumps(figures).decode() + "\n")


if __name__ == "__main__":
    main()
