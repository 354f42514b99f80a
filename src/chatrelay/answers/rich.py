"""What an answer says besides its text, gathered from the deltas that relay it.

Streamed deltas are relayed to clients whole, as they came (answers/answer.py); this gathers them
into the assistant message they make up, for the stored conversation (sent back upstream
with the history) and for whole (non-streamed) answers: ``tool_calls`` assembled from their
fragments the way OpenAI's SDKs assemble them (by ``index``: ``id``, ``type`` and the name
from the call's first delta, ``arguments`` concatenated), ``reasoning_content`` (or vLLM's
``reasoning``) and ``refusal`` concatenated, ``logprobs`` content lists joined, and any other
field kept (strings concatenated, anything else the last value).

Made only when the first such delta comes: a plain text answer has none. Logprobs are not
gathered here but by the answer itself (``Answer.logprobs``), as they come.
"""

from __future__ import annotations

from typing import Any


class RichParts:
    __slots__ = ("calls", "fields")

    def __init__(self) -> None:
        self.calls: dict[int, dict[str, Any]] = {}
        self.fields: dict[str, Any] = {}

    def take(self, delta: dict[str, Any]) -> None:
        """Gather one delta (its text is the answer's, kept elsewhere)."""
        for key, value in delta.items():
            if key == "content":
                continue
            if key == "tool_calls" and isinstance(value, list):
                for fragment in value:
                    if isinstance(fragment, dict):
                        self._call(fragment)
            elif isinstance(value, str):  # reasoning, refusal: pieces, joined when asked
                pieces = self.fields.get(key)
                if isinstance(pieces, _Pieces):
                    pieces.append(value)
                else:
                    self.fields[key] = _Pieces([value])
            elif key == "function_call" and isinstance(value, dict):  # the legacy call
                self._call({"index": -1, "function": value})
            else:
                self.fields[key] = value

    def _call(self, fragment: dict[str, Any]) -> None:
        index = fragment.get("index")
        if isinstance(index, int):
            key = index
        elif self.calls and not fragment.get("id"):  # no index, no id: the last call goes on
            key = max(self.calls)
        else:
            key = len(self.calls)
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
                target.setdefault("arguments", _Pieces()).append(function["arguments"])

    def tool_calls(self) -> list[dict[str, Any]]:
        calls = []
        for index in sorted(i for i in self.calls if i >= 0):
            call = self.calls[index]
            function = dict(call["function"])
            function["arguments"] = "".join(function.get("arguments", ()))
            calls.append({**call, "function": function})
        return calls

    def message_fields(self, *, has_text: bool) -> dict[str, Any] | None:
        """The assistant message's fields besides its text (``content: None`` when it says
        nothing but calls tools or refuses, as OpenAI's messages do)."""
        fields: dict[str, Any] = {
            key: "".join(value) if isinstance(value, _Pieces) else value
            for key, value in self.fields.items()
        }
        if -1 in self.calls:  # the legacy function_call, its arguments joined
            legacy = self.calls[-1]["function"]
            fields["function_call"] = {
                "name": legacy.get("name", ""),
                "arguments": "".join(legacy.get("arguments", ())),
            }
        if any(index >= 0 for index in self.calls):
            fields["tool_calls"] = self.tool_calls()
        if fields and not has_text and ("tool_calls" in fields or "refusal" in fields):
            fields["content"] = None
        return fields or None


class _Pieces(list[str]):
    """A string field's fragments, joined once when asked (never a copy per fragment)."""
