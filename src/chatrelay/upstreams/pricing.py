"""What an upstream charges: its prices per million tokens, and how it bills.

Livepeer gateways bill the tokens *requested* (``max_tokens``), not those generated; OpenAI
and most servers bill what was *used*. So what an attempt paid and what it used differ, and
every retry or failover pays its own reservation again. Money is kept in whole nano-units of
the currency (1e-9), integers: no float rounding adds up across a ledger.

Usage::

    price = Price(input=0.15, output=0.60, currency="USD", billing="requested")
    cost = price.cost(prompt_tokens=120, completion_tokens=40, requested_tokens=512)
    cost.paid, cost.used                      # nanos; cost.paid_tokens
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Billing = Literal["requested", "used"]
NANOS = 1_000_000_000  # nano-units per unit of the currency
# Per million tokens, in nanos per token: a price of 1.0 is 1,000 nanos a token.
_PER_TOKEN = NANOS // 1_000_000


def default_billing(dialect: str) -> Billing:
    """How an upstream of this dialect bills when its config does not say."""
    return "requested" if dialect == "livepeer" else "used"


@dataclass(frozen=True, slots=True)
class AttemptCost:
    """What one request to one upstream cost. ``paid`` and ``used`` in nanos of
    ``currency``, None when no price is configured (unknown, not zero)."""

    paid_tokens: int  # the tokens the upstream bills: the prompt and requested or used ones
    paid: int | None
    used: int | None
    currency: str
    billing: Billing


@dataclass(frozen=True, slots=True)
class Price:
    """An upstream's (or one of its models') prices per million tokens."""

    input: float | None
    output: float | None
    currency: str = "USD"
    billing: Billing = "used"

    @property
    def known(self) -> bool:
        return self.input is not None and self.output is not None

    def cost(
        self, *, prompt_tokens: int, completion_tokens: int, requested_tokens: int
    ) -> AttemptCost:
        """The cost of an attempt the upstream took (answered 200): the prompt, and the
        completion billed as configured (the requested tokens, or those generated)."""
        billed_completion = requested_tokens if self.billing == "requested" else completion_tokens
        billed_completion = max(billed_completion, completion_tokens)
        paid_tokens = prompt_tokens + billed_completion
        if not self.known:
            return AttemptCost(paid_tokens, None, None, self.currency, self.billing)
        assert self.input is not None and self.output is not None
        prompt = round(self.input * _PER_TOKEN * prompt_tokens)
        return AttemptCost(
            paid_tokens,
            prompt + round(self.output * _PER_TOKEN * billed_completion),
            prompt + round(self.output * _PER_TOKEN * completion_tokens),
            self.currency,
            self.billing,
        )


# No price configured: costs unknown.
UNPRICED = Price(None, None)


def money(nanos: int | None) -> float | None:
    """Nanos as units of the currency, for reports (None stays unknown)."""
    return None if nanos is None else nanos / NANOS
