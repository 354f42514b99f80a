"""The timeout, retry and failover settings: how long an upstream is waited for, what happens
when one fails, and how upstreams are checked and warmed."""

from __future__ import annotations

from pydantic import BaseModel, Field

from chatrelay.setting_types import CommaList


class FailoverSettings(BaseModel):
    """Settings mixin: timeouts, retries and failover."""

    # Upstream timeouts. First token is generous: cold Livepeer models take minutes.
    connect_timeout: float = Field(
        default=10.0, gt=0, description="Seconds to connect to an upstream."
    )
    first_token_timeout: float = Field(
        default=300.0,
        gt=0,
        description="Seconds to wait for the first token, reasoning or tool-call delta "
        "(generous: a cold Livepeer model can take minutes).",
    )
    stall_timeout: float = Field(
        default=60.0,
        gt=0,
        description="Longest silence between tokens once the answer has started. Keep-alive "
        "comments do not count.",
    )
    stream_start_wait: float = Field(
        default=5.0,
        ge=0,
        description="Seconds `/api/chat` waits for the upstream to accept before it starts the "
        "stream anyway. Refusals within it are HTTP errors; later ones are error events (and "
        "Stop works meanwhile).",
    )
    keepalive_interval: float = Field(
        default=15.0,
        gt=0,
        description="Seconds of silence after which a stream gets an SSE comment "
        "`: keep-alive` (before the first token and between tokens), so that proxies in front "
        "(nginx cuts at 60 s idle) do not cut it.",
    )

    retry_deadline: float = Field(
        default=60.0,
        ge=0,
        description="Seconds after a request began during which failed attempts (before the "
        "first byte) are retried: other upstreams first, then with back-off.",
    )
    max_failovers: int = Field(
        default=2,
        ge=0,
        description="Times one answer may continue on another upstream after failing mid-answer.",
    )
    breaker_failures: int = Field(
        default=3, ge=1, description="Consecutive failures that pause an upstream."
    )
    breaker_cooldown: float = Field(
        default=30.0,
        gt=0,
        description="Seconds a paused upstream gets no traffic, before one trial request.",
    )
    health_interval: float = Field(
        default=30.0,
        ge=0,
        description="Seconds between background health checks of every upstream (`0`: none).",
    )
    warm_models: CommaList | None = Field(
        default=None,
        description="Models warmed by a one-token request at start-up (empty: none). Unset: "
        "the default model.",
    )
    keep_warm_interval: float = Field(
        default=0.0,
        ge=0,
        description="Seconds between repeated warming requests (`0`: only at start-up).",
    )
