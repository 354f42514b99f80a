"""How each kind of upstream is asked and how its answers are read.

Both dialects speak "almost OpenAI"; the differences (livepeer-wire.md) live here and nowhere
else: the URL, which fields are sent, ``finish_reason: ""``, usage in every chunk, no ``[DONE]``,
``data: {"error": ...}`` inside a 200 stream, the old ``{"chunk": ...}`` format, error bodies.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from chatrelay.text import message_text
from chatrelay.upstreams.chunk import UpstreamChunk, Usage

# A message in OpenAI's shape: role, content (a string, content parts, or None) and whatever
# else it carries (tool_calls, tool_call_id, name, refusal, reasoning_content, ...).
UpstreamMessage = dict[str, Any]

# Request fields a Livepeer runner takes (go-livepeer ``LLMRequest``): chatrelay sends these
# itself; the rest of a client's request it cannot carry there.
LIVEPEER_FIELDS = ("model", "messages", "max_tokens", "temperature", "top_p", "top_k", "stream")


@dataclass(slots=True, frozen=True)
class GenerationParams:
    max_tokens: int
    temperature: float | None = None
    top_p: float | None = None
    # Sent only when the client gave it: OpenAI itself refuses the field.
    top_k: int | None = None
    # The client's other request fields (tools, response_format, stop, seed, logprobs, ...),
    # sent on as they came to upstreams that take them (the OpenAI dialect).
    extra: Mapping[str, Any] | None = None
    # The name the client gave the budget: OpenAI's newer ``max_completion_tokens`` is sent
    # as such (reasoning models refuse ``max_tokens``).
    max_tokens_field: str = "max_tokens"


class Dialect(Protocol):
    """A body that ends without a finish reason or end marker is a cut answer, whatever the
    dialect: an OpenAI server sends ``[DONE]``, and Livepeer's ai-runner always ends with a
    chunk whose ``finish_reason`` is non-empty (a go-livepeer gateway whose orchestrator
    connection breaks just ends the body cleanly: that is the cut, never the end)."""

    name: str

    def url(self, base_url: str) -> str: ...

    def body(
        self, model: str, messages: list[UpstreamMessage], params: GenerationParams
    ) -> bytes: ...

    def parse_event(self, data: str) -> UpstreamChunk: ...


def _usage(raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    return Usage(int(raw.get("prompt_tokens") or 0), int(raw.get("completion_tokens") or 0))


def _error_text(raw: Any) -> str:
    if isinstance(raw, dict):
        return str(raw.get("message") or raw.get("msg") or orjson.dumps(raw).decode())
    return str(raw)


class MalformedChunk(ValueError):
    """An event that is JSON but not a chunk (``choices`` a string, a delta that is a list,
    content that is a number, ...): skipped like a line that is not JSON."""


def parse_openai_chunk(obj: dict[str, Any]) -> UpstreamChunk:
    """Read an OpenAI-shaped chunk; lenient where Livepeer differs (finish_reason "" = not done).

    A delta that carries more than text (``tool_calls``, ``reasoning_content``, ``refusal``,
    any field chatrelay does not know) or a choice with ``logprobs`` is kept whole in
    ``chunk.delta``: it is relayed as it came. Plain text, the common case, is read with two
    dict lookups and a length check (this runs for every token).

    A chunk of any other shape raises MalformedChunk (a ValueError). Checked without a type
    test per field on the well-formed path: a wrong container type fails the lookups
    themselves, caught here; only values that would pass them (content, finish_reason) are
    tested, and only when they are not what a plain chunk has."""
    if "error" in obj:
        return UpstreamChunk(error=_error_text(obj["error"]))
    try:
        chunk = UpstreamChunk(usage=_usage(obj.get("usage")))
        choices = obj.get("choices")
        if choices:
            choice = choices[0]
            delta = choice.get("delta") or choice.get("message") or {}
            content = delta.get("content")
            if isinstance(content, str):
                chunk.content = content
            elif content is not None:
                raise MalformedChunk(f"content is {type(content).__name__}, not text")
            # More than {"content"} or Livepeer's {"content", "role"}: look closer.
            if (
                len(delta) > 2
                or (len(delta) == 2 and "role" not in delta)
                or "content" not in delta
            ):
                rich = _relayed(delta)
                if len(rich) > ("content" in rich):  # more than text
                    _check_calls(rich)
                    chunk.delta = rich
            logprobs = choice.get("logprobs")
            if logprobs is not None:
                chunk.logprobs = logprobs
                if chunk.delta is None:
                    chunk.delta = _relayed(delta)
            finish_reason = choice.get("finish_reason")
            if finish_reason:  # None or "" (Livepeer) while the answer goes on
                if not isinstance(finish_reason, str):
                    raise MalformedChunk("finish_reason is not text")
                chunk.finish_reason = finish_reason
    except (TypeError, AttributeError, KeyError, IndexError) as exc:
        raise MalformedChunk(f"not a chunk's shape ({exc})") from None
    return chunk


def _check_calls(delta: dict[str, Any]) -> None:
    """Tool calls as clients' SDKs read them (a list of objects; the legacy call an object):
    anything else would break a client that is relayed it. (A loop, not ``all()`` over a
    generator: this runs for every fragment of a tool call.)"""
    calls = delta.get("tool_calls")
    if calls is not None:
        if type(calls) is not list:
            raise MalformedChunk("tool_calls is not a list")
        for call in calls:
            if type(call) is not dict:
                raise MalformedChunk("tool_calls holds something not an object")
    if "function_call" in delta and type(delta["function_call"]) is not dict:
        raise MalformedChunk("function_call is not an object")


def _relayed(delta: dict[str, Any]) -> dict[str, Any]:
    """A delta as it is relayed: without its role (chatrelay's own first chunk says it) and
    without fields that say nothing (null, an empty list or object: OpenRouter sends
    ``reasoning_details: []`` with every token). Most are that already: not copied."""
    if "role" not in delta and all(delta.values()):  # nothing empty: most are so
        return delta
    return {k: v for k, v in delta.items() if k != "role" and v is not None and v != [] and v != {}}


def add_sampling(body: dict[str, Any], params: GenerationParams) -> None:
    """The sampling fields the client gave (and only those) into an upstream's body."""
    if params.temperature is not None:
        body["temperature"] = params.temperature
    if params.top_p is not None:
        body["top_p"] = params.top_p
    if params.top_k is not None:
        body["top_k"] = params.top_k


def _request_body(body: dict[str, Any]) -> bytes:
    """The JSON body, right-sized: orjson's result keeps a large buffer, and a request body
    lives as long as its stream, thousands at once (docs/performance.md#request-body)."""
    return bytes(memoryview(orjson.dumps(body)))


def _load(data: str) -> dict[str, Any]:
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"upstream sent an event that is not JSON: {data[:200]!r}") from exc
    if not isinstance(obj, dict):
        raise ValueError(f"upstream sent an event that is not a JSON object: {data[:200]!r}")
    return obj


