"""Why a request is refused by a limit, in the app's error shape, and the store-down signal."""

from __future__ import annotations

import math
from datetime import datetime
from urllib.parse import urlsplit

from chatrelay.errors import SERVER, ChatRelayError

RATE_LIMIT_ERROR = "rate_limit_error"  # OpenAI's type for 429s: SDKs back off on it


class LimitStoreDown(Exception):
    """The limits store (Redis) could not answer; whether to refuse is the caller's policy."""


def _seconds(wait: float) -> int:
    return max(1, math.ceil(wait))


def rate_limited(wait: float, *, limit: str) -> ChatRelayError:
    seconds = _seconds(wait)
    return ChatRelayError(
        429,
        f"Too many chat requests from your address (limit {limit}, CHATRELAY_RATE_LIMIT). "
        f"Try again in {seconds} seconds.",
        code="rate_limited",
        type=RATE_LIMIT_ERROR,
        headers={"Retry-After": str(seconds)},
    )


def too_many_streams(limit: int) -> ChatRelayError:
    return ChatRelayError(
        429,
        f"Too many answers are being generated for your address at once (limit {limit}, "
        "CHATRELAY_MAX_STREAMS_PER_IP). Wait for one to finish, or stop one.",
        code="rate_limited",
        type=RATE_LIMIT_ERROR,
        headers={"Retry-After": "2"},
    )


def budget_exceeded(
    *, needed: int, remaining: int, limit: int, period: str, resets_at: datetime, now: datetime
) -> ChatRelayError:
    reset = resets_at.strftime("%Y-%m-%d %H:%M UTC")
    return ChatRelayError(
        429,
        f"Your token budget is used up for this {period}: this request may need {needed} tokens "
        f"(max_tokens + prompt) and {remaining} of your {limit} remain. It resets at {reset}; "
        "asking for fewer max_tokens may fit now.",
        code="budget_exceeded",
        type=RATE_LIMIT_ERROR,
        headers={"Retry-After": str(_seconds((resets_at - now).total_seconds()))},
        details={
            "remaining": remaining,
            "limit": limit,
            "needed": needed,
            "period": period,
            "resets_at": resets_at.isoformat().replace("+00:00", "Z"),
        },
    )


def redacted(url: str) -> str:
    """``url`` without its password, to name the store in messages and logs."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    return f"{parts.scheme}://{host}:{parts.port or 6379}"


def limits_unavailable(store: str) -> ChatRelayError:
    return ChatRelayError(
        503,
        f"Usage limits cannot be checked right now: the limits store ({store}) is unreachable. "
        "Nothing was sent to the model and nothing was charged; try again shortly. "
        "(Operators: bring the store back, or set CHATRELAY_BUDGET_FAIL_OPEN=1 to serve "
        "without limits while it is down.)",
        code="limits_unavailable",
        type=SERVER,
        headers={"Retry-After": "5"},
    )
