"""What an answer says besides its text, gathered from the deltas that relay it.

Streamed deltas are relayed to clients whole, as they came (chat/job.py); this gathers them
into the assistant message they make up, for the stored conversation (sent back upstream
with the history) and for whole (non-streamed) answers: ``tool_calls`` assembled from their
fragments the way OpenAI's SDKs assemble them (by ``index``: ``id``, ``type`` and the name
from the call's first delta, ``arguments`` concatenated), ``reasoning_content`` (or vLLM's
``reasoning``) and ``refusal`` concatenated, ``logprobs`` content lists joined, and any other
field kept (strings concatenated, anything else the last value).

Made only when the first such delta comes: a plain text answer has none.
"""

from __future__ import annotations

from typing import Any


class RichParts:
    __slots__ = ("calls", "fields", "logprobs")

    def __init__(self) -> None:
        self.calls: dict[int, dict[str, Any]] = {}
        self.fields: dict[str, Any] = {}
        self.logprobs: list[Any] | None = None

    def take(self, delta: dict[str, Any], logprobs: Any) -> bool:
        """Gather one delta (without its text); True when it carries a tool call."""
        calling = False
        for key, value in delta.items():
            if key == "content":
                continue
            if key == "tool_calls" and isinstance(value, list):
                calling = True
                for fragment in value:
                    if isinstance(fragment, dict):
                        self._call(fragment)
            elif isinstance(value, str):
                self.fields[key] = self.fields.get(key, "") + value
            else:
                calling = calling or key == "function_call"
                self.fields[key] = value
        if isinstance(logprobs, dict) and isinstance(logprobs.get("content"), list):
            self.logprobs = (self.logprobs or []) + logprobs["content"]
        return calling

    def _call(self, fragment: dict[str, Any]) -> None:
        index = fragment.get("index")
        key = index if isinstance(index, int) else len(self.calls)
        call = self.calls.get(key)
        if call is None:
            call = self.calls[key] = {"id": "", "type": "function", "function": {}}
        for name in ("id", "type"):
            if isinstance(fragment.get(name), str):
                call[name] = fragment[name]
        function = fragment.get("function")
        if isinstance(function, dict):
            target = call["function"]
            if isinstance(function.get("name"), str):
                target["name"] = function["name"]
            if isinstance(function.get("arguments"), str):
                target["arguments"] = target.get("arguments", "") + function["arguments"]

    def tool_calls(self) -> list[dict[str, Any]]:
        calls = [self.calls[index] for index in sorted(self.calls)]
        for call in calls:
            call["function"].setdefault("arguments", "")
        return calls

    def message_fields(self, *, has_text: bool) -> dict[str, Any] | None:
        """The assistant message's fields besides its text (``content: None`` when it says
        nothing but calls tools or refuses, as OpenAI's messages do)."""
        fields: dict[str, Any] = dict(self.fields)
        if self.calls:
            fields["tool_calls"] = self.tool_calls()
        if fields and not has_text and ("tool_calls" in fields or "refusal" in fields):
            fields["content"] = None
        return fields or None

    def logprobs_of_answer(self) -> dict[str, Any] | None:
        """A whole answer's ``choices[0].logprobs``."""
        if self.logprobs is None:
            return None
        return {"content": self.logprobs, "refusal": None}
