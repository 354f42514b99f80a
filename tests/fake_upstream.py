"""A fake upstream LLM endpoint on a real socket, speaking Livepeer's or OpenAI's wire format.

It is the one mock in the suite (the Livepeer network cannot run here), so it reproduces the
wire byte for byte, quirks included: ``finish_reason: ""``, usage in every chunk, no ``[DONE]``
through a gateway, ``data: {"error": ...}`` after a 200, the old ``{"chunk": ...}`` format,
events split across TCP writes, stalls, dropped connections and error statuses, a cold model's
wait before it answers, a gateway's clean cut (the body just ends), the runner's "stop" when
max_tokens ran out.

Usage::

    fake = FakeUpstream()
    base_url = await fake.start()
    fake.script = [*livepeer_events(["Hel", "lo"])]       # bytes, pauses, gates, DROP
    fake.responses = [FakeResponse(cold=2.0, tokens=["a", "b"])]  # a cold model; max_tokens
    ...
    fake.requests[-1].json                                 # what the relay sent
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

MODEL = "meta-llama/Meta-Llama-3.1-8B-Instruct"


class Drop:
    """Script step: cut the TCP connection without finishing the body."""


DROP = Drop()
Step = bytes | float | asyncio.Event | Drop


@dataclass
class ReceivedRequest:
    path: str
    headers: dict[str, str]
    json: Any
    peer: tuple[str, int] | None = None  # the relay's end of the connection it came on


@dataclass
class FakeResponse:
    status: int = 200
    script: list[Step] = field(default_factory=list)
    body: bytes = b""  # for non-200 answers
    headers: dict[str, str] = field(default_factory=dict)
    # Awaited before the status line is sent: a cold model holding its answer.
    hold_headers: asyncio.Event | None = None
    content_type: str = "text/event-stream"
    # A cold model: seconds before the status line (the gateway holds the request meanwhile).
    cold: float = 0.0
    # Generated like the ai-runner does: at most the request's max_tokens of these tokens,
    # then a chunk with finish_reason "stop", even when max_tokens ran out (never "length").
    tokens: list[str] | None = None


def livepeer_chunk(content: str, finish_reason: str = "", completion_tokens: int = 1) -> bytes:
    """One chunk exactly as a go-livepeer gateway sends it (key order as Go marshals it)."""
    obj = {
        "choices": [
            {
                "delta": {"content": content, "role": "assistant"},
                "finish_reason": finish_reason,
                "index": 0,
            }
        ],
        "created": 1736800000,
        "id": "chatcmpl-3f1c2a8e-5d2b-4a51-9e54-2b8a0d5c9f10",
        "model": MODEL,
        "usage": {
            "completion_tokens": completion_tokens,
            "prompt_tokens": 42,
            "total_tokens": 42 + completion_tokens,
        },
    }
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def livepeer_cut(tokens: list[str]) -> list[Step]:
    """A go-livepeer gateway whose read from the orchestrator failed mid-answer: it logs the
    error and ends the body cleanly, with no finish chunk, no [DONE], no error event."""
    return livepeer_events(tokens, stop_chunk=False)


def livepeer_events(tokens: list[str], *, stop_chunk: bool = True) -> list[Step]:
    steps: list[Step] = [livepeer_chunk(t, completion_tokens=i + 1) for i, t in enumerate(tokens)]
    if stop_chunk:
        steps.append(livepeer_chunk("", "stop", completion_tokens=len(tokens)))
    return steps


def openai_chunk(content: str | None, finish_reason: str | None = None) -> bytes:
    delta: dict[str, Any] = {} if content is None else {"content": content}
    obj = {
        "id": "chatcmpl-abc123",
        "object": "chat.completion.chunk",
        "created": 1736800000,
        "model": "gpt-test",
        "system_fingerprint": "fp_test",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def openai_events(tokens: list[str], *, usage: tuple[int, int] | None = (10, 0)) -> list[Step]:
    steps: list[Step] = [
        b'data: {"id":"chatcmpl-abc123","object":"chat.completion.chunk","created":1736800000,'
        b'"model":"gpt-test","choices":[{"index":0,"delta":{"role":"assistant","content":""},'
        b'"logprobs":null,"finish_reason":null}]}\n\n'
    ]
    steps += [openai_chunk(t) for t in tokens]
    steps.append(openai_chunk(None, "stop"))
    if usage is not None:
        prompt, _ = usage
        steps.append(
            b'data: {"id":"chatcmpl-abc123","object":"chat.completion.chunk","created":1736800000,'
            b'"model":"gpt-test","choices":[],"usage":{"prompt_tokens":'
            + str(prompt).encode()
            + b',"completion_tokens":'
            + str(len(tokens)).encode()
            + b',"total_tokens":'
            + str(prompt + len(tokens)).encode()
            + b"}}\n\n"
        )
    steps.append(b"data: [DONE]\n\n")
    return steps


def split_every(steps: list[Step], size: int) -> list[Step]:
    """Cut every byte step into pieces of ``size`` bytes, each its own TCP write."""
    out: list[Step] = []
    for step in steps:
        if isinstance(step, bytes):
            out += [step[i : i + size] for i in range(0, len(step), size)] or [b""]
        else:
            out.append(step)
    return out


def paced(steps: list[Step], seconds: float) -> list[Step]:
    out: list[Step] = []
    for step in steps:
        out += [step, seconds]
    return out


class FakeUpstream:
    """An aiohttp server whose answers follow a script of writes, pauses, gates and drops."""

    def __init__(self) -> None:
        self.responses: list[FakeResponse] = []  # consumed in order; the last one repeats
        self.requests: list[ReceivedRequest] = []
        self.active = 0  # handlers still writing a body
        self.disconnected_at: float | None = None  # when the relay hung up mid-body
        self.finished_at: float | None = None
        self.first_write_done = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    @property
    def script(self) -> list[Step]:
        return self.responses[-1].script

    @script.setter
    def script(self, steps: list[Step]) -> None:
        self.responses = [FakeResponse(script=steps)]

    def fail(self, status: int, body: bytes | dict[str, Any]) -> None:
        raw = body if isinstance(body, bytes) else orjson.dumps(body)
        self.responses = [FakeResponse(status=status, body=raw, content_type="application/json")]

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/llm", self._handle)
        app.router.add_post("/llm/", self._handle)
        app.router.add_post("/v1/chat/completions", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}"
        return self.base_url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        peer = request.transport.get_extra_info("peername") if request.transport else None
        body = orjson.loads(raw) if raw else None
        self.requests.append(ReceivedRequest(request.path, dict(request.headers), body, peer))
        answer = self.responses.pop(0) if len(self.responses) > 1 else self.responses[-1]
        if answer.hold_headers is not None:
            self.active += 1
            try:
                await answer.hold_headers.wait()
            except asyncio.CancelledError:
                self.disconnected_at = time.monotonic()
                raise
            finally:
                self.active -= 1
        if answer.cold:
            await asyncio.sleep(answer.cold)
        if answer.status != 200:
            return web.Response(
                status=answer.status,
                body=answer.body,
                content_type=answer.content_type,
                headers=answer.headers,
            )
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        self.active += 1
        try:
            await response.prepare(request)
            script = answer.script
            if answer.tokens is not None:
                limit = int(body.get("max_tokens") or len(answer.tokens))
                script = livepeer_events(answer.tokens[:limit])
            for step in script:
                if isinstance(step, bytes):
                    await response.write(step)
                    self.first_write_done.set()
                elif isinstance(step, float | int):
                    await asyncio.sleep(step)
                elif isinstance(step, asyncio.Event):
                    await step.wait()
                elif isinstance(step, Drop):
                    assert request.transport is not None
                    request.transport.abort()
                    return response
            await response.write_eof()
            self.finished_at = time.monotonic()
        except (ConnectionResetError, asyncio.CancelledError):
            self.disconnected_at = time.monotonic()
            raise
        finally:
            self.active -= 1
        return response


def vllm_chunk(delta: dict[str, Any], finish_reason: str | None = None, **choice: Any) -> bytes:
    """One chunk as vLLM's OpenAI server sends it (``logprobs`` in every choice)."""
    obj = {
        "id": "chatcmpl-vllm-7f3a",
        "object": "chat.completion.chunk",
        "created": 1736800000,
        "model": "gpt-test",
        "choices": [
            {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason, **choice}
        ],
    }
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def vllm_tool_call_events(
    calls: list[tuple[str, str, list[str]]], *, usage: tuple[int, int] = (30, 12)
) -> list[Step]:
    """Parallel tool calls streamed the way vLLM does: a role chunk, then per call a first
    delta with ``index``, ``id``, ``type`` and ``function.name`` only, then its arguments in
    fragments (``index`` and ``function.arguments`` only); ``finish_reason: "tool_calls"``,
    the usage chunk, ``[DONE]``. ``calls``: (id, name, argument fragments)."""
    steps: list[Step] = [vllm_chunk({"role": "assistant", "content": ""})]
    for index, (call_id, name, fragments) in enumerate(calls):
        first = {"index": index, "id": call_id, "type": "function", "function": {"name": name}}
        steps.append(vllm_chunk({"tool_calls": [first]}))
        for fragment in fragments:
            piece = {"index": index, "function": {"arguments": fragment}}
            steps.append(vllm_chunk({"tool_calls": [piece]}))
    steps.append(vllm_chunk({}, "tool_calls"))
    prompt, completion = usage
    steps.append(
        b'data: {"id":"chatcmpl-vllm-7f3a","object":"chat.completion.chunk","created":1736800000,'
        b'"model":"gpt-test","choices":[],"usage":{"prompt_tokens":%d,"completion_tokens":%d,'
        b'"total_tokens":%d}}\n\n' % (prompt, completion, prompt + completion)
    )
    steps.append(b"data: [DONE]\n\n")
    return steps
