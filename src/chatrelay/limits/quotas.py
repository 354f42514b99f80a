"""The one object the app asks about limits: admit, reserve, settle, report.

Usage::

    quotas = Quotas.from_settings(settings, db)
    quotas.start()                                          # renews the leases of running answers
    admission = await quotas.admit(owner_id=u.id, caller=quotas.caller(u, client_ip))  # 429
    await quotas.reserve(admission, messages=msgs, max_tokens=512)   # 429 budget / 503 store
    ...                                                     # generate
    billed = await quotas.settle(admission, usage=..., text=..., messages=..., upstream=...)
    await quotas.close()

Order matters and is the caller's: the rate limit and a stream slot first (cheap, per IP),
then the budget (per user), all before the question is stored or the upstream called. Every
hold is released exactly once: ``settle`` at the answer's end, ``release`` if the request
fails before its answer starts, and a lease that expires if the process dies.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from chatrelay.alerts import Alerts
from chatrelay.config import Settings

# Admission, Caller and BilledUsage re-exported ("as") until answers/service.py,
# answers/recorder.py and bench/limits_overhead.py import them from admission.py and billing.py.
from chatrelay.limits.admission import Admission, Caller, OnAdmitted
from chatrelay.limits.billing import BilledUsage, Billing
from chatrelay.limits.budget import (
    BudgetExceeded,
    BudgetStore,
    Ledger,
    MemoryBudgetStore,
    Reservation,
    TokenBudget,
)
from chatrelay.limits.client_ip import limit_key
from chatrelay.limits.leases import Leases
from chatrelay.limits.periods import PeriodWindow
from chatrelay.limits.rate import MemoryRateLimiter, RateLimiter
from chatrelay.limits.redis_backend import RedisLimits
from chatrelay.limits.refusals import (
    LimitStoreDown,
    budget_exceeded,
    limits_unavailable,
    rate_limited,
    too_many_new_guests,
    too_many_registrations,
    too_many_streams,
)
from chatrelay.limits.sign_in import SignInThrottle, sign_in_throttle
from chatrelay.limits.spending import SpendAsk, SpendLimits
from chatrelay.limits.streams import MemoryStreamSlots, StreamSlots
from chatrelay.limits.tokens import TokenCounter, estimate_prompt_tokens
from chatrelay.setting_types import RateRule, parse_rate_limit
from chatrelay.store import costs
from chatrelay.store import usage as usage_queries
from chatrelay.store.database import Database
from chatrelay.store.models import User, utcnow
from chatrelay.upstreams.chunk import Usage
from chatrelay.upstreams.dialects import UpstreamMessage

log = logging.getLogger(__name__)


# The budget account of all the guests of one address. The usage ledger keeps users, not
# addresses, so a store that does not know it (a restart in memory) starts it from 0.
GUESTS_OF = "guests@"


class Quotas:
    """Rate limits, stream slots and token budgets over whichever backends were configured."""

    def __init__(
        self,
        settings: Settings,
        *,
        budgets: BudgetStore,
        rates: RateLimiter,
        streams: StreamSlots,
        ledger: Ledger,
        store_name: str = "memory",
        redis: RedisLimits | None = None,
        spend_ledger: Ledger | None = None,
    ) -> None:
        self.settings = settings
        self.rate_rule = parse_rate_limit(settings.rate_limit)
        self.guest_create_rule = parse_rate_limit(settings.guest_create_limit)
        self.register_rule = parse_rate_limit(settings.register_limit)
        self.ipv6_prefix = settings.ipv6_prefix
        self.max_streams = settings.max_streams_per_ip
        self.lease = settings.budget_lease
        self.fail_open = settings.budget_fail_open
        self.budget = TokenBudget(
            budgets, period=settings.budget_period, lease=settings.budget_lease, ledger=ledger
        )
        # Spend limits in money: budgets of their own on the same store (limits/spending.py).
        self.spending = SpendLimits(
            TokenBudget(
                budgets,
                period=settings.budget_period,
                lease=settings.budget_lease,
                ledger=spend_ledger or _nothing_spent,
            ),
            user_limit=settings.user_spend_limit,
            guest_limit=settings.guest_spend_limit,
        )
        self.rates = rates
        self.streams = streams
        self.store_name = store_name
        self.redis = redis
        # In memory; shared through Redis when made from the settings (from_settings).
        self.sign_in_throttle: SignInThrottle = sign_in_throttle(
            settings, store_down=self.store_down
        )
        self.billing = Billing()
        # The operator's alerts (chatrelay/alerts.py), told how full each limit is.
        self._alerts: Alerts | None = None
        # Where the embedded model registers its tokenizer (the other upstreams are estimated).
        self.counters: dict[str, TokenCounter] = self.billing.counters
        self.leases = Leases(self.budget, streams, lease=settings.budget_lease)
        # The budget period's clock; tests move it to cross a period boundary.
        self.clock: Callable[[], datetime] = utcnow
        self._down_logged_at = 0.0

    @classmethod
    def from_settings(cls, settings: Settings, db: Database) -> Quotas:
        """In this process's memory, or in Redis when ``CHATRELAY_REDIS_URL`` is set."""
        if settings.redis_url is None:
            return cls.in_memory(settings, db)
        redis = RedisLimits.connect(
            settings.redis_url, prefix=settings.redis_prefix, timeout=settings.redis_timeout
        )
        quotas = cls(
            settings,
            budgets=redis.budgets,
            rates=redis.rates,
            streams=redis.streams,
            ledger=_ledger_of(db),
            store_name=redis.name,
            redis=redis,
            spend_ledger=_spend_ledger_of(db),
        )
        quotas.sign_in_throttle = sign_in_throttle(settings, redis, store_down=quotas.store_down)
        return quotas

    @classmethod
    def in_memory(cls, settings: Settings, db: Database) -> Quotas:
        return cls(
            settings,
            budgets=MemoryBudgetStore(),
            rates=MemoryRateLimiter(),
            streams=MemoryStreamSlots(),
            ledger=_ledger_of(db),
            spend_ledger=_spend_ledger_of(db),
        )

    @property
    def alerts(self) -> Alerts | None:
        return self._alerts

    @alerts.setter
    def alerts(self, alerts: Alerts | None) -> None:
        self._alerts = self.spending.alerts = alerts

    # Who pays

    def budget_of(self, user: User) -> int:
        """Tokens per period for ``user``: its own setting, else its kind's; 0 is unlimited."""
        if user.token_budget is not None:
            return user.token_budget
        settings = self.settings
        return settings.guest_token_budget if user.is_guest else settings.user_token_budget

    def address(self, client_ip: str | None) -> str | None:
        """What per-address limits count ``client_ip`` as (an IPv6 one: its network)."""
        return limit_key(client_ip, ipv6_prefix=self.ipv6_prefix)

    def caller(
        self,
        user: User,
        client_ip: str | None,
        *,
        on_admitted: OnAdmitted | None = None,
        api_key_id: str | None = None,
        key_spend_limit: int | None = None,
    ) -> Caller:
        """``on_admitted``: run once the request passed every limit and check, before anything
        is stored (a guest not stored yet writes itself then). ``api_key_id``: the key the
        request came with, and its own spend limit (nanos)."""
        budget = self.budget_of(user)
        address = self.address(client_ip)
        return Caller(
            user.id,
            budget,
            address,
            guest=user.is_guest,
            on_admitted=on_admitted,
            api_key_id=api_key_id,
            spend_limit=self.spending.limit_of(user),
            key_spend_limit=key_spend_limit,
        )

    async def count_new_guest(self, client_ip: str | None) -> None:
        """A guest is about to be created for ``client_ip``: 429 if its address has had its
        share (CHATRELAY_GUEST_CREATE_LIMIT)."""
        rule, address = self.guest_create_rule, self.address(client_ip)
        if rule is not None and address is not None:
            wait = await self._hit(f"new-guests:{address}", rule)
            if wait is not None:
                raise too_many_new_guests(wait, limit=rule.text)

    async def count_registration(self, client_ip: str | None) -> None:
        """An account is about to be created: 429 past CHATRELAY_REGISTER_LIMIT."""
        rule, address = self.register_rule, self.address(client_ip)
        if rule is not None and address is not None:
            wait = await self._hit(f"registrations:{address}", rule)
            if wait is not None:
                raise too_many_registrations(wait, limit=rule.text)

    async def _hit(self, key: str, rule: RateRule) -> float | None:
        try:
            return await self.rates.hit(key=key, rule=rule)
        except LimitStoreDown as exc:
            self.store_down(exc)
            return None

    # Admission

    async def admit(self, *, owner_id: str, caller: Caller | None) -> Admission:
        """Count the request against its address's rate limit and take a stream slot."""
        admission = Admission(
            id=secrets.token_urlsafe(12),
            user_id=owner_id,
            budget=caller.budget if caller else 0,
            client_ip=caller.client_ip if caller else None,
            admitted_at=self.clock(),
            guest=caller.guest if caller else False,
            on_admitted=caller.on_admitted if caller else None,
            api_key_id=caller.api_key_id if caller else None,
            spend_limit=caller.spend_limit if caller else 0,
            key_spend_limit=caller.key_spend_limit if caller else None,
        )
        ip = admission.client_ip
        if ip is None:
            return admission
        try:
            if self.rate_rule is not None:
                wait = await self.rates.hit(key=ip, rule=self.rate_rule)
                if wait is not None:
                    raise rate_limited(wait, limit=self.rate_rule.text)
            if self.max_streams > 0:
                acquired = await self.streams.acquire(
                    key=ip, slot_id=admission.id, limit=self.max_streams, lease=self.lease
                )
                if not acquired:
                    raise too_many_streams(self.max_streams)
                admission.slot_key = ip
                self.leases.hold(admission)
        except LimitStoreDown as exc:
            self.store_down(exc)
        return admission

    async def reserve(
        self,
        admission: Admission,
        *,
        messages: Sequence[UpstreamMessage],
        max_tokens: int,
        spend: SpendAsk | None = None,
        prompt_tokens: int | None = None,
    ) -> None:
        """Hold max_tokens + the prompt's estimated tokens of the user's budget, and for a
        guest of its address's guests' budget too, and ``spend`` (the worst case in money)
        of the spend limits; then the request has passed every limit, and its
        ``on_admitted`` runs (a new guest is written only now)."""
        # ``prompt_tokens``: the caller's estimate of the same messages, when it made one.
        prompt = estimate_prompt_tokens(messages) if prompt_tokens is None else prompt_tokens
        needed = max_tokens + prompt
        if admission.budget > 0:
            admission.reservation = await self._hold(
                admission, account_of=admission.user_id, tokens=needed, limit=admission.budget
            )
        address_budget = self.settings.guest_address_token_budget
        if admission.guest and address_budget > 0 and admission.client_ip is not None:
            # Every guest of the address draws on this one too: a client that drops its
            # cookie for a fresh guest (and a fresh guest budget) gains nothing.
            admission.address_reservation = await self._hold(
                admission,
                account_of=GUESTS_OF + admission.client_ip,
                tokens=needed,
                limit=address_budget,
            )
        if admission.reservation is not None or admission.address_reservation is not None:
            admission.reserved_tokens = needed
            self.leases.hold(admission)
        if spend is not None:
            try:
                await self.spending.reserve(
                    admission,
                    spend,
                    user_limit=admission.spend_limit,
                    key_limit=admission.key_spend_limit,
                    now=admission.admitted_at,
                )
            except LimitStoreDown as exc:
                self.store_down(exc)  # raises unless failing open
            finally:
                if admission.spend_reservations:
                    self.leases.hold(admission)
        if admission.on_admitted is not None:
            await admission.on_admitted()

    async def _hold(
        self, admission: Admission, *, account_of: str, tokens: int, limit: int
    ) -> Reservation | None:
        address = account_of.startswith(GUESTS_OF)
        scope, subject = (
            ("address", account_of.removeprefix(GUESTS_OF)) if address else ("user", account_of)
        )
        try:
            held = await self.budget.reserve(
                user_id=account_of,
                lease_id=admission.id,
                tokens=tokens,
                limit=limit,
                now=admission.admitted_at,
                # A guest not stored yet (written once admitted) has used nothing.
                new=not address and admission.on_admitted is not None,
            )
            if self._alerts is not None:
                self._alerts.limit_filled(
                    scope, subject, what="token budget", filled=held.filled, limit=limit,
                    period=held.window.key,
                )  # fmt: skip
            return held
        except BudgetExceeded as exc:
            if self._alerts is not None:
                self._alerts.limit_filled(
                    scope, subject, what="token budget", filled=limit, limit=limit,
                    period=exc.window.key,
                )  # fmt: skip
            raise budget_exceeded(
                needed=exc.needed,
                remaining=exc.remaining,
                limit=exc.limit,
                period=self.budget.period,
                resets_at=exc.window.end,
                now=self.clock(),
                address=account_of.startswith(GUESTS_OF),
            ) from None
        except LimitStoreDown as exc:
            self.store_down(exc)  # raises unless failing open
            return None

    def store_down(self, exc: LimitStoreDown) -> None:
        """Log the outage (once in a while) and refuse with a 503, unless failing open."""
        now = time.monotonic()
        if now - self._down_logged_at > 30:  # one line per outage-ish, not one per request
            self._down_logged_at = now
            policy = "serving without limits (fail open)" if self.fail_open else "refusing"
            log.error("limits store down, %s: %s", policy, exc)
        if not self.fail_open:
            raise limits_unavailable(self.store_name) from exc

    # The end of a request

    async def settle(
        self,
        admission: Admission,
        *,
        usage: Usage | None,
        text: str,
        messages: Sequence[UpstreamMessage],
        upstream: str,
        accepted: bool = False,
        max_completion: int | None = None,
        spent: Callable[[BilledUsage], Mapping[str, int]] | None = None,
    ) -> BilledUsage:
        """Bill the answer (:meth:`Billing.bill`) and give back every hold, the spend limits'
        settled to what ``spent`` says the attempts paid (nanos by upstream, from what was
        billed). Never raises: the answer must be saved."""
        billed = await self.billing.bill(
            usage=usage,
            text=text,
            messages=messages,
            upstream=upstream,
            accepted=accepted,
            max_completion=max_completion,
        )
        paid: Mapping[str, int] = {}
        if spent is not None:
            try:
                paid = spent(billed)
            except Exception:  # the holds must still be given back
                log.exception("pricing request %s failed", admission.id)
        await self._let_go(admission, tokens=billed.total, paid=paid)
        return billed

    async def release(self, admission: Admission) -> None:
        """The request failed before its answer started: give everything back, charge nothing."""
        await self._let_go(admission, tokens=0)

    async def _let_go(
        self, admission: Admission, *, tokens: int, paid: Mapping[str, int] | None = None
    ) -> None:
        if admission.done:
            return
        admission.done = True
        self.leases.let_go(admission)
        steps: list[Awaitable[None]] = []
        if admission.reservation is not None:
            steps.append(
                self.budget.settle(admission.reservation, user_id=admission.user_id, tokens=tokens)
            )
        if admission.address_reservation is not None:
            account_of = GUESTS_OF + (admission.client_ip or "")
            held = admission.address_reservation
            steps.append(self.budget.settle(held, user_id=account_of, tokens=tokens))
        steps += self.spending.settlements(admission, paid or {})
        if admission.slot_key is not None:
            steps.append(self.streams.release(key=admission.slot_key, slot_id=admission.id))
        if self.redis is not None and len(steps) > 1:
            # Side by side: one round trip of waiting, not two.
            outcomes: list[object] = list(await asyncio.gather(*steps, return_exceptions=True))
        else:  # in memory nothing waits: tasks would only add scheduling
            outcomes = []
            for step in steps:
                try:
                    await step
                except Exception as exc:
                    outcomes.append(exc)
        for failure in outcomes:
            if isinstance(failure, BaseException):
                # The leases expire by themselves; the ledger keeps the tokens all the same.
                log.error("settling request %s failed: %r", admission.id, failure)

    # Reporting

    async def usage(self, user: User) -> dict[str, Any]:
        """What ``user`` used and has left this period (``GET /api/usage``)."""
        now = self.clock()
        report = await self.budget.report(user_id=user.id, limit=self.budget_of(user), now=now)
        report["spend"] = await self.spending.report(user, now=now)
        return report

    # Leases

    def start(self) -> None:
        """Renew the leases of running answers; call with the event loop running."""
        self.leases.start()

    async def close(self) -> None:
        await self.leases.stop()
        await self.billing.close()
        if self.redis is not None:
            await self.redis.close()


async def _nothing_spent(account: str, window: PeriodWindow) -> int:
    return 0


def _spend_ledger_of(db: Database) -> Ledger:
    """What a spend account paid in a period, from attempt_costs (a period the store has not
    seen: a restart, a flushed Redis)."""

    async def ledger(account: str, window: PeriodWindow) -> int:
        async with db.read() as session:
            return await costs.spent(session, account=account, since=window.start, until=window.end)

    return ledger


def _ledger_of(db: Database) -> Ledger:
    async def ledger(user_id: str, window: PeriodWindow) -> int:
        if user_id.startswith(GUESTS_OF):
            return 0  # not a user: see GUESTS_OF
        async with db.read() as session:
            return await usage_queries.tokens_used(
                session, user_id=user_id, since=window.start, until=window.end
            )

    return ledger
