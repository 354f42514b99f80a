"""What an upstream can carry of a request, decided before anything is spent.

A relay carries everything or refuses by name what it cannot carry; it never drops a field
silently (design.md, "Fidelity"). An OpenAI-dialect upstream takes every field and message
shape as the client sent it; a Livepeer runner takes only ``model``, ``messages`` of system,
user and assistant text, ``max_tokens``, ``temperature``, ``top_p``, ``top_k`` and
``stream`` (livepeer-wire.md); an upstream configured ``text_only`` takes no images, audio or
files. Fields that change nothing about the answer are never refused: SDKs send them by
default. An operator may list fields an upstream drops instead (``drop_params``, as LiteLLM's
setting): they are left out for it, and the response says which (``X-Chatrelay-Dropped-Params``).

Usage::

    carried = carriage(registry.serving(model), messages, extra)   # 400 if nobody can
    answer = Answer(..., upstreams=carried.upstreams)           # only those answer
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from chatrelay.errors import ChatRelayError
from chatrelay.upstreams.client import Upstream
from chatrelay.upstreams.dialects import UpstreamMessage
from chatrelay.upstreams.llama_server import LlamaServerDialect
from chatrelay.upstreams.llama_server import cannot_take as llama_server_cannot_take

# Content parts that are not text: what a text-only upstream cannot take.
MEDIA_PARTS = frozenset({"image_url", "input_audio", "file", "input_image", "input_file"})
LIVEPEER_ROLES = frozenset({"system", "developer", "user", "assistant"})
# UpstreamMessage keys a Livepeer runner takes.
LIVEPEER_MESSAGE_KEYS = frozenset({"role", "content"})


def changes_nothing(name: str, value: Any, request: Mapping[str, Any]) -> bool:
    """A field that does not change the answer, so an upstream that cannot take it is not
    asked to (``n: 1``, ``stream_options``, which chatrelay meters by itself, ``user``,
    ``metadata``, ``store: false``, ``tool_choice: "none"`` or ``parallel_tool_calls``
    without tools)."""
    if name in ("stream_options", "user", "metadata", "safety_identifier", "prompt_cache_key"):
        return True
    if name == "n":
        return value in (None, 1)
    if name == "store":
        return value in (None, False)
    if name in ("tool_choice", "parallel_tool_calls") and not request.get("tools"):
        return name == "parallel_tool_calls" or value in (None, "none")
    if name == "response_format":
        return isinstance(value, dict) and value.get("type") == "text"
    return value is None


@dataclass(frozen=True, slots=True)
class Carried:
    upstreams: frozenset[str]  # the names of those that can answer
    dropped: tuple[str, ...] = ()  # fields left out for some of them, by their config


def carriage(
    upstreams: Sequence[Upstream], messages: Sequence[UpstreamMessage], extra: Mapping[str, Any]
) -> Carried:
    """Which of the model's upstreams can carry the request; a 400 ``unsupported_parameter``
    naming the first thing the first of them cannot carry when none can."""
    able: set[str] = set()
    dropped: set[str] = set()
    refusal: ChatRelayError | None = None
    for upstream in upstreams:
        drops = set(upstream.config.drop_params) & set(extra)
        kept = {k: v for k, v in extra.items() if k not in drops}
        problem = cannot_carry(upstream, messages, kept)
        if problem is None:
            able.add(upstream.config.name)
            dropped |= drops
        elif refusal is None:
            refusal = problem
    if not able:
        assert refusal is not None
        raise refusal
    return Carried(frozenset(able), tuple(sorted(dropped)))


def cannot_carry(
    upstream: Upstream, messages: Sequence[UpstreamMessage], extra: Mapping[str, Any]
) -> ChatRelayError | None:
    """Why ``upstream`` cannot carry this request, or None."""
    # The fields a dialect cannot carry (an OpenAI-dialect upstream takes them all); the
    # embedded model's server drops undeclared fields silently and cannot answer some as
    # asked (upstreams/llama_server.py says which).
    field_problem = _FIELD_PROBLEMS.get(upstream.config.dialect)
    if field_problem is not None:
        for name, value in extra.items():
            if not changes_nothing(name, value, extra):
                reason = field_problem(name, value, extra)
                if reason is not None:
                    return _unsupported(upstream, name, *reason)
    for index, message in enumerate(messages):
        problem = _message_problem(upstream, index, message)
        if problem is not None:
            return problem
    return None


def _livepeer_field(name: str, value: Any, request: Mapping[str, Any]) -> tuple[str, str]:
    """Livepeer's runner takes no field beyond the seven chatrelay sends itself."""
    return (
        f"the field '{name}'",
        "only model, messages (system, user and assistant text), max_tokens, temperature, "
        "top_p, top_k and stream",
    )


_FIELD_PROBLEMS: dict[str, Callable[[str, Any, Mapping[str, Any]], tuple[str, str] | None]] = {
    "livepeer": _livepeer_field,
    LlamaServerDialect.name: llama_server_cannot_take,
}


def _message_problem(
    upstream: Upstream, index: int, message: UpstreamMessage
) -> ChatRelayError | None:
    livepeer = upstream.config.dialect == "livepeer"
    content = message.get("content")
    if livepeer:
        if message.get("role") not in LIVEPEER_ROLES:
            what = f"a '{message.get('role')}' message"
            return _unsupported(upstream, f"messages[{index}]", what, _LIVEPEER_MESSAGES)
        for key, value in message.items():
            if key not in LIVEPEER_MESSAGE_KEYS and value is not None:
                what = f"'{key}' in a message"
                return _unsupported(upstream, f"messages[{index}].{key}", what, _LIVEPEER_MESSAGES)
    if isinstance(content, list):
        for number, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text":
                continue
            if livepeer or (upstream.config.text_only and kind in MEDIA_PARTS):
                takes = _LIVEPEER_MESSAGES if livepeer else "text only (text_only = true)"
                return _unsupported(
                    upstream, f"messages[{index}].content[{number}]", f"a '{kind}' part", takes
                )
    return None


_LIVEPEER_MESSAGES = "system, user and assistant messages of text only"


def _unsupported(upstream: Upstream, param: str, what: str, takes: str) -> ChatRelayError:
    name = upstream.config.name
    return ChatRelayError(
        400,
        f"The upstream '{name}' that serves this model cannot carry {what}: it takes {takes}. "
        "Leave it out, or ask for a model served by an upstream that takes it "
        "(GET /v1/models lists them).",
        code="unsupported_parameter",
        param=param,
    )
