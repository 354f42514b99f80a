"""Token budgets: per user and period, reserved before a request and settled after it.

Usage::

    budget = TokenBudget(MemoryBudgetStore(), period="day", lease=60, ledger=sum_from_db)
    held = await budget.reserve(user_id=u, lease_id=rid, tokens=600, limit=50_000, now=now)
    ...                                   # BudgetExceeded if it does not fit
    await budget.settle(held, tokens=142) # the real usage; the rest of the hold is freed

A reservation is a lease: renewed while its answer runs (``store.renew``), released by the
store itself if nobody renews it (a crashed process). The check and the hold are one atomic
step in the store, so parallel requests can never hold more than the budget between them.

The store counts what was settled in each period; a period it has never seen (a fresh
process, a flushed Redis) starts from the usage ledger in the database, so a restart does not
hand out a fresh budget.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from chatrelay.limits.periods import Period, PeriodWindow, period_window
from chatrelay.limits.refusals import LimitStoreDown

# How long a period's counters outlive its end: long enough for an answer that started in it
# to be settled into it.
PERIOD_GRACE = timedelta(days=1)

Ledger = Callable[[str, PeriodWindow], Awaitable[int]]


@dataclass(frozen=True, slots=True)
class BudgetState:
    granted: bool
    used: int  # settled this period
    reserved: int  # held by requests still running


class BudgetStore(Protocol):
    """Where budgets are counted. ``account`` is one user in one period.

    ``reserve`` and ``settle`` answer None (and change nothing) when the account is unknown
    and no ``seed`` (its usage so far, from the ledger) was given.
    """

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
        """Hold ``tokens`` if used + reserved + tokens <= limit, atomically."""
        ...

    async def settle(
        self, *, account: str, lease_id: str, tokens: int, expires_at: float, seed: int | None
    ) -> int | None:
        """Drop the lease and count ``tokens`` as used; the new used total."""
        ...

    async def state(self, *, account: str) -> BudgetState | None: ...

    async def renew(self, *, leases: Sequence[tuple[str, str]], lease: float) -> None:
        """Push out the expiry of these (account, lease_id) leases; expired ones stay gone."""
        ...


@dataclass(slots=True)
class _Account:
    used: int
    expires_at: float
    reserved: int = 0
    leases: dict[str, tuple[int, float]] = field(default_factory=dict)
    # No lease ends before this (renewals only push ends out): pruning scans the leases only
    # once it has passed, not at every reservation (a burst of one user's answers made that
    # a scan of every held lease per answer, C² in all).
    next_end: float = math.inf

    def hold(self, lease_id: str, tokens: int, until: float) -> None:
        self.leases[lease_id] = (tokens, until)
        self.reserved += tokens
        self.next_end = min(self.next_end, until)

    def prune(self, now: float) -> None:
        if now < self.next_end:
            return
        next_end = math.inf
        for lease_id, (tokens, until) in list(self.leases.items()):
            if until <= now:
                del self.leases[lease_id]
                self.reserved -= tokens
            else:
                next_end = min(next_end, until)
        self.next_end = next_end


class MemoryBudgetStore:
    """Budgets in this process's memory: atomic because nothing in a call awaits."""

    PRUNE_ABOVE = 10_000

    def __init__(
        self,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._monotonic = monotonic
        self._wall = wall
        self._accounts: dict[str, _Account] = {}

    def _account(self, account: str, expires_at: float, seed: int | None) -> _Account | None:
        found = self._accounts.get(account)
        if found is None and seed is not None:
            if len(self._accounts) > self.PRUNE_ABOVE:
                now = self._wall()
                for key in [k for k, a in self._accounts.items() if a.expires_at <= now]:
                    del self._accounts[key]
            found = self._accounts[account] = _Account(used=seed, expires_at=expires_at)
        return found

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
        found = self._account(account, expires_at, seed)
        if found is None:
            return None
        now = self._monotonic()
        found.prune(now)
        if limit > 0 and found.used + found.reserved + tokens > limit:
            return BudgetState(False, found.used, found.reserved)
        found.hold(lease_id, tokens, now + lease)
        return BudgetState(True, found.used, found.reserved)

    async def settle(
        self, *, account: str, lease_id: str, tokens: int, expires_at: float, seed: int | None
    ) -> int | None:
        found = self._account(account, expires_at, seed)
        if found is None:
            return None
        held = found.leases.pop(lease_id, None)
        if held is not None:
            found.reserved -= held[0]
        found.used += tokens
        return found.used

    async def state(self, *, account: str) -> BudgetState | None:
        found = self._accounts.get(account)
        if found is None:
            return None
        found.prune(self._monotonic())
        return BudgetState(True, found.used, found.reserved)

    async def renew(self, *, leases: Sequence[tuple[str, str]], lease: float) -> None:
        now = self._monotonic()
        for account, lease_id in leases:
            found = self._accounts.get(account)
            held = found.leases.get(lease_id) if found is not None else None
            if found is not None and held is not None and held[1] > now:
                found.leases[lease_id] = (held[0], now + lease)


@dataclass(frozen=True, slots=True)
class Reservation:
    account: str
    lease_id: str
    tokens: int
    window: PeriodWindow
    # What the account held in all once this was held (used + reserved): how full it is.
    filled: int = 0


class BudgetExceeded(Exception):
    def __init__(self, *, needed: int, limit: int, state: BudgetState, window: PeriodWindow):
        super().__init__(f"{needed} tokens do not fit in {limit}")
        self.needed = needed
        self.limit = limit
        self.remaining = max(0, limit - state.used - state.reserved)
        self.window = window


@dataclass(frozen=True, slots=True)
class BudgetUsage:
    used: int
    reserved: int
    window: PeriodWindow


class TokenBudget:
    """The budget policy over a :class:`BudgetStore`: periods, seeding from the ledger."""

    def __init__(self, store: BudgetStore, *, period: Period, lease: float, ledger: Ledger):
        self.store = store
        self.period: Period = period
        self.lease = lease
        self._ledger = ledger
        self._window: PeriodWindow | None = None

    def window(self, now: datetime) -> PeriodWindow:
        # The period of the last answer, most often this one's too: working one out (strftime,
        # time zones) cost ~2 % of a burst's CPU, several times an answer.
        window = self._window
        if window is None or not window.start <= now < window.end:
            window = self._window = period_window(self.period, now)
        return window

    @staticmethod
    def _account(user_id: str, window: PeriodWindow) -> str:
        return f"{user_id}:{window.key}"

    @staticmethod
    def _expiry(window: PeriodWindow) -> float:
        return (window.end + PERIOD_GRACE).timestamp()

    async def reserve(
        self,
        *,
        user_id: str,
        lease_id: str,
        tokens: int,
        limit: int,
        now: datetime,
        new: bool = False,
    ) -> Reservation:
        """Hold ``tokens`` of ``user_id``'s ``limit`` this period (BudgetExceeded if they do not
        fit). ``new``: an account that cannot have used anything yet (a guest not stored
        yet), started at 0 without asking the ledger: a burst of cookieless requests read
        each new guest's empty usage, a third of what such a request cost."""
        window = self.window(now)
        account = self._account(user_id, window)

        async def hold(seed: int | None) -> BudgetState | None:
            return await self.store.reserve(
                account=account,
                lease_id=lease_id,
                tokens=tokens,
                limit=limit,
                lease=self.lease,
                expires_at=self._expiry(window),
                seed=seed,
            )

        state = await hold(0 if new else None)
        if state is None:
            state = await hold(await self._ledger(user_id, window))
            assert state is not None, "a seeded account is known"
        if not state.granted:
            raise BudgetExceeded(needed=tokens, limit=limit, state=state, window=window)
        return Reservation(account, lease_id, tokens, window, state.used + state.reserved)

    async def settle(self, reservation: Reservation, *, user_id: str, tokens: int) -> None:
        """Count ``tokens`` as used in the reservation's period and free the hold."""

        async def settle(seed: int | None) -> int | None:
            return await self.store.settle(
                account=reservation.account,
                lease_id=reservation.lease_id,
                tokens=tokens,
                expires_at=self._expiry(reservation.window),
                seed=seed,
            )

        if await settle(None) is None:
            # The store forgot the period (e.g. Redis flushed): rebuild it from the ledger,
            # which does not hold this request yet (it is written right after).
            await settle(await self._ledger(user_id, reservation.window))

    async def usage(self, *, user_id: str, now: datetime) -> BudgetUsage:
        window = self.window(now)
        state = await self.store.state(account=self._account(user_id, window))
        if state is None:
            return BudgetUsage(await self._ledger(user_id, window), 0, window)
        return BudgetUsage(state.used, state.reserved, window)

    async def renew(self, reservations: Sequence[Reservation]) -> None:
        if reservations:
            await self.store.renew(
                leases=[(r.account, r.lease_id) for r in reservations], lease=self.lease
            )

    async def report(self, *, user_id: str, limit: int, now: datetime) -> dict[str, Any]:
        """What ``user_id`` used and has left this period, with ``limit`` (0: unlimited) as the
        answer of ``GET /api/usage`` gives it."""
        window = self.window(now)
        reserved = 0
        if limit > 0:
            try:
                state = await self.usage(user_id=user_id, now=now)
                used, reserved = state.used, state.reserved
            except LimitStoreDown:
                used = await self._ledger(user_id, window)  # what is settled is in the ledger
        else:
            used = await self._ledger(user_id, window)
        return {
            "used": used,
            "reserved": reserved,
            "limit": limit or None,
            "remaining": max(0, limit - used - reserved) if limit else None,
            "period": window.period,
            "period_start": _iso(window.start),
            "resets_at": _iso(window.end),
        }


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")
