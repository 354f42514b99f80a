"""Spend limits in money, beside the token budgets: what a user, an API key, and all the
answers on one upstream may spend per budget period. Amounts are nanos (1e-9) of the
upstreams' currency (upstreams/pricing.py).

Each is a budget of its own over the same store as the token budgets (limits/budget.py), so it
is as race-safe: an answer reserves its worst case before anything is stored or sent (its
prompt and ``max_tokens`` at the dearest upstream that may answer it), and is settled to what
its attempts cost (every failover paid again). An upstream's cap is reserved on each capped
upstream that may answer; one whose cap is reached is left out of the answer, and only when
every upstream is left out is the request refused. Attempts of an upstream without a price
cost nothing here (their cost is unknown: the ledger says so).

Usage::

    spending = SpendLimits(budget, settings)
    held = await spending.reserve(admission, ask, key_limit=..., now=...)   # 429 if over
    await spending.settle(admission, paid={"lp": 1_200_000})
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from chatrelay.alerts import Alerts
from chatrelay.limits.admission import Admission
from chatrelay.limits.budget import BudgetExceeded, TokenBudget
from chatrelay.limits.refusals import spend_limit_reached
from chatrelay.store.models import User
from chatrelay.upstreams.pricing import NANOS, money

# The accounts, by who spends (the budget store keys them by period too).
USER = "spend:user:"
KEY = "spend:key:"
UPSTREAM = "spend:upstream:"


def nanos(amount: float) -> int:
    """A money amount as nanos (0 for 0: unlimited)."""
    return round(amount * NANOS)


@dataclass(frozen=True, slots=True)
class SpendAsk:
    """What an answer may cost at worst (nanos): on each upstream that may answer it, and
    the caps of those that have one."""

    worst_on: Mapping[str, int]
    caps: Mapping[str, int] = field(default_factory=dict)

    @property
    def worst(self) -> int:
        return max(self.worst_on.values(), default=0)


class SpendLimits:
    """The spend limits' policy over a budget store: per user, per key, per upstream."""

    def __init__(self, budget: TokenBudget, *, user_limit: float, guest_limit: float) -> None:
        self.budget = budget
        self.alerts: Alerts | None = None  # told how full each limit is
        self.user_limit = nanos(user_limit)
        self.guest_limit = nanos(guest_limit)

    def limit_of(self, user: User) -> int:
        """Nanos per period for ``user``: its own, else its kind's; 0 is unlimited."""
        if user.spend_limit is not None:
            return user.spend_limit
        return self.guest_limit if user.is_guest else self.user_limit

    async def reserve(
        self,
        admission: Admission,
        ask: SpendAsk,
        *,
        user_limit: int,
        key_limit: int | None,
        now: datetime,
    ) -> None:
        """Hold the worst case on the user's and the key's limits and on each capped
        upstream; a 429 naming the limit when the user's or key's cannot take it, or when no
        upstream's cap can. Each hold goes on the admission as it is made, so that a refusal
        later gives back what was held before it; the upstreams whose cap could not take the
        answer go in its ``over_cap``."""
        worst = ask.worst
        if worst <= 0:
            return
        accounts = []
        if user_limit > 0:
            accounts.append(("user", admission.user_id, user_limit, "your spend limit"))
        if key_limit and admission.api_key_id is not None:
            key = admission.api_key_id
            accounts.append(("key", key, key_limit, "this API key's spend limit"))
        for scope, subject, limit, what in accounts:
            account = (USER if scope == "user" else KEY) + subject
            try:
                held = await self.budget.reserve(
                    user_id=account,
                    lease_id=admission.id,
                    tokens=worst,
                    limit=limit,
                    now=now,
                    # A guest not stored yet (written once admitted) has spent nothing.
                    new=scope == "user" and admission.on_admitted is not None,
                )
            except BudgetExceeded as exc:
                self._filled(scope, subject, limit, limit, exc.window.key)
                raise _refusal(exc, what, now) from None
            self._filled(scope, subject, held.filled, limit, held.window.key)
            admission.spend_reservations.append(held)
        refused: BudgetExceeded | None = None
        for name, cap in ask.caps.items():
            try:
                held = await self.budget.reserve(
                    user_id=UPSTREAM + name,
                    lease_id=admission.id,
                    tokens=ask.worst_on.get(name, worst),
                    limit=cap,
                    now=now,
                )
            except BudgetExceeded as exc:
                admission.over_cap.add(name)
                refused = exc
                self._filled("upstream", name, cap, cap, exc.window.key)
                continue
            self._filled("upstream", name, held.filled, cap, held.window.key)
            admission.spend_reservations.append(held)
        if refused is not None and admission.over_cap >= set(ask.worst_on):
            raise _refusal(refused, "the spend cap of every upstream of this model", now)

    def _filled(self, scope: str, subject: str, filled: int, limit: int, period: str) -> None:
        if self.alerts is not None:
            what = "spend cap" if scope == "upstream" else "spend limit"
            self.alerts.limit_filled(
                scope, subject, what=what, filled=filled, limit=limit, period=period
            )

    def settlements(self, admission: Admission, paid: Mapping[str, int]) -> list[Awaitable[None]]:
        """The steps that settle every hold to what the answer's attempts paid (``paid``: by
        upstream, nanos): the user's and key's to the total, an upstream's to its own."""
        total = sum(paid.values())
        steps: list[Awaitable[None]] = []
        for held in admission.spend_reservations:
            account = held.account.rsplit(":", 1)[0]  # without its period
            spent = total
            if account.startswith(UPSTREAM):
                spent = paid.get(account.removeprefix(UPSTREAM), 0)
            steps.append(self.budget.settle(held, user_id=account, tokens=spent))
        return steps

    async def report(self, user: User, *, now: datetime) -> dict[str, Any]:
        """The user's spending this period, in the currency's units (``GET /api/usage``)."""
        limit = self.limit_of(user)
        state = await self.budget.report(user_id=USER + user.id, limit=limit, now=now)
        return {
            "used": money(state["used"]),
            "reserved": money(state["reserved"]),
            "limit": money(limit) if limit else None,
            "remaining": money(state["remaining"]) if state["remaining"] is not None else None,
        }


def _refusal(exc: BudgetExceeded, what: str, now: datetime) -> Exception:
    return spend_limit_reached(
        what=what,
        needed=exc.needed,
        remaining=exc.remaining,
        limit=exc.limit,
        resets_at=exc.window.end,
        now=now,
    )
