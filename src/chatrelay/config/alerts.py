"""The alert settings: where the operator is told of limits reached, upstreams down and
answers failing (chatrelay/alerts.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class AlertSettings(BaseModel):
    """Settings mixin: alerts."""

    alert_webhook_url: str | None = Field(
        default=None,
        description="A URL that gets a JSON POST when a user or key passes 80 % and 100 % of "
        "a limit (token budget, spend limit), an upstream's spend cap is reached, an "
        "upstream's breaker stays open, or answers are cut or fail above a rate. Unset: no "
        "alerts.",
    )
    alert_format: Literal["json", "slack"] = Field(
        default="json",
        description="`json`: `{kind, message, at, ...}`; `slack`: `{text}`, for a Slack (or "
        "Mattermost, Discord `/slack`) incoming webhook.",
    )
    alert_upstream_down: float = Field(
        default=300.0,
        gt=0,
        description="Seconds an upstream's circuit breaker may stay open before an alert.",
    )
    alert_failure_rate: float = Field(
        default=0.2,
        gt=0,
        le=1,
        description="Share of answers cut (failed over) or failed, over the last "
        "`CHATRELAY_ALERT_WINDOW` seconds, above which an alert is sent (at most hourly).",
    )
    alert_window: float = Field(
        default=300.0, gt=0, description="Seconds of answers the failure rate is taken over."
    )
    alert_min_answers: int = Field(
        default=20,
        ge=1,
        description="Answers the window must hold before its failure rate counts.",
    )
    alert_retry_backoff: float = Field(
        default=1.0,
        gt=0,
        description="Seconds before the first retry of an alert the webhook did not take; "
        "doubled for each of the next two.",
    )
