"""The sign-in throttle as the settings make it (limits/sign_in.py): in this process, or over
Redis under the limits' fail-open policy when Redis cannot be reached."""

from __future__ import annotations

import socket

import pytest

from chatrelay.config import Settings
from chatrelay.limits.redis_backend import RedisLimits
from chatrelay.limits.refusals import LimitStoreDown
from chatrelay.limits.sign_in import MemorySignInThrottle, new_attempt_id, sign_in_throttle


def refuse(exc: LimitStoreDown) -> None:
    raise RuntimeError("503") from exc


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_without_redis_it_counts_in_this_process() -> None:
    settings = Settings(sign_in_max_failures=2, sign_in_window=60)
    throttle = sign_in_throttle(settings, store_down=refuse)
    assert isinstance(throttle, MemorySignInThrottle)
    keys = ["user:ann", "ip:10.0.0.1"]
    assert await throttle.attempt(keys, attempt_id=new_attempt_id()) is None
    last = new_attempt_id()
    assert await throttle.attempt(keys, attempt_id=last) is None
    wait = await throttle.attempt(keys, attempt_id=new_attempt_id())
    assert wait is not None and 0 < wait <= 60
    await throttle.forgive("ip:10.0.0.1", attempt_id=last)  # only that attempt's count
    assert await throttle.attempt(["ip:10.0.0.1"], attempt_id=new_attempt_id()) is None
    await throttle.reset("user:ann")
    assert await throttle.attempt(["user:ann"], attempt_id=new_attempt_id()) is None


async def test_with_redis_down_checking_follows_the_policy_and_the_rest_is_skipped() -> None:
    settings = Settings(sign_in_max_failures=2, sign_in_window=60)
    redis = RedisLimits.connect(
        f"redis://127.0.0.1:{closed_port()}/0", prefix="chatrelay-test:", timeout=1
    )
    outages: list[LimitStoreDown] = []
    try:
        failing_open = sign_in_throttle(settings, redis, store_down=outages.append)
        assert await failing_open.attempt(["user:ann"], attempt_id="a") is None
        assert len(outages) == 1
        await failing_open.forgive("user:ann", attempt_id="a")  # a warning, not an error
        await failing_open.reset("user:ann")
        assert len(outages) == 1

        failing_closed = sign_in_throttle(settings, redis, store_down=refuse)
        with pytest.raises(RuntimeError, match="503"):
            await failing_closed.attempt(["user:ann"], attempt_id="b")
    finally:
        await redis.close()
