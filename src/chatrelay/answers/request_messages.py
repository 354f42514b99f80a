"""The messages of an OpenAI request, checked as the client wrote them.

Every shape of openai-wire.md 1.2 is taken and kept whole (content parts, assistant
``tool_calls`` with ``content: null``, ``tool`` results, ``refusal``, unknown keys): the
relay sends them on as they came. Checked here by hand rather than by a pydantic union, so
that an error names the field as the client wrote it (``messages[1].content``), never a
validator's internals, and only what every upstream needs is required.
"""

from __future__ import annotations

from typing import Any

from chatrelay.errors import ChatRelayError
from chatrelay.text import storable
from chatrelay.upstreams.dialects import UpstreamMessage

ROLES = ("system", "developer", "user", "assistant", "tool", "function")


def checked_messages(raw: list[Any]) -> list[UpstreamMessage]:
    """The request's messages, each a dict as sent; a 400 naming the first bad field."""
    messages: list[UpstreamMessage] = []
    for index, message in enumerate(raw):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise invalid(where, "must be an object with a role and content")
        role = message.get("role")
        if role not in ROLES:
            raise invalid(f"{where}.role", f"must be one of {', '.join(ROLES)}")
        content = message.get("content")
        if content is None:
            if not (
                role == "assistant" and (message.get("tool_calls") or message.get("function_call"))
            ):
                raise invalid(f"{where}.content", "is required (null only beside tool_calls)")
        elif isinstance(content, list):
            for number, part in enumerate(content):
                _check_part(f"{where}.content[{number}]", part)
        elif not isinstance(content, str):
            raise invalid(f"{where}.content", "must be a string, a list of parts, or null")
        if role == "tool" and not isinstance(message.get("tool_call_id"), str):
            raise invalid(f"{where}.tool_call_id", "is required in a tool message (a string)")
        calls = message.get("tool_calls")
        if calls is not None and not (
            isinstance(calls, list) and all(isinstance(call, dict) for call in calls)
        ):
            raise invalid(f"{where}.tool_calls", "must be a list of tool call objects")
        check_storable(where, message)
        messages.append(message)
    return messages


def _check_part(where: str, part: Any) -> None:
    if not isinstance(part, dict) or not isinstance(part.get("type"), str):
        raise invalid(where, "must be an object with a type")
    if part["type"] == "text" and not isinstance(part.get("text"), str):
        raise invalid(f"{where}.text", "is required in a text part (a string)")


def check_storable(where: str, value: Any) -> None:
    """Every string storable (no NUL, no lone surrogate): what a client sent is stored as sent."""
    if isinstance(value, str):
        try:
            storable(value)
        except ValueError as exc:
            raise invalid(where, str(exc)) from None
    elif isinstance(value, dict):
        for key, item in value.items():
            check_storable(f"{where}.{key}", item)
    elif isinstance(value, list):
        for number, item in enumerate(value):
            check_storable(f"{where}[{number}]", item)


def invalid(param: str, what: str) -> ChatRelayError:
    return ChatRelayError(
        400, f"Invalid field '{param}': {what}.", code="invalid_value", param=param
    )
