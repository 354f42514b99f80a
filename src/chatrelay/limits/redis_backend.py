"""The limits shared through Redis, so that every chatrelay process enforces the same ones.

Usage::

    redis = RedisLimits.connect("redis://127.0.0.1:6379/0", prefix="chatrelay:", timeout=1)
    redis.budgets, redis.rates, redis.streams, redis.sign_ins   # the Protocol implementations
    await redis.close()

Every call is one atomic Lua script (``redis_scripts``). A Redis that cannot be reached raises
:class:`LimitStoreDown` quickly (short timeouts, one retry for a stale pooled connection), and
the caller decides whether that refuses the request.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Iterable, Sequence
from typing import Any, TypeVar

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from chatrelay.limits import redis_scripts as lua
from chatrelay.limits.budget import BudgetState
from chatrelay.limits.refusals import LimitStoreDown, redacted
from chatrelay.setting_types import RateRule

T = TypeVar("T")
# A script call waiting for its round trip: the script, its keys and args, its answer.
_Call = tuple[str, list[str], list[Any], "asyncio.Future[Any]"]
_UNREACHABLE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


class RedisLimits:
    def __init__(self, client: aioredis.Redis, *, prefix: str, url: str) -> None:
        self.client = client
        self.prefix = prefix
        self.name = f"Redis at {redacted(url)}"
        self._scripts = {
            name: client.register_script(getattr(lua, name))
            for name in (
                "RESERVE", "SETTLE", "STATE", "RENEW", "RATE_HIT", "SLOT_ACQUIRE",
                "THROTTLE_ATTEMPT",
            )
        }  # fmt: skip
        # The script calls of this turn of the event loop, sent together (``run``).
        self._calls: list[_Call] = []
        self._sending = False
        self._in_flight: set[asyncio.Task[None]] = set()
        self.budgets = RedisBudgetStore(self)
        self.rates = RedisRateLimiter(self)
        self.streams = RedisStreamSlots(self)

    @classmethod
    def connect(cls, url: str, *, prefix: str, timeout: float) -> RedisLimits:
        client = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            # One quick retry covers a pooled connection that a Redis restart closed; more (or
            # backing off) would only make a refusal during an outage slower.
            retry=Retry(NoBackoff(), 1),
        )
        return cls(client, prefix=prefix, url=url)

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    async def run(self, script: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """One script's answer. The calls made in one turn of the event loop (the limit checks
        of a burst of answers admitted together) go to Redis in one pipeline: one round trip
        for them all, not one each; each still gets its own answer or error."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Any] = loop.create_future()
        self._calls.append((script, list(keys), list(args), done))
        if not self._sending:
            self._sending = True
            loop.call_soon(self._send)
        return await done

    def _send(self) -> None:
        self._sending = False
        calls, self._calls = self._calls, []
        if calls:
            task = asyncio.get_running_loop().create_task(self._pipeline(calls))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)

    async def _pipeline(self, calls: list[_Call]) -> None:
        try:
            if len(calls) == 1:  # alone: no pipeline to set up
                script, keys, args, _ = calls[0]
                answers: list[Any] = [
                    await self._guard(self._scripts[script](keys=keys, args=args))
                ]
            else:
                async with self.client.pipeline(transaction=False) as pipe:
                    for script, keys, args, _ in calls:
                        await self._scripts[script](keys=keys, args=args, client=pipe)
                    answers = await self._guard(pipe.execute(raise_on_error=False))
        except BaseException as error:  # Redis unreachable: every call of the round fails
            for *_, done in calls:
                if not done.done():
                    done.set_exception(error)
            if isinstance(error, asyncio.CancelledError):
                raise
            return
        for (*_, done), answer in zip(calls, answers, strict=True):
            if done.done():
                continue
            if isinstance(answer, Exception):
                done.set_exception(answer)
            else:
                done.set_result(answer)

    async def _guard(self, call: Awaitable[T]) -> T:
        try:
            return await call
        except _UNREACHABLE as exc:
            raise LimitStoreDown(f"{self.name} is unreachable: {exc}") from exc

    async def ping(self) -> None:
        await self._guard(self.client.ping())

    async def delete(self, key: str) -> None:
        await self._guard(self.client.delete(key))

    async def close(self) -> None:
        await self.client.aclose()


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


