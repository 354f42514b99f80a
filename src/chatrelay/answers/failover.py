"""How an answer survives a failing upstream: the retry policy and the continuation prompt.

Before the first byte a failed attempt is simply retried: on another upstream first, then on
the same ones with exponential back-off (honouring ``Retry-After``), until a deadline. After
part of the answer has been streamed, the answer *continues* on another upstream: it gets the
conversation, the partial answer as the assistant's, and an instruction to go on from there,
so that the client sees one answer.
"""

from __future__ import annotations

from dataclasses import dataclass

from chatrelay.upstreams.dialects import UpstreamMessage

CONTINUE_INSTRUCTION = (
    "Your previous answer was cut off. Continue it exactly where it stopped: do not repeat "
    "anything already written, do not start over, and do not mention the interruption."
)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    deadline: float = 60.0  # seconds after the request began; no new attempt past it
    max_failovers: int = 2  # continuations on another upstream after a mid-answer failure
    first_backoff: float = 0.5
    max_backoff: float = 8.0


def continuation_messages(messages: list[UpstreamMessage], partial: str) -> list[UpstreamMessage]:
    """The conversation so far plus the partial answer, asking the model to go on."""
    return [
        *messages,
        {"role": "assistant", "content": partial},
        {"role": "user", "content": CONTINUE_INSTRUCTION},
    ]
