"""What each request to an upstream cost, as a row of ``attempt_costs`` (store/costs.py):
an answer's attempts, written with its end (answers/recorder.py), and the operator's own
warming requests (upstreams/monitor.py), written as they happen.

Usage::

    row = cost_row(price, kind="answer", user_id=..., upstream="lp", model="m", ...)
    monitor = UpstreamMonitor(..., on_warmed=warming_recorder(db, registry.price_of))
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from functools import partial
from typing import Any

from chatrelay.answers.attempt import MAX_TOKEN_COUNT
from chatrelay.store import costs
from chatrelay.store.database import Database
from chatrelay.store.models import utcnow
from chatrelay.upstreams.monitor import OnWarmed, Warmed
from chatrelay.upstreams.pricing import Price

Prices = Callable[[str, str], Price]  # (upstream, model) -> its price: registry.price_of


def cost_row(
    price: Price,
    *,
    kind: str,
    user_id: str | None,
    message_id: str | None,
    model: str,
    api_key_id: str | None = None,
    upstream: str,
    accepted: bool,
    prompt_tokens: int,
    completion_tokens: int,
    requested_tokens: int,
    created_at: datetime,
    outcome: str = "ok",
    first_token_s: float | None = None,
    duration_s: float = 0.0,
    failed_over: bool = False,
) -> dict[str, Any]:
    """One attempt's row: what its upstream billed (the prompt, and the tokens requested or
    used, as it bills), what was used, both priced (None when it has no price). An attempt
    the upstream never took (refused, unreachable) read nothing and is billed nothing."""
    if not accepted:
        prompt_tokens = 0
    # An upstream's counts are not believed past what a column holds (as its usage is not).
    prompt_tokens = min(max(prompt_tokens, 0), MAX_TOKEN_COUNT)
    completion_tokens = min(max(completion_tokens, 0), MAX_TOKEN_COUNT)
    requested_tokens = min(max(requested_tokens, 0), MAX_TOKEN_COUNT)
    cost = price.cost(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        requested_tokens=requested_tokens if accepted else 0,
    )
    return {
        "user_id": user_id,
        "api_key_id": api_key_id,
        "message_id": message_id,
        "kind": kind,
        "model": model,
        "upstream": upstream,
        "billing": cost.billing,
        "accepted": accepted,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "requested_tokens": requested_tokens,
        "paid_tokens": min(cost.paid_tokens, MAX_TOKEN_COUNT),
        "paid_cost": cost.paid,
        "used_cost": cost.used,
        "currency": cost.currency,
        "outcome": outcome,
        "first_token_ms": None if first_token_s is None else round(first_token_s * 1000),
        "duration_ms": min(round(duration_s * 1000), MAX_TOKEN_COUNT),
        "failed_over": failed_over,
        "created_at": created_at,
    }


def warming_recorder(db: Database, prices: Prices) -> OnWarmed:
    """The monitor's ``on_warmed``: a warming request's cost, the operator's own (no user)."""

    async def record(warmed: Warmed) -> None:
        row = cost_row(
            prices(warmed.upstream, warmed.model),
            kind="warming",
            user_id=None,
            message_id=None,
            model=warmed.model,
            upstream=warmed.upstream,
            accepted=warmed.accepted,
            prompt_tokens=warmed.prompt_tokens,
            completion_tokens=warmed.completion_tokens,
            requested_tokens=1,  # a warming request asks for one token
            created_at=utcnow(),
        )
        await db.write(partial(costs.record_costs, rows=[row]), small=True)

    return record
