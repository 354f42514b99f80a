"""The pure parts of the limits: parsers, periods, the in-process backends on a fake clock."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from chatrelay.config import Settings
from chatrelay.limits.budget import BudgetExceeded, MemoryBudgetStore, TokenBudget
from chatrelay.limits.client_ip import TrustedProxies, parse_address
from chatrelay.limits.periods import PeriodWindow, period_window
from chatrelay.limits.rate import MemoryRateLimiter
from chatrelay.limits.streams import MemoryStreamSlots
from chatrelay.limits.tokens import LlamaVocabCounter, estimate_prompt_tokens, estimate_tokens
from chatrelay.setting_types import parse_rate_limit
from chatrelay.upstreams.local_model import find_bundled_model

# Trusted proxies: right-most untrusted


PROXIES = TrustedProxies(["10.0.0.0/8", "127.0.0.1", "2001:db8::/32"])


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        ("203.0.113.7", [], "203.0.113.7"),  # no proxy
        ("203.0.113.7", ["198.51.100.1"], "203.0.113.7"),  # untrusted peer: header ignored
        ("10.0.0.2", [], "10.0.0.2"),  # a trusted peer speaking for itself
        ("10.0.0.2", ["198.51.100.1"], "198.51.100.1"),
        ("10.0.0.2", ["198.51.100.1, 10.0.0.5"], "198.51.100.1"),  # two proxies
        ("10.0.0.2", ["1.2.3.4, 198.51.100.1, 10.0.0.5"], "198.51.100.1"),  # spoofed left part
        ("10.0.0.2", ["1.2.3.4", "198.51.100.1"], "198.51.100.1"),  # several header lines
        ("10.0.0.2", ["10.0.0.9, 10.0.0.5"], "10.0.0.9"),  # all trusted: the farthest
        ("10.0.0.2", ["1.2.3.4, nonsense, 10.0.0.5"], "10.0.0.5"),  # stop at garbage
        ("10.0.0.2", ["198.51.100.1:4711"], "198.51.100.1"),  # with a port
        ("10.0.0.2", ["[2001:db9::1]:443"], "2001:db9::1"),
        ("10.0.0.2", ["2001:db9::1, 2001:db8::5"], "2001:db9::1"),
        ("::ffff:10.0.0.2", ["198.51.100.1"], "198.51.100.1"),  # v4-mapped peer
        ("127.0.0.1", [" , 198.51.100.1 ,"], "198.51.100.1"),  # empty hops
    ],
)
def test_client_ip_is_the_right_most_untrusted_hop(
    peer: str, forwarded: list[str], client: str
) -> None:
    assert PROXIES.client_ip(peer, forwarded) == client


def test_no_trusted_proxies_means_the_peer() -> None:
    assert TrustedProxies([]).client_ip("127.0.0.1", ["198.51.100.1"]) == "127.0.0.1"


def test_parse_address_rejects_garbage() -> None:
    assert parse_address("not-an-ip") is None
    assert parse_address("") is None
    assert str(parse_address('"[::1]:80"')) == "::1"


def test_bad_trusted_proxy_setting_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match=r"invalid trusted proxy 'example\.com'"):
        Settings(trusted_proxies="10.0.0.0/8, example.com")
    assert Settings(trusted_proxies="10.0.0.0/8, ::1").trusted_proxies == ["10.0.0.0/8", "::1"]


# Rate limit rules


@pytest.mark.parametrize(
    ("text", "limit", "window"),
    [
        ("20/minute", 20, 60),
        ("20/minutes", 20, 60),
        ("5/10s", 5, 10),
        ("100 per hour", 100, 3600),
        ("1000/day", 1000, 86400),
        ("3/second", 3, 1),
        ("7/2min", 7, 120),
    ],
)
def test_rate_limit_rules(text: str, limit: int, window: float) -> None:
    rule = parse_rate_limit(text)
    assert rule is not None and (rule.limit, rule.window) == (limit, window)


def test_no_rate_limit_and_bad_ones() -> None:
    assert parse_rate_limit(None) is None
    assert parse_rate_limit("") is None
    assert parse_rate_limit("0/minute") is None
    for bad in ("20", "twenty/minute", "20/fortnight", "20/0s"):
        with pytest.raises(ValueError):
            parse_rate_limit(bad)
    with pytest.raises(ValueError, match=r"e\.g\. 20/minute"):
        Settings(rate_limit="lots")


async def test_memory_rate_limiter_slides_and_answers_the_exact_wait() -> None:
    now = [1000.0]
    limiter = MemoryRateLimiter(clock=lambda: now[0])
    rule = parse_rate_limit("2/minute")
    assert rule is not None
    assert await limiter.hit(key="a", rule=rule) is None
    now[0] += 10
    assert await limiter.hit(key="a", rule=rule) is None
    assert await limiter.hit(key="a", rule=rule) == pytest.approx(50)
    assert await limiter.hit(key="b", rule=rule) is None  # per key
    now[0] += 50  # the first hit leaves the window
    assert await limiter.hit(key="a", rule=rule) is None
    assert await limiter.hit(key="a", rule=rule) == pytest.approx(10)


# Periods


@pytest.mark.parametrize(
    ("period", "start", "end", "key"),
    [
        ("hour", datetime(2026, 3, 4, 17), datetime(2026, 3, 4, 18), "h2026030417"),
        ("day", datetime(2026, 3, 4), datetime(2026, 3, 5), "d20260304"),
        ("week", datetime(2026, 3, 2), datetime(2026, 3, 9), "w20260302"),  # from Monday
        ("month", datetime(2026, 3, 1), datetime(2026, 4, 1), "m202603"),
    ],
)
def test_period_windows(period: str, start: datetime, end: datetime, key: str) -> None:
    window = period_window(period, datetime(2026, 3, 4, 17, 30, tzinfo=UTC))  # type: ignore[arg-type]
    assert window.start == start.replace(tzinfo=UTC)
    assert window.end == end.replace(tzinfo=UTC)
    assert window.key == key


def test_december_rolls_into_next_year() -> None:
    window = period_window("month", datetime(2026, 12, 31, 23, 59, tzinfo=UTC))
    assert window.end == datetime(2027, 1, 1, tzinfo=UTC)


# Budgets on the in-process store


def make_budget(
    *, lease: float = 60, seeded: int = 0
) -> tuple[TokenBudget, list[float], list[str]]:
    clock = [0.0]
    asked: list[str] = []

    async def ledger(user_id: str, window: PeriodWindow) -> int:
        asked.append(window.key)
        return seeded

    store = MemoryBudgetStore(monotonic=lambda: clock[0])
    return TokenBudget(store, period="day", lease=lease, ledger=ledger), clock, asked


NOON = datetime(2026, 3, 4, 12, tzinfo=UTC)


async def test_reservations_never_exceed_the_budget_and_settle_to_real_usage() -> None:
    budget, _, _ = make_budget()
    first = await budget.reserve(user_id="u", lease_id="r1", tokens=600, limit=1000, now=NOON)
    with pytest.raises(BudgetExceeded) as refused:
        await budget.reserve(user_id="u", lease_id="r2", tokens=600, limit=1000, now=NOON)
    assert refused.value.remaining == 400
    await budget.settle(first, user_id="u", tokens=150)
    second = await budget.reserve(user_id="u", lease_id="r2", tokens=600, limit=1000, now=NOON)
    usage = await budget.usage(user_id="u", now=NOON)
    assert (usage.used, usage.reserved) == (150, 600)
    await budget.settle(second, user_id="u", tokens=0)  # released: nothing used
    usage = await budget.usage(user_id="u", now=NOON)
    assert (usage.used, usage.reserved) == (150, 0)


async def test_parallel_reservations_on_the_memory_store_fit_exactly() -> None:
    budget, _, _ = make_budget()

    async def one(i: int) -> bool:
        try:
            await budget.reserve(user_id="u", lease_id=f"r{i}", tokens=100, limit=500, now=NOON)
        except BudgetExceeded:
            return False
        return True

    assert sum(await asyncio.gather(*(one(i) for i in range(50)))) == 5


async def test_an_unrenewed_lease_expires_and_a_renewed_one_does_not() -> None:
    budget, clock, _ = make_budget(lease=10)
    await budget.reserve(user_id="u", lease_id="crashed", tokens=400, limit=1000, now=NOON)
    kept = await budget.reserve(user_id="u", lease_id="alive", tokens=400, limit=1000, now=NOON)
    clock[0] = 8
    await budget.renew([kept])
    clock[0] = 12  # "crashed" was never renewed
    usage = await budget.usage(user_id="u", now=NOON)
    assert usage.reserved == 400
    clock[0] = 19
    assert (await budget.usage(user_id="u", now=NOON)).reserved == 0
    # A late settle of an expired lease still counts what was used, and frees nothing twice.
    await budget.settle(kept, user_id="u", tokens=30)
    usage = await budget.usage(user_id="u", now=NOON)
    assert (usage.used, usage.reserved) == (30, 0)


async def test_a_new_period_starts_from_the_ledger_once() -> None:
    budget, _, asked = make_budget(seeded=900)
    with pytest.raises(BudgetExceeded):
        await budget.reserve(user_id="u", lease_id="r1", tokens=200, limit=1000, now=NOON)
    await budget.reserve(user_id="u", lease_id="r2", tokens=100, limit=1000, now=NOON)
    assert asked == ["d20260304"]  # seeded once, then counted in the store
    tomorrow = NOON.replace(day=5)
    await budget.reserve(user_id="u", lease_id="r3", tokens=100, limit=1000, now=tomorrow)
    assert asked == ["d20260304", "d20260305"]


async def test_a_new_account_starts_at_zero_without_asking_the_ledger() -> None:
    """A guest not stored yet cannot have used anything: no read of its (empty) usage."""
    budget, _, asked = make_budget(seeded=900)
    await budget.reserve(user_id="new", lease_id="r1", tokens=800, limit=1000, now=NOON, new=True)
    assert asked == []
    usage = await budget.usage(user_id="new", now=NOON)
    assert (usage.used, usage.reserved) == (0, 800)
    with pytest.raises(BudgetExceeded):  # counted from then on like any other account
        await budget.reserve(user_id="new", lease_id="r2", tokens=300, limit=1000, now=NOON)


async def test_stream_slots_are_leases() -> None:
    clock = [0.0]
    slots = MemoryStreamSlots(clock=lambda: clock[0])
    assert await slots.acquire(key="ip", slot_id="a", limit=2, lease=10)
    assert await slots.acquire(key="ip", slot_id="b", limit=2, lease=10)
    assert not await slots.acquire(key="ip", slot_id="c", limit=2, lease=10)
    await slots.release(key="ip", slot_id="a")
    assert await slots.acquire(key="ip", slot_id="c", limit=2, lease=10)
    clock[0] = 5
    await slots.renew(slots=[("ip", "c")], lease=10)
    clock[0] = 11  # "b" expired, "c" was renewed
    assert await slots.acquire(key="ip", slot_id="d", limit=2, lease=10)
    assert not await slots.acquire(key="ip", slot_id="e", limit=2, lease=10)


# Counting tokens


def test_the_estimate_is_about_four_bytes_a_token() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("abcd") == 1
    assert estimate_tokens("abcde") == 2
    assert estimate_tokens("日本語") == 3  # 9 bytes of UTF-8
    messages = [{"role": "user", "content": "abcdefgh"}]
    assert estimate_prompt_tokens(messages) == 2 + 4 + 3  # type: ignore[arg-type]


async def test_the_embedded_models_vocabulary_counts_exactly_off_the_loop() -> None:
    counter = LlamaVocabCounter(find_bundled_model())
    try:
        assert await counter.count("") == 0
        hello = await counter.count("Hello there, how are you doing today?")
        assert 5 <= hello <= 15
        long = await counter.count("Hello there, how are you doing today? " * 20)
        assert long > 10 * hello
        prompt = await counter.count_prompt([{"role": "user", "content": "Hello"}])
        assert prompt == await counter.count("Hello") + 4 + 3
    finally:
        counter.close()
