"""Which upstream earns its traffic: figures per upstream and model from the attempts of real
answers (``attempt_costs``), so they survive restarts and are the same on every instance.

Usage::

    rows = await upstream_figures(session, since=now - timedelta(days=1))
    rows[0].ttft_p50_ms, rows[0].cost_per_1k_useful, rows[0].stall_rate
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from statistics import quantiles
from typing import Any

from sqlalchemy import Integer, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from chatrelay.store.models import AttemptCostRow

# First-token times read per upstream and model for the percentiles: the most recent ones.
MAX_SAMPLES = 2000


@dataclass(frozen=True, slots=True)
class UpstreamFigures:
    upstream: str
    model: str
    answers: int  # answers it took part in
    attempts: int
    ttft_p50_ms: float | None
    ttft_p95_ms: float | None
    tokens_per_s: float | None  # completion tokens over the time from first token to end
    stall_rate: float  # shares of its attempts
    cut_rate: float
    failover_rate: float  # its attempts after which the answer went on elsewhere
    paid_tokens: int  # what it billed (the prompt, and the tokens requested or used)
    used_tokens: int  # what was generated and read
    useful_tokens: int  # completion tokens that reached the user
    paid: float | None  # money; None when it has no price
    currency: str
    cost_per_1k_useful: float | None  # paid per 1,000 tokens the users received

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def upstream_figures(session: AsyncSession, *, since: datetime) -> list[UpstreamFigures]:
    """Per upstream and model, from the answers' attempts since ``since``."""
    c = AttemptCostRow
    one = func.count()
    rows = (
        await session.execute(
            select(
                c.upstream,
                c.model,
                func.count(func.distinct(c.message_id)),
                one,
                func.sum(case((c.outcome == "stall", 1), else_=0)),
                func.sum(case((c.outcome == "cut", 1), else_=0)),
                func.sum(func.cast(c.failed_over, Integer)),
                func.sum(c.paid_tokens),
                func.sum(c.prompt_tokens + c.completion_tokens),
                func.sum(c.completion_tokens),
                func.sum(c.paid_cost),
                func.max(c.currency),
                func.sum(case((c.first_token_ms.is_not(None), c.completion_tokens), else_=0)),
                func.sum(
                    case((c.first_token_ms.is_not(None), c.duration_ms - c.first_token_ms), else_=0)
                ),
            )
            .where(c.kind == "answer", c.created_at >= since)
            .group_by(c.upstream, c.model)
            .order_by(c.upstream, c.model)
        )
    ).all()
    figures = []
    for row in rows:
        (upstream, model, answers, attempts, stalls, cuts, failovers, paid_tokens, used,
         useful, paid, currency, streamed, streaming_ms) = row  # fmt: skip
        p50, p95 = await _ttft(session, upstream, model, since)
        paid_money = None if paid is None else int(paid) / 1e9
        figures.append(
            UpstreamFigures(
                upstream=upstream,
                model=model,
                answers=int(answers),
                attempts=int(attempts),
                ttft_p50_ms=p50,
                ttft_p95_ms=p95,
                tokens_per_s=round(streamed * 1000 / streaming_ms, 1) if streaming_ms else None,
                stall_rate=round(int(stalls) / attempts, 4),
                cut_rate=round(int(cuts) / attempts, 4),
                failover_rate=round(int(failovers or 0) / attempts, 4),
                paid_tokens=int(paid_tokens or 0),
                used_tokens=int(used or 0),
                useful_tokens=int(useful or 0),
                paid=paid_money,
                currency=currency or "USD",
                cost_per_1k_useful=(
                    round(paid_money * 1000 / useful, 9)
                    if paid_money is not None and useful
                    else None
                ),
            )
        )
    return figures


async def _ttft(
    session: AsyncSession, upstream: str, model: str, since: datetime
) -> tuple[float | None, float | None]:
    c = AttemptCostRow
    samples = (
        await session.scalars(
            select(c.first_token_ms)
            .where(
                c.upstream == upstream,
                c.model == model,
                c.kind == "answer",
                c.created_at >= since,
                c.first_token_ms.is_not(None),
            )
            .order_by(c.created_at.desc())
            .limit(MAX_SAMPLES)
        )
    ).all()
    values = sorted(float(v) for v in samples if v is not None)
    if not values:
        return None, None
    if len(values) == 1:
        return values[0], values[0]
    cuts = quantiles(values, n=100, method="inclusive")
    return round(cuts[49], 1), round(cuts[94], 1)
