"""What an answer is billed (limits/billing.py): the upstream's count, else counted from the
text, never past max_tokens, and never lost to a broken tokenizer."""

from __future__ import annotations

from collections.abc import Sequence

from chatrelay.limits.billing import BilledUsage, Billing
from chatrelay.limits.tokens import estimate_prompt_tokens, estimate_tokens
from chatrelay.upstreams.chunk import Usage
from chatrelay.upstreams.dialects import UpstreamMessage

QUESTION: list[UpstreamMessage] = [{"role": "user", "content": "How much does this cost?"}]


class BrokenTokenizer:
    source = "tokenizer"

    async def count(self, text: str) -> int:
        raise RuntimeError("no vocabulary")

    async def count_prompt(self, messages: Sequence[UpstreamMessage]) -> int:
        raise RuntimeError("no vocabulary")


class CountingWords:
    source = "tokenizer"

    async def count(self, text: str) -> int:
        return len(text.split())

    async def count_prompt(self, messages: Sequence[UpstreamMessage]) -> int:
        return sum(len(str(m["content"]).split()) for m in messages)


async def test_the_upstreams_own_count_wins_up_to_max_tokens() -> None:
    billing = Billing()
    billed = await billing.bill(
        usage=Usage(12, 300), text="x", messages=QUESTION, upstream="a", max_completion=200
    )
    assert billed == BilledUsage(12, 200, "upstream")
    assert billed.total == 212


async def test_without_a_count_the_text_is_counted_by_its_upstreams_tokenizer() -> None:
    billing = Billing()
    billing.counters["embedded"] = CountingWords()
    billed = await billing.bill(
        usage=None, text="three words here", messages=QUESTION, upstream="embedded"
    )
    assert billed == BilledUsage(5, 3, "tokenizer")
    other = await billing.bill(usage=None, text="three words here", messages=QUESTION, upstream="b")
    expected = BilledUsage(
        estimate_prompt_tokens(QUESTION), estimate_tokens("three words here"), "estimate"
    )
    assert other == expected


async def test_nothing_said_nor_accepted_is_free_but_an_accepted_prompt_is_billed() -> None:
    billing = Billing()
    assert await billing.bill(usage=None, text="", messages=QUESTION, upstream="a") == (
        BilledUsage(0, 0, "estimate")
    )
    accepted = await billing.bill(
        usage=None, text="", messages=QUESTION, upstream="a", accepted=True
    )
    assert accepted == BilledUsage(estimate_prompt_tokens(QUESTION), 0, "estimate")


async def test_a_broken_tokenizer_falls_back_to_the_estimate_within_max_tokens() -> None:
    billing = Billing()
    billing.counters["embedded"] = BrokenTokenizer()
    text = "word " * 100
    billed = await billing.bill(
        usage=None, text=text, messages=QUESTION, upstream="embedded", max_completion=10
    )
    assert billed == BilledUsage(estimate_prompt_tokens(QUESTION), 10, "estimate")
