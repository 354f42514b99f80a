"""A Responses API request (``POST /v1/responses``) in Chat Completions' terms.

The Responses API asks for the same answer as Chat Completions in another dress
(openai-wire.md 4.1): ``instructions`` and ``input`` items become chat messages, the flat
``tools`` and ``tool_choice`` the nested chat ones, ``text.format`` the ``response_format``,
``max_output_tokens`` the ``max_tokens``. What comes out is what the answer path already
takes for ``/v1/chat/completions``: messages in OpenAI's chat shape and the request's other
fields, for ``answers/carriage.py`` to decide which upstream can carry them.

What cannot be honoured over a chat upstream (hosted tools, ``background``, OpenAI's stored
files and conversations, logprobs in the output) is refused with a 400
``unsupported_parameter`` naming the field as the client wrote it (``tools[0].type``); a
field of the wrong shape is a 400 ``invalid_value`` naming it. Pure: no I/O. Stored items a
request points at (``item_reference``) are looked up by the caller and handed in.

Usage::

    form = chat_form(body, references=await stored_items(item_references(body)))
    AnswerRequest(form.messages, model=form.model, max_tokens=form.max_tokens, ...,
                  extra=form.extra)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from chatrelay.answers.request_messages import check_storable, invalid
from chatrelay.answers.responses_input import (
    chat_messages,
    item_references,
    text_of,
    unsupported,
)
from chatrelay.errors import ChatRelayError
from chatrelay.upstreams.dialects import UpstreamMessage

__all__ = ["ChatForm", "chat_form", "item_references", "unsupported"]

# Chat request fields of the same name and meaning on both APIs: sent on as they came.
SAME_FIELDS = ("user", "safety_identifier", "prompt_cache_key", "prompt_cache_retention",
               "service_tier")  # fmt: skip
# Responses fields chatrelay reads itself; any other field is sent on as it came, as the
# chat route does with fields it does not know (docs/architecture.md, "Fidelity").
OWN_FIELDS = frozenset({
    "model", "input", "instructions", "tools", "tool_choice", "parallel_tool_calls", "text",
    "max_output_tokens", "temperature", "top_p", "reasoning", "metadata", "store",
    "previous_response_id", "stream", "stream_options", "background", "conversation", "prompt",
    "include", "truncation", "top_logprobs", *SAME_FIELDS,
    "max_tool_calls",  # bounds calls to hosted tools only, which are refused: nothing to do
})  # fmt: skip
# ``include`` values that ask for nothing a chat upstream could give: reasoning is given in
# the clear, so there is no encrypted form to include (the AI SDK asks for it with store off).
HARMLESS_INCLUDES = frozenset({"reasoning.encrypted_content"})


@dataclass(frozen=True, slots=True)
class ChatForm:
    """A Responses request as the answer path takes it."""

    model: str | None
    # The chat messages: the instructions (a system message) first, then the input's.
    messages: list[UpstreamMessage]
    instructions: str | None
    max_tokens: int | None
    temperature: float | None
    top_p: float | None
    # The chat request's other fields (tools, tool_choice, response_format, ...).
    extra: dict[str, Any]
    stream: bool
    store: bool
    previous_response_id: str | None
    metadata: dict[str, str]
    # The request fields a response object repeats (responses_output.ResponseHead.echo).
    echo: dict[str, Any] = field(default_factory=dict)

    @property
    def input_messages(self) -> list[UpstreamMessage]:
        """The input's messages alone: instructions are not carried over to a response that
        continues this one (``previous_response_id``, openai-wire.md 4.6)."""
        return self.messages[1:] if self.instructions is not None else self.messages


def chat_form(
    body: Mapping[str, Any], references: Mapping[str, Mapping[str, Any]] | None = None
) -> ChatForm:
    """The request in chat terms; a 400 naming the first field that is wrong or that chatrelay
    cannot honour. ``references``: the stored items by id, as given back by the API."""
    if not isinstance(body, Mapping):
        raise ChatRelayError(400, "The request body must be a JSON object.", code="invalid_value")
    _refuse_unhonoured(body)
    model = _optional(body, "model", str)
    instructions = _optional(body, "instructions", str)
    previous = _optional(body, "previous_response_id", str)
    raw_input = body.get("input")
    if isinstance(raw_input, str):
        items: list[Any] = [{"type": "message", "role": "user", "content": raw_input}]
    elif isinstance(raw_input, list) and (raw_input or previous is not None):
        items = raw_input
    elif raw_input is None and previous is not None:
        items = []
    else:
        raise invalid("input", "is required: a string, or a non-empty list of items")
    check_storable("input", raw_input)
    check_storable("instructions", instructions)
    messages = chat_messages(items, references or {})
    if instructions is not None:
        messages.insert(0, {"role": "system", "content": instructions})

    extra: dict[str, Any] = {name: body[name] for name in SAME_FIELDS if name in body}
    extra.update((k, v) for k, v in body.items() if k not in OWN_FIELDS)
    tools = _tools(body.get("tools"))
    if tools:
        extra["tools"] = tools
    if body.get("tool_choice") is not None:
        extra["tool_choice"] = _tool_choice(body["tool_choice"])
    parallel = _optional(body, "parallel_tool_calls", bool)
    if parallel is not None:
        extra["parallel_tool_calls"] = parallel
    text = body.get("text")
    extra.update(_text(text))
    reasoning = body.get("reasoning")
    extra.update(_reasoning(reasoning))

    max_tokens = _optional(body, "max_output_tokens", int)
    if max_tokens is not None and max_tokens < 1:
        raise invalid("max_output_tokens", "must be at least 1")
    temperature = _number(body, "temperature", 2.0)
    top_p = _number(body, "top_p", 1.0)
    store = _optional(body, "store", bool)
    metadata = _metadata(body.get("metadata"))
    echo = {
        "instructions": instructions,
        "max_output_tokens": max_tokens,
        "parallel_tool_calls": True if parallel is None else parallel,
        "previous_response_id": previous,
        "reasoning": reasoning or {"effort": None, "summary": None},
        "store": True if store is None else store,
        "temperature": temperature,
        "text": text or {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice") or "auto",
        "tools": body.get("tools") or [],
        "top_p": top_p,
        "user": body.get("user"),
        "metadata": metadata,
    }
    return ChatForm(
        model=model,
        messages=messages,
        instructions=instructions,
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        extra=extra,
        stream=bool(_optional(body, "stream", bool)),
        store=echo["store"],
        previous_response_id=previous,
        metadata=metadata,
        echo=echo,
    )


def _refuse_unhonoured(body: Mapping[str, Any]) -> None:
    """The request fields that ask for what only OpenAI's own servers do."""
    if body.get("background"):
        raise unsupported(
            "background",
            "background responses",
            "every response is generated while its request waits or streams (a stored one "
            "can be fetched with GET /v1/responses/{id})",
        )
    for name, what in (
        ("conversation", "OpenAI's conversation objects"),
        ("prompt", "OpenAI's stored prompt templates"),
    ):
        if body.get(name) is not None:
            raise unsupported(name, what, "chatrelay keeps none; send the messages as input")
    if body.get("truncation") not in (None, "disabled"):
        raise unsupported(
            "truncation",
            "truncating the conversation",
            "a request too long for the model is refused, never cut",
        )
    if body.get("top_logprobs"):
        raise unsupported("top_logprobs", "logprobs", "output text carries none")
    include = body.get("include")
    if include is not None:
        if not isinstance(include, list):
            raise invalid("include", "must be a list of strings")
        for index, value in enumerate(include):
            if value not in HARMLESS_INCLUDES:
                raise unsupported(
                    f"include[{index}]",
                    f"including '{value}'",
                    "outputs of hosted tools and logprobs do not exist here",
                )


