"""Sign-in throttling shared through Redis, under the limits' fail-open policy.

The throttle itself is :class:`chatrelay.limits.redis_backend.RedisSignInThrottle`; this
wrapper decides what a Redis outage means: checking refuses with a 503 (or lets the attempt
through when failing open), recording a failure or a reset is skipped with a warning.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from chatrelay.auth.throttle import SignInThrottle
from chatrelay.limits.refusals import LimitStoreDown

if TYPE_CHECKING:
    from chatrelay.limits.quotas import Quotas

log = logging.getLogger(__name__)


class FailSafeSignInThrottle:
    """A shared sign-in throttle that follows the limits' fail-open policy when Redis is down."""

    def __init__(self, inner: SignInThrottle, quotas: Quotas) -> None:
        self._inner = inner
        self._quotas = quotas

    async def attempt(self, keys: Sequence[str], *, attempt_id: str) -> float | None:
        try:
            return await self._inner.attempt(keys, attempt_id=attempt_id)
        except LimitStoreDown as exc:
            self._quotas.store_down(exc)  # 503 unless failing open
            return None

    async def forgive(self, key: str, *, attempt_id: str) -> None:
        try:
            await self._inner.forgive(key, attempt_id=attempt_id)
        except LimitStoreDown:
            log.warning("could not forgive a sign-in attempt: the limits store is down")

    async def reset(self, key: str) -> None:
        try:
            await self._inner.reset(key)
        except LimitStoreDown:
            log.warning("could not reset a sign-in throttle: the limits store is down")
