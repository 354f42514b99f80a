"""How an answer survives a failing upstream: the retry policy and the continuation prompt.

Before the first byte a failed attempt is simply retried: on another upstream first, then on
the same ones with exponential back-off (honouring ``Retry-After``), until a deadline. After
part of the answer has been streamed, the answer *continues* on another upstream: it gets the
conversation, the partial answer as the assistant's, and an instruction to go on from there,
so that the client sees one answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from chatrelay.errors import UPSTREAM, ChatRelayError
from chatrelay.observability import FAILOVERS, UPSTREAM_ERRORS
from chatrelay.upstreams.client import Upstream, UpstreamFailure
from chatrelay.upstreams.dialects import UpstreamMessage
from chatrelay.upstreams.registry import UpstreamRegistry, unreachable_failure

log = logging.getLogger(__name__)

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


class Failing(Protocol):
    """What the failover loop reads and counts of its answer (answers/answer.py ``Answer``)."""

    model: str
    registry: UpstreamRegistry
    policy: RetryPolicy
    upstreams: frozenset[str] | None
    started_at: float
    spliceable: bool
    failovers: int

    @property
    def answered(self) -> bool: ...


async def until_answered(answer: Failing, attempt: Callable[[Upstream], Awaitable[None]]) -> None:
    """Attempts on the registry's upstreams until the answer is complete or nothing is left:
    a retry (another upstream, then back-off) before its first token, a continuation after."""
    policy, registry, model = answer.policy, answer.registry, answer.model
    deadline = answer.started_at + policy.deadline
    failed: set[str] = set()
    refused: list[UpstreamFailure] = []  # this round's "nobody there" failures
    last: UpstreamFailure | None = None
    backoff = policy.first_backoff
    while True:
        upstream = registry.pick(model, avoid=frozenset(failed), only=answer.upstreams)
        if upstream is None:  # every upstream of the model is paused by its breaker
            dead = registry.unreachable(model)
            if dead is not None and not answer.answered:
                raise dead
            pause = registry.retry_in(model)
            if time.monotonic() + pause > deadline:
                raise last or _unavailable(model, pause)
            await asyncio.sleep(max(pause, 0.05))
            continue
        try:
            await attempt(upstream)
        except UpstreamFailure as failure:
            registry.failed(upstream, failure)
            log.warning("upstream %s failed: %s", upstream.config.name, failure.kind)
            UPSTREAM_ERRORS.labels(upstream.config.name, failure.kind).inc()
            if not failure.retryable:
                raise
            failed.add(upstream.config.name)
            last = failure
            if failure.nothing_there:
                refused.append(failure)
            if answer.answered:  # part of the answer is out: continue it elsewhere, at once
                if not answer.spliceable:
                    raise  # part of a tool call or of JSON is out: it cannot be continued
                answer.failovers += 1
                FAILOVERS.labels(model).inc()
                if answer.failovers > policy.max_failovers:
                    raise
                # The continuation gets its own retry window, counted from this failure.
                deadline = time.monotonic() + policy.deadline
            elif failed >= _usable_names(answer):
                if len(refused) == len(failed):
                    # Nobody listens at any of them (or no host of that name): a wrong
                    # URL or a server that is down, which waiting does not mend.
                    raise unreachable_failure(refused) from None
                # A whole round failed: back off (the model may be loading), then again.
                pause = max(backoff, failure.retry_after or 0.0)
                if time.monotonic() + pause > deadline:
                    raise
                await asyncio.sleep(pause)
                backoff = min(backoff * 2, policy.max_backoff)
                failed.clear()
                refused.clear()
            continue
        except BaseException:  # stopped, shutting down: the upstream did nothing wrong
            registry.abandoned(upstream)
            raise
        registry.succeeded(upstream)
        return


def _usable_names(answer: Failing) -> set[str]:
    """The upstreams that could answer now: a round has failed once each one has."""
    return {u.config.name for u in answer.registry.usable_for(answer.model, answer.upstreams)}


def _unavailable(model: str, retry_in: float) -> ChatRelayError:
    seconds = max(1, round(retry_in))
    return ChatRelayError(
        503,
        f"No upstream for model '{model}' is available right now: each one failed "
        f"repeatedly and is paused. Try again in {seconds} s.",
        code="upstream_unavailable",
        type=UPSTREAM,
        headers={"Retry-After": str(seconds)},
    )