def _tools(tools: Any) -> list[dict[str, Any]]:
    """Flat function tools as chat's nested ones; any other type of tool is hosted by OpenAI."""
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise invalid("tools", "must be a list of tools")
    nested = []
    for index, tool in enumerate(tools):
        where = f"tools[{index}]"
        if not isinstance(tool, dict):
            raise invalid(where, "must be an object with a type")
        if tool.get("type") != "function":
            raise unsupported(
                f"{where}.type",
                f"a tool of type '{tool.get('type')}'",
                "only function tools, which the client runs, are carried; hosted ones "
                "(web_search, file_search, code_interpreter, ...) run on OpenAI's servers",
            )
        function = {"name": text_of(tool, "name", where)}
        for key in ("description", "parameters", "strict"):
            if tool.get(key) is not None:
                function[key] = tool[key]
        nested.append({"type": "function", "function": function})
    return nested


def _tool_choice(choice: Any) -> Any:
    if choice in ("none", "auto", "required"):
        return choice
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "function":
        return {"type": "function", "function": {"name": text_of(choice, "name", "tool_choice")}}
    if kind == "allowed_tools":
        tools = choice.get("tools")
        if not isinstance(tools, list) or not all(
            isinstance(t, dict) and t.get("type") == "function" for t in tools
        ):
            raise invalid("tool_choice.tools", "must be a list of function tools")
        named = [
            {
                "type": "function",
                "function": {"name": text_of(t, "name", f"tool_choice.tools[{n}]")},
            }
            for n, t in enumerate(tools)
        ]
        allowed = {"mode": choice.get("mode", "auto"), "tools": named}
        return {"type": "allowed_tools", "allowed_tools": allowed}
    if isinstance(kind, str):
        raise unsupported(
            "tool_choice.type",
            f"choosing the hosted tool '{kind}'",
            "only function tools are carried",
        )
    raise invalid("tool_choice", "must be none, auto, required or a tool choice object")


