"""llama-cpp-python's server (``python -m llama_cpp.server``): the embedded model's dialect.

It is "almost OpenAI" in its own ways (openai-wire.md §1.3; read in its ``server/types.py``,
``llama_types.py`` and ``llama_chat_format.py``, 0.3.x), so requests are translated here into
what it takes, keeping their meaning:

- ``response_format: {"type": "json_schema", "json_schema": {"schema": S}}`` fails its
  validation; ``{"type": "json_object", "schema": S}`` is its equivalent: the schema becomes a
  llama.cpp grammar that constrains every token.
- ``max_completion_tokens`` is not a field: the budget goes as ``max_tokens``.
- There is no ``developer`` role (it is ``system``); ``system``, ``tool`` and ``function``
  content must be a string, and chat templates such as SmolLM2's concatenate ``content`` as a
  string for every role, so text parts go joined and ``content: null`` as ``""`` (an
  assistant message's ``tool_calls`` kept).
- A function without ``parameters`` (OpenAI: no arguments) fails its validation: it goes with
  an empty object schema.
- ``tool_choice: "required"`` is not implemented (the answer is text): with one tool it is the
  same as naming that tool, which is implemented (a grammar from the function's parameters).
- ``stream_options`` is not a field and it sends no usage: chatrelay counts the embedded
  model's tokens itself, with the model's vocabulary. ``parallel_tool_calls`` is not a field
  and changes nothing: it never makes more than one call.

What it cannot carry in any form (fields its request model does not declare, which it would
drop silently; several tools with ``tool_choice: "required"``; legacy ``functions``, whose
answer it would send as ``tool_calls``; a schema its grammar converter cannot enforce) is
refused by name before anything is spent: :func:`cannot_take`, called by answers/carriage.py.

Its answers are fixed on the way back: a forced tool call's every delta repeats the call's
``id``, ``type`` and ``name`` (OpenAI's SDKs concatenate them: ``"fff"``) and the legacy
``function_call`` beside ``tool_calls``; and a call cut by ``max_tokens`` ends with
``finish_reason: "tool_calls"`` although its arguments are cut JSON. See docs/embedded-model.md.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import orjson

from chatrelay.upstreams.chunk import UpstreamChunk
from chatrelay.upstreams.dialects import (
    DIALECTS,
    GenerationParams,
    OpenAIDialect,
    UpstreamMessage,
    add_sampling,
    parse_openai_chunk,
)

# The request fields its pydantic request model (server/types.py CreateChatCompletionRequest)
# declares and uses (logit_bias_type and min_tokens in server/app.py itself), sent as they came
# or translated by LlamaServerDialect.body. ``n`` and ``user`` are declared but ignored
# (carriage.changes_nothing lets ``n: 1`` and ``user`` through); ``functions`` and
# ``function_call`` are declared, but see cannot_take.
LLAMA_SERVER_FIELDS = frozenset(
    {
        "tools", "tool_choice", "response_format", "stop", "seed", "logprobs", "top_logprobs",
        "presence_penalty", "frequency_penalty", "logit_bias", "logit_bias_type",
        "min_tokens", "min_p", "repeat_penalty", "mirostat_mode", "mirostat_tau",
        "mirostat_eta", "grammar",
    }
)  # fmt: skip
# Fields chatrelay takes care of for it (see the module's docstring).
TRANSLATED_FIELDS = frozenset({"max_completion_tokens", "stream_options", "parallel_tool_calls"})
# Not sent: what chatrelay sets itself, and the fields the server has no use for.
_NOT_SENT = frozenset(
    {"max_tokens", "max_completion_tokens", "stream_options", "parallel_tool_calls"}
)
# At most this many answers' tool calls are followed (one dialect object reads the events of
# every stream); an answer cut before its last chunk never removes its entry, so the oldest go.
_MAX_OPEN_CALLS = 1024
_EMPTY_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}


def cannot_take(name: str, value: Any, request: Mapping[str, Any]) -> tuple[str, str] | None:
    """Why llama-cpp-python's server cannot carry the request field ``name``: (what, what it
    takes instead) for answers/carriage.py's message, or None when it can. Fields that change
    nothing are let through before this (carriage.changes_nothing)."""
    if name in ("functions", "function_call"):
        return (
            f"the legacy field '{name}'",
            "'tools' and 'tool_choice' (it answers a forced function as 'tool_calls')",
        )
    if name not in LLAMA_SERVER_FIELDS and name not in TRANSLATED_FIELDS:
        return (
            f"the field '{name}'",
            "only the fields llama-cpp-python's server declares (docs/embedded-model.md); "
            "it would ignore this one",
        )
    if name == "tool_choice" and value == "required" and len(request.get("tools") or ()) > 1:
        return (
            "tool_choice 'required' with more than one tool",
            "a forced call of one named function: name it in tool_choice, or send one tool",
        )
    if name == "response_format" and isinstance(value, dict):
        schema = _schema_of(value)
        if schema is not None:
            problem = _grammar_problem(schema)
            if problem is not None:
                return (
                    f"a JSON schema llama.cpp's grammar cannot enforce ({problem})",
                    "JSON schemas its grammar converter understands (local $refs, the JSON types)",
                )
    return None


def _schema_of(response_format: Mapping[str, Any]) -> Any:
    kind = response_format.get("type")
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        return spec.get("schema") if isinstance(spec, dict) else None
    if kind == "json_object":
        return response_format.get("schema")
    return None


def _grammar_problem(schema: Any) -> str | None:
    """What llama.cpp's schema-to-grammar converter fails on. The server would fall back to
    any JSON without a word (llama_chat_format._grammar_for_json_schema)."""
    # Imported here: the converter is pure Python, but importing it loads libllama, which
    # only a process running the embedded model has loaded (for counting tokens) anyway.
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    try:
        json_schema_to_gbnf(json.dumps(schema))
    except Exception as exc:  # it raises ValueError, AssertionError, KeyError, ...
        return str(exc)[:200] or type(exc).__name__
    return None


def _text(content: Any) -> str:
    """Content as the one string its chat templates concatenate: text (and refusal) parts
    joined, ``null`` as nothing."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(part.get("text") or part.get("refusal") or "")
            for part in content
            if isinstance(part, dict) and part.get("type") in ("text", "refusal")
        )
    return ""


