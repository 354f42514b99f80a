"""A fast mock OpenAI-compatible upstream for benchmarks: every token is its send time.

Each streamed chunk's ``delta.content`` is ``time.time_ns()`` at the moment it is written (as a
decimal string, with a leading space), so a client can compute per-chunk latency through any
relay that passes content on unchanged.

Run alone: ``python bench/mock_upstream.py --port 9100``. The request body's ``max_tokens`` is
the number of chunks; ``--pace-ms 20`` paces them (0: as fast as possible);
``--stall-probability 0.5`` makes that share of the answers stall at a random chunk.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time

import orjson
from aiohttp import web

HEAD = b'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":0,'
HEAD += b'"model":"bench","choices":[{"index":0,"delta":{"content":" '
TAIL = b'"},"finish_reason":null}]}\n\n'
PACE = web.AppKey("pace", float)
STALL = web.AppKey("stall_probability", float)
STOP = (
    b'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":0,"model":"bench",'
    b'"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
)


async def completions(request: web.Request) -> web.StreamResponse:
    body = orjson.loads(await request.read())
    chunks = int(body.get("max_tokens", 64))
    pace: float = request.app[PACE]
    # A faulty orchestrator: with this probability the answer stops at a random chunk and
    # the connection stays open, silent, until the client gives up on it.
    stalls_at = (
        random.randrange(1, max(2, chunks)) if random.random() < request.app[STALL] else None
    )
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    for index in range(chunks):
        if index == stalls_at:
            await asyncio.sleep(3600)
        await response.write(HEAD + str(time.time_ns()).encode() + TAIL)
        if pace:
            await asyncio.sleep(pace)
    usage = {"prompt_tokens": 1, "completion_tokens": chunks, "total_tokens": chunks + 1}
    await response.write(STOP)
    await response.write(b'data: {"choices":[],"usage":' + orjson.dumps(usage) + b"}\n\n")
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pace-ms", type=float, default=20.0)
    parser.add_argument("--stall-probability", type=float, default=0.0)
    args = parser.parse_args()
    app = web.Application()
    app[PACE] = args.pace_ms / 1000
    app[STALL] = args.stall_probability
    app.router.add_post("/v1/chat/completions", completions)
    app.router.add_post("/llm", completions)  # the same chunks through a Livepeer-style path
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