def _text(text: Any) -> dict[str, Any]:
    """``text.format`` as chat's ``response_format``; ``text.verbosity`` as chat's field."""
    if text is None:
        return {}
    if not isinstance(text, dict):
        raise invalid("text", "must be an object")
    fields: dict[str, Any] = {}
    for key, value in text.items():
        if key == "verbosity" and value is not None:
            fields["verbosity"] = value
        elif key == "format" and value is not None:
            kind = value.get("type") if isinstance(value, dict) else None
            if kind == "json_schema":
                schema = {
                    k: value[k]
                    for k in ("name", "description", "schema", "strict")
                    if value.get(k) is not None
                }
                text_of(schema, "name", "text.format")
                fields["response_format"] = {"type": "json_schema", "json_schema": schema}
            elif kind == "json_object":
                fields["response_format"] = {"type": "json_object"}
            elif kind != "text":  # plain text is what chat answers without asking
                raise invalid("text.format.type", "must be text, json_object or json_schema")
        elif key not in ("format", "verbosity"):
            raise unsupported(
                f"text.{key}", f"the text option '{key}'", "format and verbosity are carried"
            )
    return fields


def _reasoning(reasoning: Any) -> dict[str, Any]:
    """``reasoning.effort`` as chat's ``reasoning_effort``. A summary is given whenever the
    upstream reasons (its reasoning text, in the clear), so ``summary`` asks nothing more."""
    if reasoning is None:
        return {}
    if not isinstance(reasoning, dict):
        raise invalid("reasoning", "must be an object")
    for key in reasoning:
        if key not in ("effort", "summary", "generate_summary"):
            raise unsupported(
                f"reasoning.{key}",
                f"the reasoning option '{key}'",
                "effort and summary are carried",
            )
    effort = reasoning.get("effort")
    return {} if effort is None else {"reasoning_effort": effort}


def _metadata(metadata: Any) -> dict[str, str]:
    """Up to 16 string pairs, keys up to 64 characters, values up to 512, as OpenAI bounds
    them: the metadata is stored with the response."""
    if metadata is None:
        return {}
    if not isinstance(metadata, dict) or len(metadata) > 16:
        raise invalid("metadata", "must be an object of at most 16 string pairs")
    for key, value in metadata.items():
        if len(key) > 64 or not isinstance(value, str) or len(value) > 512:
            raise invalid(
                f"metadata.{key}",
                "must be a string of at most 512 characters, under a key of at most 64",
            )
        check_storable(f"metadata.{key}", value)
    return dict(metadata)


def _optional(body: Mapping[str, Any], name: str, kind: type) -> Any:
    value = body.get(name)
    # bool is an int to Python, never to a client: true is not a token count.
    if value is not None and (
        not isinstance(value, kind) or (kind is int and isinstance(value, bool))
    ):
        raise invalid(name, f"must be {_KIND_NAMES[kind]}")
    if isinstance(value, str):
        check_storable(name, value)
    return value


_KIND_NAMES = {str: "a string", bool: "true or false", int: "an integer"}


def _number(body: Mapping[str, Any], name: str, most: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= most:
        raise invalid(name, f"must be a number from 0 to {most:g}")
    return float(value)
