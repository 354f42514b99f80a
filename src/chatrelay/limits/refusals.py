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


def too_many_new_guests(wait: float, *, limit: str) -> ChatRelayError:
    seconds = _seconds(wait)
    return ChatRelayError(
        429,
        f"Too many new guests from your address (limit {limit}, CHATRELAY_GUEST_CREATE_LIMIT). "
        "Keep the session cookie you were given (a browser does), or sign in; "
        f"else try again in {seconds} seconds.",
        code="too_many_guests",
        type=RATE_LIMIT_ERROR,
        headers={"Retry-After": str(seconds)},
    )


def too_many_failures(wait: float, *, what: str) -> ChatRelayError:
    """The sign-in throttle's refusal (sign-in, a password change): ``what`` failed too often."""
    seconds = _seconds(wait)
    return ChatRelayError(
        429,
        f"Too many {what}. Try again in {seconds} seconds.",
        code="too_many_attempts",
        type=RATE_LIMIT_ERROR,
        headers={"Retry-After": str(seconds)},
    )


def too_many_registrations(wait: float, *, limit: str) -> ChatRelayError:
    seconds = _seconds(wait)
    return ChatRelayError(
        429,
        f"Too many accounts created from your address (limit {limit}, "
        f"CHATRELAY_REGISTER_LIMIT). Try again in {seconds} seconds.",
        code="too_many_attempts",
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
    *,
    needed: int,
    remaining: int,
    limit: int,
    period: str,
    resets_at: datetime,
    now: datetime,
    address: bool = False,
) -> ChatRelayError:
    """``address``: the budget all guests of the client's address share, not the user's."""
    reset = resets_at.strftime("%Y-%m-%d %H:%M UTC")
    if address:
        whose = (
            "The token budget shared by the guests of your address "
            "(CHATRELAY_GUEST_ADDRESS_TOKEN_BUDGET) is used up"
        )
        left, then = f"{remaining} of its {limit}", "signing in, or asking for fewer max_tokens,"
    else:
        whose = "Your token budget is used up"
        left, then = f"{remaining} of your {limit}", "asking for fewer max_tokens"
    return ChatRelayError(
        429,
        f"{whose} for this {period}: this request may need {needed} tokens "
        f"(max_tokens + prompt) and {left} remain. It resets at {reset}; {then} may fit now.",
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


def spend_limit_reached(
    *, what: str, needed: int, remaining: int, limit: int, resets_at: datetime, now: datetime
) -> ChatRelayError:
    """A spend limit in money cannot take the request's worst case (amounts in nanos)."""
    reset = resets_at.strftime("%Y-%m-%d %H:%M UTC")
    return ChatRelayError(
        429,
        f"This request would pass {what}: it may cost {needed / 1e9:.6g} at most and "
        f"{remaining / 1e9:.6g} of {limit / 1e9:.6g} remain this period. It resets at {reset}; "
        "asking for fewer max_tokens may fit now.",
        code="spend_limit_exceeded",
        type=RATE_LIMIT_ERROR,
        headers={"Retry-After": str(_seconds((resets_at - now).total_seconds()))},
        details={
            "remaining": remaining / 1e9,
            "limit": limit / 1e9,
            "needed": needed / 1e9,
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
