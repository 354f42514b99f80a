"""The limit checks of a burst go to Redis together (limits/redis_backend.py): the script calls
of one turn of the event loop are one pipeline, one round trip, and each still gets its own
answer or its own error."""

from __future__ import annotations

import asyncio
from typing import Any

from chatrelay.limits.redis_backend import RedisLimits
from chatrelay.setting_types import parse_rate_limit


async def test_the_calls_of_a_burst_are_one_round_trip_each_answered_alone(
    redis_limits: dict[str, str],
) -> None:
    limits = RedisLimits.connect(
        redis_limits["redis_url"], prefix=redis_limits["redis_prefix"], timeout=2
    )
    pipelines = 0
    opened = limits.client.pipeline

    def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal pipelines
        pipelines += 1
        return opened(*args, **kwargs)

    limits.client.pipeline = counted  # type: ignore[method-assign]
    rule = parse_rate_limit("2/minute")
    assert rule is not None
    try:
        # A key of the wrong type: its script fails, and only its caller sees it.
        await limits.client.set(limits.key("rate", "broken"), "not a sorted set")
        keys = ["a", "a", "a", "b", "broken"]
        answers = await asyncio.gather(
            *(limits.rates.hit(key=key, rule=rule) for key in keys), return_exceptions=True
        )
        alone = await limits.rates.hit(key="c", rule=rule)
    finally:
        await limits.close()
    assert pipelines == 1  # five calls, one round trip; the lone one after it, none
    waits, broken = answers[:4], answers[4]
    assert waits[0] is None and waits[1] is None  # two fit the rule's 2 per minute...
    assert isinstance(waits[2], float) and waits[2] > 0  # ...the third waits
    assert waits[3] is None  # another key's
    assert isinstance(broken, Exception) and "WRONGTYPE" in str(broken)
    assert alone is None