class RedisBudgetStore:
    def __init__(self, redis: RedisLimits) -> None:
        self._redis = redis

    def _keys(self, account: str) -> tuple[str, str]:
        # One hash tag per account, so its two keys live on one node of a Redis Cluster.
        base = self._redis.key("budget", "{" + account + "}")
        return base, base + ":leases"

    async def reserve(
        self,
        *,
        account: str,
        lease_id: str,
        tokens: int,
        limit: int,
        lease: float,
        expires_at: float,
        seed: int | None,
    ) -> BudgetState | None:
        args = [lease_id, tokens, limit, _ms(lease), int(expires_at), "" if seed is None else seed]
        answer = await self._redis.run("RESERVE", self._keys(account), args)
        if answer is None:
            return None
        granted, used, reserved = answer
        return BudgetState(bool(granted), int(used), int(reserved))

    async def settle(
        self, *, account: str, lease_id: str, tokens: int, expires_at: float, seed: int | None
    ) -> int | None:
        args = [lease_id, tokens, int(expires_at), "" if seed is None else seed]
        answer = await self._redis.run("SETTLE", self._keys(account), args)
        return None if answer is None else int(answer)

    async def state(self, *, account: str) -> BudgetState | None:
        answer = await self._redis.run("STATE", self._keys(account), [])
        return None if answer is None else BudgetState(True, int(answer[0]), int(answer[1]))

    async def renew(self, *, leases: Sequence[tuple[str, str]], lease: float) -> None:
        keys = [self._keys(account)[1] for account, _ in leases]
        await self._redis.run("RENEW", keys, [_ms(lease), "0", *(i for _, i in leases)])


class RedisRateLimiter:
    def __init__(self, redis: RedisLimits) -> None:
        self._redis = redis

    async def hit(self, *, key: str, rule: RateRule) -> float | None:
        args = [rule.limit, _ms(rule.window), secrets.token_hex(8)]
        wait_ms = await self._redis.run("RATE_HIT", [self._redis.key("rate", key)], args)
        return None if int(wait_ms) < 0 else int(wait_ms) / 1000


class RedisStreamSlots:
    def __init__(self, redis: RedisLimits) -> None:
        self._redis = redis

    def _key(self, key: str) -> str:
        return self._redis.key("streams", key)

    async def acquire(self, *, key: str, slot_id: str, limit: int, lease: float) -> bool:
        args = [limit, _ms(lease), slot_id]
        return bool(await self._redis.run("SLOT_ACQUIRE", [self._key(key)], args))

    async def release(self, *, key: str, slot_id: str) -> None:
        await self._redis._guard(self._redis.client.zrem(self._key(key), slot_id))

    async def renew(self, *, slots: Sequence[tuple[str, str]], lease: float) -> None:
        keys = [self._key(key) for key, _ in slots]
        await self._redis.run("RENEW", keys, [_ms(lease), "1", *(s for _, s in slots)])


class RedisSignInThrottle:
    """:class:`chatrelay.limits.sign_in.SignInThrottle` shared by every process."""

    def __init__(self, redis: RedisLimits, *, max_failures: int, window: float) -> None:
        self._redis = redis
        self.max_failures = max_failures
        self.window = window

    def _keys(self, keys: Iterable[str]) -> list[str]:
        return [self._redis.key("sign-in", key) for key in keys]

    async def attempt(self, keys: Sequence[str], *, attempt_id: str) -> float | None:
        args = [self.max_failures, _ms(self.window), attempt_id]
        wait_ms = int(await self._redis.run("THROTTLE_ATTEMPT", self._keys(keys), args))
        return None if wait_ms < 0 else wait_ms / 1000

    async def forgive(self, key: str, *, attempt_id: str) -> None:
        client = self._redis.client
        await self._redis._guard(client.zrem(self._keys([key])[0], attempt_id))

    async def reset(self, key: str) -> None:
        await self._redis.delete(self._keys([key])[0])
