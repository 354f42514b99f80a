"""The budget and rate limit settings: the tokens each user and address may use, and the
requests and streams each client address may make."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from chatrelay.setting_types import RateLimit


class BudgetSettings(BaseModel):
    """Settings mixin: budgets and rate limits."""

    guest_token_budget: int = Field(
        default=0,
        ge=0,
        description="Tokens (prompt + completion) a guest may use per budget period; `0` is "
        "unlimited.",
    )
    user_token_budget: int = Field(
        default=0,
        ge=0,
        description="Tokens an account may use per budget period; `0` is unlimited. "
        "`chatrelay users budget NAME N` sets one account's own, which wins.",
    )
    guest_address_token_budget: int = Field(
        default=0,
        ge=0,
        description="Tokens per budget period all the guests of one client address share, on "
        "top of each guest's own, so that dropping the cookie for fresh guests gains nothing; "
        "`0`: none.",
    )
    user_spend_limit: float = Field(
        default=0,
        ge=0,
        description="Money (in the upstreams' currency, from their prices) an account may "
        "spend per budget period; `0` is unlimited. `chatrelay users spend-limit NAME AMOUNT` "
        "sets one account's own, which wins.",
    )
    guest_spend_limit: float = Field(
        default=0,
        ge=0,
        description="Money a guest may spend per budget period; `0` is unlimited.",
    )
    budget_period: Literal["hour", "day", "week", "month"] = Field(
        default="day",
        description="`hour`, `day`, `week` (from Monday) or `month`, in UTC.",
    )
    budget_lease: float = Field(
        default=60.0,
        gt=0,
        description="Seconds a reservation or stream slot outlives a process that stopped "
        "renewing it (a crash).",
    )
    budget_fail_open: bool = Field(
        default=False,
        description="When the limits store (Redis) is down: `false` refuses chat and sign-in "
        "with `503 limits_unavailable`; `true` serves without limits (still ledgered).",
    )

    rate_limit: RateLimit = Field(
        default=None,
        description="Chat requests per client address, e.g. `20/minute`, `5/10s`, `1000/day` "
        "(sliding window). Unset: unlimited.",
    )
    max_streams_per_ip: int = Field(
        default=0,
        ge=0,
        description="Answers generated at once per client address; `0` is unlimited.",
    )
    ipv6_prefix: int = Field(
        default=64,
        ge=1,
        le=128,
        description="An IPv6 client counts as its network of this many bits for every "
        "per-address limit (rate, stream slots, sign-in, registration, new guests): one host "
        "is usually given a /64. `128`: exact addresses.",
    )
