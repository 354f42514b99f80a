"""The serving settings: where `chatrelay serve` listens, whom it answers, and what it allows
each client connection."""

from __future__ import annotations

import ipaddress

from pydantic import BaseModel, Field

from chatrelay.setting_types import CommaList, ProxyList


class ServingSettings(BaseModel):
    """Settings mixin: serving and client connections."""

    host: str = Field(
        default="127.0.0.1",
        description="Where `chatrelay serve` listens (also `--host`).",
    )
    port: int = Field(default=8000, description="The port it listens on (also `--port`).")
    workers: int = Field(
        default=1,
        ge=1,
        description="Processes `chatrelay serve` runs on that one port (also `--workers`), one "
        "per core to use them all; more than one needs `CHATRELAY_REDIS_URL` and an upstream "
        "(not the embedded model). See [operations.md](operations.md#several-workers).",
    )
    allowed_hosts: CommaList | None = Field(
        default=None,
        description="Comma list of the `Host` names served (`chat.example.com`, `name:port`, "
        "`*.example.com`, or `*` for any); other `Host` headers get 400 `host_not_allowed` "
        "(DNS rebinding, [security.md](security.md)). Unset: the loopback names (any port) when "
        "`host` is a loopback address, and required otherwise.",
    )
    detailed_errors: bool | None = Field(
        default=None,
        description="Error messages with their internal details (an upstream's URL, the OS "
        "error, the upstream's own words). Off: errors say what failed and what to do, with the "
        "request id; the details go to the log only. Unset: on when bound to loopback, else off.",
    )

    # What `chatrelay serve` allows each client connection (chatrelay/http/connection_limits.py),
    # so that it may face the internet without a proxy.
    max_header_bytes: int = Field(
        default=64 * 1024,
        ge=1024,
        description="Largest request head (request line and headers) `chatrelay serve` takes, "
        "in bytes (431 beyond).",
    )
    max_headers: int = Field(
        default=100, ge=8, description="Most headers in one request head (431 beyond)."
    )
    header_timeout: float = Field(
        default=10.0,
        gt=0,
        description="Seconds for a request's head to arrive (408 and closed after).",
    )
    body_timeout: float = Field(
        default=60.0,
        gt=0,
        description="Seconds for a request's body to arrive once its head has (closed after).",
    )
    idle_timeout: float = Field(
        default=5.0, gt=0, description="Seconds an idle kept-alive connection stays open."
    )
    max_connections: int = Field(
        default=4096,
        ge=1,
        description="Open connections `chatrelay serve` answers (each worker); a request on one "
        "beyond gets 503 `too_many_connections`.",
    )

    cors_origins: CommaList = Field(
        default_factory=list,
        description="Comma list of browser origins that may call `/v1/*` and `/llm` with a "
        "Bearer key only ([deploy.md](deploy.md)); empty: no cross-origin API access.",
    )
    trusted_proxies: ProxyList = Field(
        default_factory=lambda: ["127.0.0.1", "::1"],
        description="Proxies (IPs or CIDRs) whose `X-Forwarded-For` and `X-Forwarded-Proto` "
        "are believed. Empty: none.",
    )

    @property
    def on_loopback(self) -> bool:
        """Whether ``host`` is a loopback address: only this machine's clients can connect."""
        if self.host.lower() == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host.strip("[]")).is_loopback
        except ValueError:  # a name other than localhost: it may resolve anywhere
            return False
