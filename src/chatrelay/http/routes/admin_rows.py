"""The usage answer's shapes (``GET /api/admin/usage``): the time range a request asks for,
and its rows as JSON and as CSV.

Usage::

    since, until = usage_range("2026-03-01", "2026-03-31")   # a 400 when wrong
    row = {**group_fields("user", found, names, keys), **figures(found)}  # money in nanos
    response = csv_response("user", rows, since, until)
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta
from typing import Any

from starlette.responses import Response

from chatrelay.errors import ChatRelayError
from chatrelay.store.admin_usage import GroupBy, KeyName, UsageRow
from chatrelay.store.models import utcnow
from chatrelay.upstreams.pricing import NANOS

# The range one usage request may cover, and what it covers when it does not say.
MAX_DAYS = 366
DEFAULT_DAYS = 30
OPERATOR = "operator"  # the user filter and key of attempts of no user (warming)
NO_KEY = "none"  # the key of attempts made without an API key


def moment(value: str, *, param: str, end: bool) -> datetime:
    """An ISO date (the day's start; with ``end``, the next day's: ``until`` includes it) or
    date and time (UTC unless it says otherwise)."""
    try:
        if len(value) <= 10 and "T" not in value and ":" not in value:
            day = date.fromisoformat(value)
            start = datetime(day.year, day.month, day.day, tzinfo=UTC)
            return start + timedelta(days=1) if end else start
        given = datetime.fromisoformat(value)
        if given.tzinfo is None:
            given = given.replace(tzinfo=UTC)
        return given.astimezone(UTC)
    except (ValueError, OverflowError):
        raise ChatRelayError(
            400,
            f"'{param}' must be an ISO date (2026-01-31) or date and time "
            f"(2026-01-31T12:00:00Z), not {value!r}.",
            code="invalid_date",
            param=param,
        ) from None


def usage_range(since: str | None, until: str | None) -> tuple[datetime, datetime]:
    """[since, until) from the request's parameters: by default the last ``DEFAULT_DAYS``
    days to the end of today (UTC), and never more than ``MAX_DAYS`` days (a 400)."""
    now = utcnow()
    end = (
        moment(until, param="until", end=True)
        if until is not None
        else datetime(now.year, now.month, now.day, tzinfo=UTC) + timedelta(days=1)
    )
    try:
        start = (
            moment(since, param="since", end=False)
            if since is not None
            else end - timedelta(days=DEFAULT_DAYS)
        )
    except OverflowError:  # the default start before year 1
        start = datetime.min.replace(tzinfo=UTC)
    if start >= end:
        raise ChatRelayError(
            400, "'since' must be before 'until'.", code="invalid_range", param="since"
        )
    if end - start > timedelta(days=MAX_DAYS):
        raise ChatRelayError(
            400,
            f"The range from 'since' to 'until' is longer than {MAX_DAYS} days: ask for "
            "less at a time.",
            code="range_too_long",
            param="since",
        )
    return start, end


def nanos_text(nanos: int | None) -> str:
    """Exact money for CSV (no float rounding, no exponent): nanos as units with 9 places;
    empty when unknown."""
    if nanos is None:
        return ""
    sign = "-" if nanos < 0 else ""
    units, fraction = divmod(abs(nanos), NANOS)
    return f"{sign}{units}.{fraction:09d}"


def figures(row: UsageRow) -> dict[str, Any]:
    difference = None if row.paid is None or row.used is None else row.paid - row.used
    return {
        "currency": row.currency,
        "answers": row.answers,
        "attempts": row.attempts,
        "prompt_tokens": row.prompt_tokens,
        "completion_tokens": row.completion_tokens,
        "requested_tokens": row.requested_tokens,
        "paid_tokens": row.paid_tokens,
        "paid": row.paid,
        "used": row.used,
        "difference": difference,
        "unpriced_attempts": row.unpriced_attempts,
    }


MONEY = ("paid", "used", "difference")


def group_fields(
    group_by: GroupBy,
    row: UsageRow,
    names: dict[str, str | None],
    keys: dict[str, KeyName],
) -> dict[str, Any]:
    """The group's own fields: ``key`` (its value as text, never null) and what names it."""
    if group_by == "user":
        return {
            "key": row.key or OPERATOR,
            "user_id": row.key,
            "username": names.get(row.key) if row.key is not None else None,
        }
    if group_by == "key":
        key = keys.get(row.key) if row.key is not None else None
        return {
            "key": row.key or NO_KEY,
            "api_key_id": row.key,
            "key_name": key.name if key else None,
            "key_prefix": key.prefix if key else None,
            "user_id": key.user_id if key else None,
            "username": key.username if key else None,
        }
    return {"key": row.key, group_by: row.key}


CSV_GROUP_COLUMNS: dict[str, list[str]] = {
    "day": ["day"],
    "user": ["key", "user_id", "username"],
    "key": ["key", "api_key_id", "key_name", "key_prefix", "user_id", "username"],
    "model": ["model"],
    "upstream": ["upstream"],
}
CSV_FIGURES = [
    "currency",
    "answers",
    "attempts",
    "prompt_tokens",
    "completion_tokens",
    "requested_tokens",
    "paid_tokens",
    "paid",
    "used",
    "difference",
    "unpriced_attempts",
]


def cell(value: Any) -> Any:
    """A text cell a spreadsheet will not run as a formula (OWASP's CSV injection advice)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return "" if value is None else value


def csv_response(
    group_by: GroupBy, rows: list[dict[str, Any]], since: datetime, until: datetime
) -> Response:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    columns = [*CSV_GROUP_COLUMNS[group_by], *CSV_FIGURES]
    writer.writerow(columns)
    for row in rows:
        writer.writerow(
            [nanos_text(row[name]) if name in MONEY else cell(row[name]) for name in columns]
        )
    name = f"chatrelay-usage-{group_by}-{since:%Y%m%d}-{until:%Y%m%d}.csv"
    return Response(
        buffer.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
