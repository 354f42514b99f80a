"""A fast mock OpenAI-compatible upstream for benchmarks: every token is its send time.

Each streamed chunk's ``delta.content`` is ``" " + str(time.time_ns())`` at the moment it is
written (then padding up to ``bytes`` when asked), so a client can compute per-chunk latency
through any relay that passes content on unchanged.

It is a bare asyncio protocol (HTTP/1.1, keep-alive, chunked responses) with one timer callback
per paced chunk, not a web framework with a task and a sleep per chunk: on a 2-core machine the
mock shares the CPU with the system under test, so the less it burns the more the figures say
about that system.

Run alone: ``python bench/mock_upstream.py --port 9100``.

What an answer looks like, in order of precedence:

- ``key=value`` words in the last message's content: ``chunks=64 pace=20 bytes=32``
  (``pace`` in ms, ``0`` = as fast as the client reads; ``bytes`` = content bytes per chunk)
  and ``kind=tool`` or ``kind=logprobs``: each chunk a tool-call fragment (the send time
  in ``arguments``) or text with its ``logprobs``, as long on the wire as the text chunk of
  the same ``bytes`` (bench/rich_chunks.py compares their cost).
  They pass unchanged through every relay, whatever it does with other fields.
- the body's ``max_tokens`` (number of chunks);
- the command line: ``--chunks``, ``--pace-ms``, ``--chunk-bytes``.

Without ``"stream": true`` it answers one ``chat.completion`` at once, as OpenAI does.
``--stall-probability 0.5`` makes that share of streamed answers stop at a random chunk and
stay open, silent.
Routes: ``POST /v1/chat/completions``, ``/chat/completions``, ``/llm`` (Livepeer path, same
chunks), ``GET /v1/models``, ``/models``, ``/health``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import re
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import orjson

HEAD = b'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":0,'
HEAD += b'"model":"bench","choices":[{"index":0,"delta":{"content":" '
TAIL = b'"},"finish_reason":null}]}\n\n'
STOP = (
    b'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":0,"model":"bench",'
    b'"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
)
DONE = b"data: [DONE]\n\n"
STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)
MODELS = orjson.dumps(
    {"object": "list", "data": [{"id": "bench", "object": "model", "created": 0, "owned_by": "x"}]}
)
DIRECTIVE = re.compile(r"\b(chunks|pace|bytes)=(\d+(?:\.\d+)?)")
KIND = re.compile(r"\bkind=(text|tool|logprobs)\b")
# Each kind's chunk around the send time and its padding: (head, tail).
KINDS = {
    "text": (HEAD, TAIL),
    "tool": (
        HEAD[: -len(b'{"content":" ')] + b'{"tool_calls":[{"index":0,"function":{"arguments":"',
        b'"}}]},"finish_reason":null}]}\n\n',
    ),
    "logprobs": (
        HEAD,
        b'"},"logprobs":{"content":[{"token":" x","logprob":-0.25,"bytes":[32,120],'
        b'"top_logprobs":[]}]},"finish_reason":null}]}\n\n',
    ),
}
MAX_HEADER = 64 * 1024
T = TypeVar("T")


@dataclass(slots=True)
class Defaults:
    chunks: int
    pace: float  # seconds
    chunk_bytes: int
    stall_probability: float


def _chunked(payload: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(payload), payload)


def _response(status: str, body: bytes, content_type: bytes = b"application/json") -> bytes:
    head = b"HTTP/1.1 %b\r\nContent-Type: %b\r\nContent-Length: %d\r\n\r\n"
    return head % (status.encode(), content_type, len(body)) + body


def answer_shape(body: dict[str, Any], defaults: Defaults) -> tuple[int, float, int, str]:
    """(chunks, pace in seconds, content bytes per chunk, kind) asked for by this request."""
    chunks = int(body.get("max_tokens") or defaults.chunks)
    pace, size, kind = defaults.pace, defaults.chunk_bytes, "text"
    messages = body.get("messages") or []
    content = messages[-1].get("content") if messages and isinstance(messages[-1], dict) else ""
    if isinstance(content, str):
        for key, value in DIRECTIVE.findall(content):
            if key == "chunks":
                chunks = int(float(value))
            elif key == "pace":
                pace = float(value) / 1000
            else:
                size = int(float(value))
        asked = KIND.search(content)
        kind = asked.group(1) if asked else kind
    return max(1, chunks), max(0.0, pace), max(0, size), kind


class MockConnection(asyncio.Protocol):
    """One client connection: requests one after another (keep-alive), no pipelining."""

    def __init__(self, defaults: Defaults) -> None:
        self.defaults = defaults
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.busy = False  # a streamed answer is being written
        self.writable: asyncio.Future[None] | None = None
        self.paused = False
        self.close_after = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.busy:
            self._next_request()

    def _next_request(self) -> None:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > MAX_HEADER:
                self._fail("431 Request Header Fields Too Large")
            return
        lines = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
        method, path, _ = [*lines[0].split(" "), "", ""][:3]
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            self._fail("411 Length Required")
            return
        length = int(headers.get("content-length") or 0)
        if len(self.buffer) < end + 4 + length:
            return  # the body is still on its way
        body = bytes(self.buffer[end + 4 : end + 4 + length])
        del self.buffer[: end + 4 + length]
        self.close_after = headers.get("connection", "").lower() == "close"
        self._handle(method, path.split("?", 1)[0], body)

    def _fail(self, status: str) -> None:
        if self.transport is not None:
            self.transport.write(_response(status, b"{}"))
            self.transport.close()

    def _write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def _done(self) -> None:
        self.busy = False
        if self.close_after and self.transport is not None:
            self.transport.close()
        elif self.buffer:
            self._next_request()

    def _handle(self, method: str, path: str, raw: bytes) -> None:
        if method == "GET" and path in ("/v1/models", "/models"):
            self._write(_response("200 OK", MODELS))
            return self._done()
        if method == "GET" and path in ("/health", "/"):
            self._write(_response("200 OK", b'{"status":"ok"}'))
            return self._done()
        if method != "POST" or path not in ("/v1/chat/completions", "/chat/completions", "/llm"):
            self._write(_response("404 Not Found", b'{"error":{"message":"not found"}}'))
            return self._done()
        try:
            body = orjson.loads(raw)
            assert isinstance(body, dict)
        except (orjson.JSONDecodeError, AssertionError):
            self._write(_response("400 Bad Request", b'{"error":{"message":"bad json"}}'))
            return self._done()
        chunks, pace, size, kind = answer_shape(body, self.defaults)
        if not body.get("stream"):  # as OpenAI: absent is false (LiteLLM leaves it out)
            self._write(_response("200 OK", _completion(chunks, size)))
            return self._done()
        self.busy = True
        self._write(STREAM_HEAD)
        stall = self.defaults.stall_probability
        stalls_at = random.randrange(1, max(2, chunks)) if random.random() < stall else None
        _Answer(self, chunks, pace, size, stalls_at, kind).step()


class _Answer:
    """One streamed answer: a chunk per timer callback (or per loop turn when unpaced)."""

    __slots__ = ("chunks", "conn", "head", "index", "loop", "pace", "padding", "stalls_at", "tail")

    def __init__(
        self,
        conn: MockConnection,
        chunks: int,
        pace: float,
        size: int,
        stalls_at: int | None,
        kind: str = "text",
    ) -> None:
        self.conn, self.chunks, self.pace, self.stalls_at = conn, chunks, pace, stalls_at
        self.head, self.tail = KINDS[kind]
        # " " + 19 digits are 20 bytes already; another kind's longer frame takes its extra
        # length out of the padding, so that every kind's chunk is as long as the text one.
        extra = len(self.head) + len(self.tail) - len(HEAD) - len(TAIL)
        self.padding = b"x" * max(0, size - 20 - extra)
        self.index = 0
        self.loop = asyncio.get_running_loop()

    def step(self) -> None:
        conn = self.conn
        if conn.transport is None or conn.transport.is_closing():
            return  # the client went away: the answer stops here
        if self.index == self.stalls_at:
            return  # a faulty orchestrator: silent, connection open, until the client leaves
        if conn.paused:  # the client reads slower than we write: wait for it
            self.loop.call_later(0.001, self.step)
            return
        if self.index < self.chunks:
            conn._write(_chunked(self.head + b"%d" % time.time_ns() + self.padding + self.tail))
            self.index += 1
            if self.pace:
                self.loop.call_later(self.pace, self.step)
            else:
                self.loop.call_soon(self.step)
            return
        usage = {"prompt_tokens": 1, "completion_tokens": self.chunks, "total_tokens": self.chunks}
        tail = STOP + b'data: {"choices":[],"usage":' + orjson.dumps(usage) + b"}\n\n" + DONE
        conn._write(_chunked(tail) + b"0\r\n\r\n")
        conn._done()


def _completion(chunks: int, size: int) -> bytes:
    text = " " + str(time.time_ns()) + "x" * max(0, size * chunks - 20)
    return orjson.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": "bench",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": chunks, "total_tokens": chunks + 1},
        }
    )


async def serve(port: int, defaults: Defaults) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: MockConnection(defaults), "127.0.0.1", port, backlog=4096, reuse_address=True
    )
    async with server:
        await server.serve_forever()


def loop_name() -> str:
    """The event loop run_fast uses: uvloop when installed (uvicorn[standard] brings it)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"uvloop {version('uvloop')}"
    except PackageNotFoundError:
        return "asyncio"


def run_fast(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on uvloop when it is installed."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--chunks", type=int, default=64)
    parser.add_argument("--pace-ms", type=float, default=20.0)
    parser.add_argument("--chunk-bytes", type=int, default=20)
    parser.add_argument("--stall-probability", type=float, default=0.0)
    args = parser.parse_args()
    defaults = Defaults(args.chunks, args.pace_ms / 1000, args.chunk_bytes, args.stall_probability)
    with contextlib.suppress(KeyboardInterrupt):
        run_fast(serve(args.port, defaults))


if __name__ == "__main__":
    main()
