"""The Responses API's ``response`` object (openai-wire.md 4.2) and its output items.

What a response says besides its output repeats the request (``ResponseHead``); its output
is items: ``reasoning`` (the upstream's reasoning text, given as the item's summary), a
``message`` with an ``output_text`` part (or a ``refusal`` part), and a ``function_call`` per
tool call. ``whole_response`` builds the object of a finished answer from what chatrelay
keeps of it (its text, assembled tool calls, reasoning, usage, how it ended); the stream
(``responses_events.py``) builds the same object as the answer goes.

Item ids are made from the response id and the output index (``msg_<key>_1``, ``fc_<key>_2``
for ``resp_<key>``), so the stream and the stored answer name the same items, and an
``item_reference`` leads back to its response (``item_place``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from chatrelay.errors import ChatRelayError
from chatrelay.upstreams.chunk import Usage

Status = Literal["in_progress", "completed", "incomplete", "failed", "cancelled"]
ITEM_PREFIXES = {"message": "msg", "reasoning": "rs", "function_call": "fc"}
# A finish reason that cuts the answer short, and the reason the response object gives.
INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}
# There is no ``response.cancelled`` stream event; a stopped answer ends as an incomplete one
# does (clients read it the same way: the partial output and its usage), its status said.
TERMINAL_EVENTS = {
    "completed": "response.completed",
    "incomplete": "response.incomplete",
    "cancelled": "response.incomplete",
    "failed": "response.failed",
}


@dataclass(frozen=True, slots=True)
class ResponseHead:
    """What every rendering of one response says besides its output and status. ``echo``:
    the request fields a response object repeats (``ChatForm.echo``); OpenAI's defaults for
    those missing (a response read back from storage has only what was kept)."""

    id: str  # resp_<key>
    model: str
    created_at: int
    echo: Mapping[str, Any] = field(default_factory=dict)


def item_id(response_id: str, kind: str, output_index: int) -> str:
    key = response_id.partition("_")[2] or response_id
    return f"{ITEM_PREFIXES.get(kind, kind)}_{key}_{output_index}"


def item_place(item: str) -> tuple[str, int] | None:
    """The response id and output index an item id names, or None for an id not made here."""
    prefix, _, rest = item.partition("_")
    key, _, index = rest.rpartition("_")
    if prefix not in ITEM_PREFIXES.values() or not key or not index.isdigit():
        return None
    return f"resp_{key}", int(index)


def usage_fields(usage: Usage | None) -> dict[str, Any]:
    """Usage as a response gives it: every key the SDKs require, zeros when nothing was
    counted (the AI SDK drops a ``response.completed`` without usage, openai-wire.md 4.5)."""
    prompt, completion = (usage.prompt_tokens, usage.completion_tokens) if usage else (0, 0)
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + completion,
    }


def response_object(
    head: ResponseHead,
    *,
    status: Status,
    output: list[dict[str, Any]],
    usage: dict[str, Any] | None,
    error: dict[str, Any] | None = None,
    incomplete_reason: str | None = None,
) -> dict[str, Any]:
    """The ``response`` object, its keys in OpenAI's order."""
    echo = head.echo
    return {
        "id": head.id,
        "object": "response",
        "created_at": head.created_at,
        "status": status,
        "background": False,
        "error": error,
        "incomplete_details": {"reason": incomplete_reason} if incomplete_reason else None,
        "instructions": echo.get("instructions"),
        "max_output_tokens": echo.get("max_output_tokens"),
        "model": head.model,
        "output": output,
        "parallel_tool_calls": echo.get("parallel_tool_calls", True),
        "previous_response_id": echo.get("previous_response_id"),
        "reasoning": echo.get("reasoning", {"effort": None, "summary": None}),
        "store": echo.get("store", True),
        "temperature": echo.get("temperature"),
        "text": echo.get("text", {"format": {"type": "text"}}),
        "tool_choice": echo.get("tool_choice", "auto"),
        "tools": echo.get("tools", []),
        "top_p": echo.get("top_p"),
        "truncation": "disabled",
        "usage": usage,
        "user": echo.get("user"),
        "metadata": echo.get("metadata", {}),
    }


def message_item(id: str, parts: list[dict[str, Any]], status: str) -> dict[str, Any]:
    return {"id": id, "type": "message", "status": status, "content": parts, "role": "assistant"}


def part_of(kind: str, text: str) -> dict[str, Any]:
    """A content part (``output_text`` or ``refusal``) or a reasoning ``summary_text``."""
    if kind == "output_text":
        return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}
    if kind == "refusal":
        return {"type": "refusal", "refusal": text}
    return {"type": "summary_text", "text": text}


def reasoning_item(id: str, texts: Sequence[str]) -> dict[str, Any]:
    return {"id": id, "type": "reasoning", "summary": [part_of("summary_text", t) for t in texts]}


def call_item(id: str, call_id: str, name: str, arguments: str, status: str) -> dict[str, Any]:
    return {
        "id": id,
        "type": "function_call",
        "status": status,
        "arguments": arguments,
        "call_id": call_id,
        "name": name,
    }


def ending_of(finish_reason: str | None) -> tuple[Status, str | None]:
    """The status (and ``incomplete_details.reason``) a chat finish reason makes."""
    reason = INCOMPLETE.get(finish_reason or "")
    return ("incomplete" if reason else "completed"), reason


def error_of(error: ChatRelayError) -> dict[str, Any]:
    return {"code": error.code, "message": error.message}


def whole_response(
    head: ResponseHead,
    *,
    text: str,
    tool_calls: Sequence[Mapping[str, Any]] = (),
    reasoning: str = "",
    refusal: str = "",
    usage: Usage | None = None,
    finish_reason: str | None = None,
    stopped: bool = False,
    error: ChatRelayError | None = None,
) -> dict[str, Any]:
    """The response object of a finished answer: its text, its assembled ``tool_calls`` (in
    chat's shape, as ``RichParts.tool_calls`` gives them), reasoning and refusal; ``stopped``
    for an answer its owner stopped, ``error`` for one that failed."""
    status, reason = ending_of(finish_reason)
    if error is not None:
        status, reason = "failed", None
    elif stopped:
        status, reason = "cancelled", None
    done = "completed" if status == "completed" else "incomplete"
    output: list[dict[str, Any]] = []
    if reasoning:
        output.append(reasoning_item(item_id(head.id, "reasoning", 0), [reasoning]))
    parts = [part_of("output_text", text)] if text else []
    if refusal:
        parts.append(part_of("refusal", refusal))
    if not parts and not tool_calls and error is None:  # an empty answer is an empty text
        parts.append(part_of("output_text", ""))
    if parts:
        output.append(message_item(item_id(head.id, "message", len(output)), parts, done))
    for call in tool_calls:
        index = len(output)
        function = call.get("function") or {}
        output.append(
            call_item(
                item_id(head.id, "function_call", index),
                call.get("id") or call_id_for(head.id, index),
                function.get("name") or "",
                function.get("arguments") or "",
                done,
            )
        )
    return response_object(
        head,
        status=status,
        output=output,
        usage=usage_fields(usage),
        error=None if error is None else error_of(error),
        incomplete_reason=reason,
    )


def call_id_for(response_id: str, output_index: int) -> str:
    """A call id for a call its upstream gave none (a function_call_output names it)."""
    return item_id(response_id, "call", output_index)
