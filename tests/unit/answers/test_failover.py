"""The failover loop's decisions on their own (answers/failover.py): which upstream is tried
next, when to back off and for how long, when to continue elsewhere, and when to give up. The
attempts are functions that fail as an upstream would; the clock is the test's, so the
back-offs are counted, not waited for. No upstream is asked anything."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest

from chatrelay.answers import failover
from chatrelay.answers.failover import (
    CONTINUE_INSTRUCTION,
    RetryPolicy,
    continuation_messages,
    until_answered,
)
from chatrelay.config import Settings
from chatrelay.errors import ChatRelayError
from chatrelay.upstreams.client import Upstream, UpstreamConfig, UpstreamFailure
from chatrelay.upstreams.registry import UpstreamRegistry

_real_sleep = asyncio.sleep


class Clock:
    """The loop's idea of time: ``sleep`` moves it on at once and records the pause."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.pauses: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds
        await _real_sleep(0)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    made = Clock()
    monkeypatch.setattr(failover, "time", SimpleNamespace(monotonic=made.monotonic))
    monkeypatch.setattr(failover, "asyncio", SimpleNamespace(sleep=made.sleep))
    return made


def registry(*names: str, **settings: object) -> UpstreamRegistry:
    made = UpstreamRegistry(Settings(_env_file=None, **settings))  # type: ignore[call-arg]
    for name in names:
        made.add(UpstreamConfig(name=name, dialect="openai", base_url=f"http://{name}.invalid",
                                models=("m",)))  # fmt: skip
    return made


@dataclass
class FakeAnswer:
    """What until_answered reads of an answer (the ``Failing`` protocol)."""

    registry: UpstreamRegistry
    started_at: float
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    model: str = "m"
    upstreams: frozenset[str] | None = None
    spliceable: bool = True
    failovers: int = 0
    tokens: int = 0

    @property
    def answered(self) -> bool:
        return self.tokens > 0


def failure(
    kind: str = "upstream_error",
    *,
    status: int | None = 502,
    retry_after: float | None = None,
    nothing_there: bool = False,
) -> UpstreamFailure:
    made = UpstreamFailure(
        f"{kind} ({status})", kind=kind, code=kind, status=status, retry_after=retry_after
    )
    made.nothing_there = nothing_there
    return made


def attempts(
    answer: FakeAnswer, *outcomes: UpstreamFailure | int | None
) -> tuple[list[str], Callable[[Upstream], Awaitable[None]]]:
    """An attempt per outcome in turn: a failure is raised, a number of tokens is streamed
    first (then the next outcome is raised, if any, else the attempt succeeds)."""
    tried: list[str] = []
    queue = list(outcomes)

    async def attempt(upstream: Upstream) -> None:
        tried.append(upstream.config.name)
        outcome = queue.pop(0) if queue else None
        if isinstance(outcome, int):
            answer.tokens += outcome
            outcome = queue.pop(0) if queue else None
        if isinstance(outcome, UpstreamFailure):
            raise outcome

    return tried, attempt


def test_the_continuation_is_the_conversation_the_partial_answer_and_the_instruction() -> None:
    messages = [{"role": "user", "content": "Count"}]
    assert continuation_messages(messages, "1 2") == [  # type: ignore[arg-type]
        {"role": "user", "content": "Count"},
        {"role": "assistant", "content": "1 2"},
        {"role": "user", "content": CONTINUE_INSTRUCTION},
    ]
    assert messages == [{"role": "user", "content": "Count"}]  # the original is left as it was


async def test_a_failure_before_the_first_token_is_retried_on_another_upstream_at_once(
    clock: Clock,
) -> None:
    answer = FakeAnswer(registry("a", "b"), clock.now)
    tried, attempt = attempts(answer, failure())
    await until_answered(answer, attempt)
    assert len(tried) == 2 and set(tried) == {"a", "b"}
    assert clock.pauses == []


async def test_a_whole_round_failing_backs_off_doubling_up_to_the_policys_bound(
    clock: Clock,
) -> None:
    policy = RetryPolicy(deadline=60, first_backoff=0.5, max_backoff=2.0)
    answer = FakeAnswer(registry("a", breaker_failures=1000), clock.now, policy=policy)
    tried, attempt = attempts(answer, *[failure()] * 4)
    await until_answered(answer, attempt)
    assert tried == ["a"] * 5
    assert clock.pauses == [0.5, 1.0, 2.0, 2.0]


async def test_retry_after_is_honoured_when_it_is_longer_than_the_back_off(clock: Clock) -> None:
    answer = FakeAnswer(registry("a"), clock.now)
    tried, attempt = attempts(answer, failure(status=429, retry_after=3.0), failure(status=429))
    await until_answered(answer, attempt)
    assert tried == ["a"] * 3
    assert clock.pauses == [3.0, 1.0]  # the back-off went on doubling meanwhile


