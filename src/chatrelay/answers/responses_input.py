"""A Responses request's ``input`` items as Chat Completions messages.

The Responses API's items (openai-wire.md 4.1) carry what chat messages carry, split
otherwise: a ``message`` item per message with ``input_text``/``input_image``/``input_file``
parts (``output_text`` in assistant history), one ``function_call`` item per tool call and a
``function_call_output`` item per result, ``reasoning`` items beside them. Each becomes the
chat message of the same meaning, in order; what a chat upstream cannot be given (files and
images by OpenAI file id, hosted tools' items, encrypted reasoning) is refused by name.
Pure: stored items the input points at (``item_reference``) are looked up by the caller.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chatrelay.answers.request_messages import invalid
from chatrelay.errors import ChatRelayError
from chatrelay.upstreams.dialects import UpstreamMessage

MESSAGE_ROLES = ("user", "system", "developer", "assistant")


def item_references(body: Mapping[str, Any]) -> list[str]:
    """The ids of the stored items the input points at (``item_reference``), for the caller
    to look up before ``chat_form``: the AI SDK sends its earlier answers so by default."""
    items = body.get("input")
    if not isinstance(items, list):
        return []
    return [
        item["id"]
        for item in items
        if isinstance(item, dict)
        and item.get("type") == "item_reference"
        and isinstance(item.get("id"), str)
    ]


def chat_messages(
    items: list[Any], references: Mapping[str, Mapping[str, Any]]
) -> list[UpstreamMessage]:
    """The input items as chat messages, in order: consecutive ``function_call`` items (and
    an assistant message just before them) make one assistant message with ``tool_calls``,
    as a chat upstream sent them; a ``reasoning`` item rides on the assistant message after it
    (``reasoning_content``, as the stored conversation keeps an answer's reasoning)."""
    messages: list[UpstreamMessage] = []
    reasoning: list[str] = []
    for index, item in enumerate(items):
        where = f"input[{index}]"
        if not isinstance(item, dict):
            raise invalid(where, "must be an object (a message or another item)")
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "item_reference":
            ref = item.get("id")
            found = references.get(ref) if isinstance(ref, str) else None
            if found is None or found.get("type") == "item_reference":
                raise ChatRelayError(
                    404,
                    f"Item with id '{ref}' not found.",
                    code="item_not_found",
                    param=f"{where}.id",
                )
            item = dict(found)
            kind = item.get("type", "message")
        if kind == "message":
            message = _message(where, item)
            if message["role"] == "assistant" and reasoning:
                message["reasoning_content"] = "\n\n".join(reasoning)
                reasoning = []
            messages.append(message)
        elif kind == "function_call":
            call = {
                "id": text_of(item, "call_id", where),
                "type": "function",
                "function": {
                    "name": text_of(item, "name", where),
                    "arguments": text_of(item, "arguments", where),
                },
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and not reasoning:
                last.setdefault("tool_calls", []).append(call)
            else:
                message = {"role": "assistant", "content": None, "tool_calls": [call]}
                if reasoning:
                    message["reasoning_content"] = "\n\n".join(reasoning)
                    reasoning = []
                messages.append(message)
        elif kind == "function_call_output":
            call_id = text_of(item, "call_id", where)
            output = _tool_output(f"{where}.output", item.get("output"))
            messages.append({"role": "tool", "tool_call_id": call_id, "content": output})
        elif kind == "reasoning":
            if item.get("encrypted_content"):
                raise unsupported(
                    f"{where}.encrypted_content",
                    "encrypted reasoning",
                    "only OpenAI can read it; send its summary instead",
                )
            reasoning.extend(_reasoning_text(where, item))
        else:
            raise unsupported(
                f"{where}.type",
                f"an input item of type '{kind}'",
                "chat upstreams take messages, function calls, their outputs and reasoning",
            )
    return messages


def _message(where: str, item: Mapping[str, Any]) -> UpstreamMessage:
    role = item.get("role")
    if role not in MESSAGE_ROLES:
        raise invalid(f"{where}.role", f"must be one of {', '.join(MESSAGE_ROLES)}")
    content = item.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list):
        raise invalid(f"{where}.content", "must be a string or a list of parts")
    if role == "assistant":  # chat servers differ on assistant parts; all take a string
        texts: list[str] = []
        refusals: list[str] = []
        for number, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind in ("output_text", "input_text"):
                texts.append(text_of(part, "text", f"{where}.content[{number}]"))
            elif kind == "refusal":
                refusals.append(text_of(part, "refusal", f"{where}.content[{number}]"))
            else:
                raise invalid(
                    f"{where}.content[{number}]",
                    "must be an output_text or refusal part in an assistant message",
                )
        message: UpstreamMessage = {"role": role, "content": "".join(texts)}
        if refusals:
            message["refusal"] = "".join(refusals)
            message["content"] = message["content"] or None
        return message
    parts = [_part(f"{where}.content[{n}]", part, role) for n, part in enumerate(content)]
    if role != "user":  # text only, and some chat servers take only a string here
        return {"role": role, "content": "".join(part["text"] for part in parts)}
    return {"role": role, "content": parts}


def _part(where: str, part: Any, role: str) -> dict[str, Any]:
    """An input content part as the chat part of the same meaning."""
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in ("input_text", "output_text"):
        return {"type": "text", "text": text_of(part, "text", where)}
    if kind in ("input_image", "input_file") and role != "user":
        raise invalid(where, f"an {kind} part goes in a user message (chat takes text only here)")
    if kind == "input_image":
        if part.get("file_id") is not None:
            raise unsupported(
                f"{where}.file_id",
                "an image by file id",
                "chatrelay keeps no files; send image_url (a URL or data URL)",
            )
        image: dict[str, Any] = {"url": text_of(part, "image_url", where)}
        if part.get("detail") is not None:
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    if kind == "input_file":
        for name in ("file_id", "file_url"):
            if part.get(name) is not None:
                raise unsupported(
                    f"{where}.{name}",
                    f"a file by {name.replace('_', ' ')}",
                    "chatrelay keeps and fetches no files; send file_data",
                )
        file = {"file_data": text_of(part, "file_data", where)}
        if isinstance(part.get("filename"), str):
            file["filename"] = part["filename"]
        return {"type": "file", "file": file}
    if not isinstance(kind, str):
        raise invalid(where, "must be an object with a type")
    raise unsupported(
        f"{where}.type",
        f"a '{kind}' content part",
        "input_text, input_image and input_file are carried",
    )


def _tool_output(where: str, output: Any) -> str:
    """A function's output as a tool message's content: its text, as a string (chat tool
    messages carry text only, and some chat servers take only a string)."""
    if isinstance(output, str):
        return output
    if not isinstance(output, list):
        raise invalid(where, "must be a string or a list of parts")
    texts = []
    for number, part in enumerate(output):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind != "input_text":
            raise unsupported(
                f"{where}[{number}]",
                f"a '{kind}' part in a function's output",
                "chat tool messages carry text only",
            )
        texts.append(text_of(part, "text", f"{where}[{number}]"))
    return "".join(texts)


def _reasoning_text(where: str, item: Mapping[str, Any]) -> list[str]:
    """A reasoning item's text: its full text when it has it, else its summary."""
    for key, kind in (("content", "reasoning_text"), ("summary", "summary_text")):
        parts = item.get(key)
        if isinstance(parts, list) and parts:
            return [
                text_of(part, "text", f"{where}.{key}[{n}]")
                for n, part in enumerate(parts)
                if isinstance(part, dict) and part.get("type") == kind
            ]
    return []


def text_of(obj: Mapping[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise invalid(f"{where}.{key}", "is required (a string)")
    return value


def unsupported(param: str, what: str, why: str) -> ChatRelayError:
    """A 400 for what a client may ask on OpenAI's Responses API but chatrelay cannot do."""
    return ChatRelayError(
        400,
        f"chatrelay cannot honour {what} ('{param}'): {why}. Leave it out.",
        code="unsupported_parameter",
        param=param,
    )
