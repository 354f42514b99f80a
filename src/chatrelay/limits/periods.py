"""Budget periods: which hour, day, week (from Monday) or month (all UTC) a moment falls in.

Usage::

    window = period_window("day", now)   # PeriodWindow(key="d20260123", start=..., end=...)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

Period = Literal["hour", "day", "week", "month"]


@dataclass(frozen=True, slots=True)
class PeriodWindow:
    """One period: ``key`` names it in the budget store; usage counts in [start, end)."""

    period: Period
    key: str
    start: datetime
    end: datetime


def period_window(period: Period, now: datetime) -> PeriodWindow:
    now = now.astimezone(UTC)
    if period == "hour":
        start = now.replace(minute=0, second=0, microsecond=0)
        end = start + timedelta(hours=1)
        key = start.strftime("h%Y%m%d%H")
    elif period == "day":
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        end = start + timedelta(days=1)
        key = start.strftime("d%Y%m%d")
    elif period == "week":
        day = now.replace(hour=0, minute=0, second=0, microsecond=0)
        start = day - timedelta(days=day.weekday())
        end = start + timedelta(weeks=1)
        key = start.strftime("w%Y%m%d")
    else:
        start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        end = (
            start.replace(year=start.year + 1, month=1)
            if start.month == 12
            else (start.replace(month=start.month + 1))
        )
        key = start.strftime("m%Y%m")
    return PeriodWindow(period, key, start, end)