async def test_no_attempt_is_made_past_the_deadline(clock: Clock) -> None:
    answer = FakeAnswer(registry("a"), clock.now, policy=RetryPolicy(deadline=1.0))
    last = failure("upstream_timeout")
    tried, attempt = attempts(answer, failure(), last)
    with pytest.raises(UpstreamFailure) as raised:
        await until_answered(answer, attempt)
    assert raised.value is last  # the last failure is the answer's error
    assert tried == ["a", "a"] and clock.pauses == [0.5]  # a second pause would pass 1 s


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 422])
async def test_a_refused_request_is_not_retried(clock: Clock, status: int) -> None:
    answer = FakeAnswer(registry("a", "b"), clock.now)
    tried, attempt = attempts(answer, failure(status=status))
    with pytest.raises(UpstreamFailure):
        await until_answered(answer, attempt)
    assert len(tried) == 1 and clock.pauses == []


async def test_nobody_listening_anywhere_is_said_at_once_without_backing_off(
    clock: Clock,
) -> None:
    answer = FakeAnswer(registry("a", "b"), clock.now)
    refusals = [failure("upstream_unreachable", status=None, nothing_there=True)] * 2
    tried, attempt = attempts(answer, *refusals)
    with pytest.raises(UpstreamFailure) as raised:
        await until_answered(answer, attempt)
    assert raised.value.nothing_there and raised.value.code == "upstream_unreachable"
    assert len(tried) == 2 and clock.pauses == []


async def test_a_failure_after_the_first_token_continues_elsewhere_and_is_counted(
    clock: Clock,
) -> None:
    answer = FakeAnswer(registry("a", "b"), clock.now)
    tried, attempt = attempts(answer, 3, failure("upstream_stall"))
    await until_answered(answer, attempt)
    assert len(tried) == 2 and tried[0] != tried[1]
    assert answer.failovers == 1 and clock.pauses == []


async def test_continuations_stop_at_the_policys_bound(clock: Clock) -> None:
    policy = RetryPolicy(max_failovers=1)
    answer = FakeAnswer(registry("a", "b"), clock.now, policy=policy)
    tried, attempt = attempts(answer, 1, failure(), 1, failure())
    with pytest.raises(UpstreamFailure):
        await until_answered(answer, attempt)
    assert len(tried) == 2 and answer.failovers == 2


async def test_an_answer_that_cannot_be_spliced_is_not_continued(clock: Clock) -> None:
    """Part of a tool call or of JSON is out: a continuation could not be joined to it."""
    answer = FakeAnswer(registry("a", "b"), clock.now, spliceable=False)
    tried, attempt = attempts(answer, 1, failure())
    with pytest.raises(UpstreamFailure):
        await until_answered(answer, attempt)
    assert len(tried) == 1 and answer.failovers == 0


async def test_only_the_upstreams_that_can_carry_the_request_are_tried(clock: Clock) -> None:
    answer = FakeAnswer(registry("a", "b", "c"), clock.now, upstreams=frozenset({"b"}))
    tried, attempt = attempts(answer, failure())
    await until_answered(answer, attempt)
    assert tried == ["b", "b"] and clock.pauses == [0.5]


async def test_every_breaker_open_past_the_deadline_is_a_503_with_retry_after(
    clock: Clock,
) -> None:
    made = registry("a", breaker_failures=1, breaker_cooldown=30)
    answer = FakeAnswer(made, clock.now, policy=RetryPolicy(deadline=10))
    made.breakers["a"].failure()  # opened by earlier requests
    tried, attempt = attempts(answer)
    with pytest.raises(ChatRelayError) as raised:
        await until_answered(answer, attempt)
    assert tried == []
    assert raised.value.status == 503 and raised.value.code == "upstream_unavailable"
    assert raised.value.headers == {"Retry-After": "30"}


async def test_a_cancelled_attempt_counts_neither_for_nor_against_the_upstream(
    clock: Clock,
) -> None:
    made = registry("a", breaker_failures=1)
    answer = FakeAnswer(made, clock.now)
    breaker = made.breakers["a"]

    async def cancelled(upstream: Upstream) -> None:
        raise asyncio.CancelledError  # stopped by the user, or shutting down

    with pytest.raises(asyncio.CancelledError):
        await until_answered(answer, cancelled)
    assert breaker.state == "closed" and breaker.failures == 0


async def test_a_success_closes_the_upstreams_breaker_count(clock: Clock) -> None:
    made = registry("a", breaker_failures=3)
    answer = FakeAnswer(made, clock.now)
    tried, attempt = attempts(answer, failure(), failure())
    await until_answered(answer, attempt)
    assert tried == ["a"] * 3 and made.breakers["a"].failures == 0
