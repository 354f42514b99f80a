"""One attempt of an answer on one upstream: what it does with each chunk.

``Attempt.take`` runs in the socket's read callback (upstreams/client.py), once per chunk:
it appends the token to the answer's event buffer, counts it against ``max_tokens`` (with a
little slack), times the first token and the gaps, and adds the attempt's usage to what the
earlier attempts used. It knows the answer only as :class:`Relayed`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from chatrelay.answers.events import EventBuffer
from chatrelay.observability import FIRST_TOKEN, TOKEN_GAP
from chatrelay.upstreams.chunk import UpstreamChunk, Usage
from chatrelay.upstreams.dialects import GenerationParams
from chatrelay.upstreams.health import ModelHealth

log = logging.getLogger(__name__)

# Content events an attempt may send past the max_tokens it was asked for (a token split in
# two events, a last empty one): past that the upstream ignores max_tokens, and the attempt
# is ended as if it ran out of them. Events, not tokens: counting is one integer compare.
MAX_TOKENS_SLACK = 16

# What a stored token count can hold (an SQL INTEGER): an upstream's larger number is a lie.
MAX_TOKEN_COUNT = 2**31 - 1


@dataclass(frozen=True, slots=True)
class AttemptUse:
    """What one attempt asked of its upstream and got, for its cost (upstreams/pricing.py):
    every attempt of an answer, failovers and retries included, is paid for on its own."""

    upstream: str
    requested_tokens: int  # the max_tokens it was sent (a Livepeer gateway bills these)
    accepted: bool  # the upstream answered 200: it read the prompt, and bills it
    completion_tokens: int  # what it generated (its usage, else its content events)
    prompt_tokens: int | None  # as its usage said; None when it said nothing
    # How it went, for which upstream earns its traffic: ok, stall, cut, error, stopped.
    outcome: str = "ok"
    first_token_s: float | None = None  # from its request to its first token
    duration_s: float = 0.0  # from its request to its end


class Relayed(Protocol):
    """What an attempt reads and writes of its answer (answers/answer.py ``Answer``)."""

    model: str
    params: GenerationParams
    buffer: EventBuffer
    usage: Usage | None
    finish_reason: str | None
    first_token_at: float | None
    served_by: list[str]
    stop_requested: bool

    def cut_at_length(self) -> bool: ...

    def relay_rich(self, chunk: UpstreamChunk, delta: dict[str, Any]) -> None: ...


class Attempt:
    """What one attempt does with each chunk: ``take`` runs in the socket's read callback.

    Slots, not a closure over the attempt's locals (a cell per variable): smaller per open
    stream (docs/performance.md#attempt)."""

    __slots__ = (
        "answer",
        "append",
        "before",
        "began",
        "first_at",
        "gap",
        "health",
        "last",
        "left",
        "name",
        "sent",
        "waiting",
    )

    def __init__(
        self, answer: Relayed, name: str, health: ModelHealth, max_tokens: int | None = None
    ) -> None:
        self.answer, self.name, self.health = answer, name, health
        # Content events this attempt may still send: the max_tokens it was sent, and slack.
        sent = self.sent = answer.params.max_tokens if max_tokens is None else max_tokens
        self.left = sent + MAX_TOKENS_SLACK
        self.append = answer.buffer.append_content
        self.waiting = True  # for the first token
        self.began = self.last = time.monotonic()
        self.first_at: float | None = None
        self.gap: Callable[[float], None] = _no_gap
        self.before = answer.usage  # what the earlier attempts used

    def completion_tokens(self) -> int:
        """What this attempt generated, by its upstream's usage (0 when it reported none)."""
        usage, before = self.answer.usage, self.before
        if usage is None:
            return 0
        return usage.completion_tokens - (before.completion_tokens if before else 0)

    def use(self, *, accepted: bool, events: int, outcome: str = "ok") -> AttemptUse:
        """The attempt's record once it is over; ``events``: the content events it sent."""
        usage, before = self.answer.usage, self.before
        reported = usage is not None and usage is not before
        prompt = None
        if reported and usage is not None:
            prompt = usage.prompt_tokens - (before.prompt_tokens if before else 0)
        completion = self.completion_tokens() if reported else events
        first = self.first_at
        return AttemptUse(
            self.name,
            self.sent,
            accepted,
            max(completion, 0),
            None if prompt is None else max(prompt, 0),
            outcome,
            None if first is None else first - self.began,
            time.monotonic() - self.began,
        )

    def take(self, chunk: UpstreamChunk) -> bool:
        answer = self.answer
        if answer.stop_requested:  # stopped: what was already on its way is not the answer's
            return True
        rich = chunk.delta
        if chunk.content or rich is not None:
            left = self.left
            if not left:  # past max_tokens and the slack: not the answer's any more
                return answer.cut_at_length()
            self.left = left - 1
            now = time.monotonic()
            if self.waiting:
                self.waiting = False
                self.first_at = now
                began, name = self.began, self.name
                self.health.first_token(now - began)
                self.health.request_ended()
                answer.served_by.append(name)
                FIRST_TOKEN.labels(answer.model, name).observe(now - began)
                # Label children resolved once per attempt, not per token.
                self.gap = TOKEN_GAP.labels(answer.model, name).observe
                if answer.first_token_at is None:
                    answer.first_token_at = now
            else:
                self.gap(now - self.last)
            self.last = now
            if rich is None:
                self.append(orjson.dumps(chunk.content)[1:-1])
            else:
                answer.relay_rich(chunk, rich)
        if chunk.usage is not None:
            # Usage of every attempt counts: this attempt's running total on top of what
            # the earlier attempts used.
            answer.usage = _plus(self.before, chunk.usage)
        if chunk.finish_reason:
            answer.finish_reason = chunk.finish_reason
        return False


def _no_gap(seconds: float) -> None:
    """Stands in for the gap histogram until an attempt's first token resolves its labels."""


def _plus(earlier: Usage | None, current: Usage) -> Usage:
    if earlier is None:
        return current
    return Usage(
        earlier.prompt_tokens + current.prompt_tokens,
        earlier.completion_tokens + current.completion_tokens,
    )


def believed_usage(usage: Usage, max_tokens: int, *, answer_id: str) -> Usage:
    """The upstream's usage as far as it can be believed, once, at the end (not per chunk):
    no negative count (a credit), no more completion tokens than the request allowed,
    nothing a stored count cannot hold."""
    prompt = min(max(usage.prompt_tokens, 0), MAX_TOKEN_COUNT)
    completion = min(max(usage.completion_tokens, 0), max_tokens)
    if (prompt, completion) == (usage.prompt_tokens, usage.completion_tokens):
        return usage
    log.warning(
        "answer %s: upstream usage %d+%d not believed, counted as %d+%d",
        answer_id,
        usage.prompt_tokens,
        usage.completion_tokens,
        prompt,
        completion,
    )
    return Usage(prompt, completion)