class OpenAIDialect:
    """Any OpenAI-compatible server: OpenAI, vLLM, llama.cpp's server, LiteLLM, ..."""

    name = "openai"

    def url(self, base_url: str) -> str:
        base = base_url.rstrip("/")
        return f"{base}/chat/completions" if base.endswith("/v1") else f"{base}/v1/chat/completions"

    def body(self, model: str, messages: list[UpstreamMessage], params: GenerationParams) -> bytes:
        # The client's fields as they came; then what chatrelay owns: the model it mapped,
        # streaming, the budget, and the usage it meters by (the client's other
        # stream_options kept).
        body: dict[str, Any] = dict(params.extra) if params.extra else {}
        options = body.get("stream_options")
        body["model"] = model
        body["messages"] = messages
        body["stream"] = True
        body[params.max_tokens_field] = params.max_tokens
        body["stream_options"] = {
            **(options if isinstance(options, dict) else {}),
            "include_usage": True,
        }
        add_sampling(body, params)
        return _request_body(body)

    def parse_event(self, data: str) -> UpstreamChunk:
        if data == "[DONE]":
            return UpstreamChunk(done=True)
        return parse_openai_chunk(_load(data))


class LivepeerDialect:
    """A go-livepeer gateway's LLM pipeline (or an ai-runner directly)."""

    name = "livepeer"

    def url(self, base_url: str) -> str:
        return f"{base_url.rstrip('/')}/llm"

    def body(self, model: str, messages: list[UpstreamMessage], params: GenerationParams) -> bytes:
        # Only these seven fields exist; the gateway answers 400 when max_tokens is missing.
        # What else a request asked for was refused before (answers/carriage.py), or changes
        # nothing; messages go as role and text (developer as system, text parts joined).
        body: dict[str, Any] = {
            "model": model,
            "messages": [
                {
                    "role": "system" if m["role"] == "developer" else m["role"],
                    "content": message_text(m),
                }
                for m in messages
            ],
            "max_tokens": params.max_tokens,
            "stream": True,
        }
        add_sampling(body, params)
        return _request_body(body)

    def parse_event(self, data: str) -> UpstreamChunk:
        if data == "[DONE]":  # an ai-runner talked to directly does send it
            return UpstreamChunk(done=True)
        obj = _load(data)
        if "chunk" in obj and "choices" not in obj:  # the pre-2025 format
            if obj.get("done") or obj["chunk"] == "[DONE]":
                tokens = obj.get("tokens_used")
                usage = Usage(0, int(tokens)) if isinstance(tokens, int) else None
                return UpstreamChunk(finish_reason="stop", usage=usage, done=True)
            text = obj["chunk"]
            if not isinstance(text, str):
                raise MalformedChunk("chunk is not text")
            return UpstreamChunk(content=text)
        return parse_openai_chunk(obj)


DIALECTS: dict[str, Dialect] = {"openai": OpenAIDialect(), "livepeer": LivepeerDialect()}


def upstream_error_message(body: bytes) -> str:
    """The upstream's own words from an error body, whatever shape it came in."""
    text = body.decode("utf-8", "replace").strip()
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return text[:500] or "(empty body)"
    if isinstance(obj, dict):
        if "error" in obj:
            return _error_text(obj["error"])
        detail = obj.get("detail")
        if isinstance(detail, list):  # FastAPI-style 422 from an ai-runner
            return "; ".join(_error_text(item) for item in detail) or text[:500]
        if detail is not None:
            return _error_text(detail)
        if "message" in obj:
            return str(obj["message"])
    return text[:500]