def _only_text(content: Any) -> bool:
    return isinstance(content, list) and all(
        isinstance(part, dict) and part.get("type") in ("text", "refusal") for part in content
    )


def llama_message(message: UpstreamMessage) -> UpstreamMessage:
    """A message as its server takes it (see the module's docstring)."""
    role = message.get("role")
    content = message.get("content")
    if role == "user" and isinstance(content, list) and not _only_text(content):
        # Images for a multimodal model: kept as parts (a text-only upstream, as the bundled
        # model is, never gets here: carriage refuses them by name).
        return message
    out = dict(message)
    if role == "developer":
        out["role"] = "system"
    out["content"] = _text(content)
    return out


def llama_tools(tools: Any) -> Any:
    """Tools with ``parameters`` always there: OpenAI's "no arguments" is an empty object."""
    if not isinstance(tools, list):
        return tools
    fixed = []
    for tool in tools:
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and "parameters" not in function:
            tool = {**tool, "function": {**function, "parameters": _EMPTY_PARAMETERS}}
        fixed.append(tool)
    return fixed


class LlamaServerDialect(OpenAIDialect):
    """llama-cpp-python's OpenAI-compatible server (the embedded model)."""

    name = "llama-cpp-python"

    def __init__(self) -> None:
        # The tool calls of the answers streaming them, by answer id and call index: their
        # arguments so far (their id, type and name have been relayed).
        self._calls: OrderedDict[str, dict[int, list[str]]] = OrderedDict()

    def body(self, model: str, messages: list[UpstreamMessage], params: GenerationParams) -> bytes:
        extra = params.extra or {}
        body: dict[str, Any] = {k: v for k, v in extra.items() if k not in _NOT_SENT}
        body["model"] = model
        body["messages"] = [llama_message(m) for m in messages]
        body["stream"] = True
        body["max_tokens"] = params.max_tokens
        add_sampling(body, params)
        if "tools" in body:
            body["tools"] = llama_tools(body["tools"])
        tools = body.get("tools")
        if body.get("tool_choice") == "required" and isinstance(tools, list) and len(tools) == 1:
            # Its chat handlers implement only a named choice; with one tool that is the same.
            name = (tools[0].get("function") or {}).get("name")
            body["tool_choice"] = {"type": "function", "function": {"name": name}}
        response_format = body.get("response_format")
        if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
            schema = _schema_of(response_format)
            body["response_format"] = (
                {"type": "json_object"}
                if schema is None
                else {"type": "json_object", "schema": schema}
            )
        return bytes(memoryview(orjson.dumps(body)))

    def parse_event(self, data: str) -> UpstreamChunk:
        if data == "[DONE]":
            return UpstreamChunk(done=True)
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"upstream sent an event that is not JSON: {data[:200]!r}") from exc
        if not isinstance(obj, dict):
            raise ValueError(f"upstream sent an event that is not a JSON object: {data[:200]!r}")
        choices = obj.get("choices")
        if choices and isinstance(choices[0], dict):
            self._fix_forced_call(str(obj.get("id")), choices[0])
        return parse_openai_chunk(obj)

    def _fix_forced_call(self, answer: str, choice: dict[str, Any]) -> None:
        """A forced call's deltas as OpenAI streams them: id, type and name in the call's
        first delta only, no legacy ``function_call`` beside ``tool_calls``; and calls whose
        arguments are not whole JSON (cut by ``max_tokens``: its grammar lets a call end only
        when its JSON is whole) end with ``length``, not ``tool_calls``."""
        delta = choice.get("delta")
        calls = delta.get("tool_calls") if isinstance(delta, dict) else None
        if isinstance(delta, dict) and isinstance(calls, list) and calls:
            delta.pop("function_call", None)
            seen = self._calls.get(answer)
            if seen is None:
                seen = self._calls[answer] = {}
                while len(self._calls) > _MAX_OPEN_CALLS:
                    self._calls.popitem(last=False)
            fixed = []
            for call in calls:
                function = call.get("function") if isinstance(call, dict) else None
                if not isinstance(call, dict) or not isinstance(function, dict):
                    fixed.append(call)
                    continue
                index = call.get("index", 0)
                arguments = str(function.get("arguments") or "")
                if index in seen:
                    seen[index].append(arguments)
                    call = {"index": index, "function": {"arguments": arguments}}
                else:
                    seen[index] = [arguments]
                fixed.append(call)
            delta["tool_calls"] = fixed
        if choice.get("finish_reason") == "tool_calls":
            seen = self._calls.pop(answer, None)
            if seen and not all(_whole_json("".join(parts)) for parts in seen.values()):
                choice["finish_reason"] = "length"


def _whole_json(text: str) -> bool:
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return True


# Known to every Upstream by its name (UpstreamConfig.dialect): the local model's upstream uses it.
DIALECTS[LlamaServerDialect.name] = LlamaServerDialect()
