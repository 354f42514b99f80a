"""The one internal shape every upstream dialect is normalised into."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(slots=True)
class UpstreamChunk:
    """One parsed upstream event: a slotted dataclass, built once per token, so no pydantic."""

    content: str = ""
    # None while the answer goes on; "stop" or "length" on the last chunk.
    finish_reason: str | None = None
    # Cumulative usage when the upstream reports it (Livepeer: every chunk; OpenAI: the last).
    usage: Usage | None = None
    # An error the upstream reported inside a 200 stream.
    error: str | None = None
    # The upstream's explicit end marker ([DONE], or the old Livepeer {"done": true}).
    done: bool = False
    # A delta that is more than text (tool_calls, reasoning_content, refusal, unknown fields;
    # without role and content), relayed whole; None for plain text.
    delta: dict[str, Any] | None = None
    # The choice's logprobs, relayed as they came.
    logprobs: Any = None
