"""The account and session settings: the key that signs sessions, how long sessions last, and
the throttles on signing in and making accounts and guests."""

from __future__ import annotations

from pydantic import BaseModel, Field, SecretStr

from chatrelay.setting_types import RateLimit


class AccountSettings(BaseModel):
    """Settings mixin: accounts and sessions."""

    # A SecretStr so that printing the settings never shows it.
    secret_key: SecretStr | None = Field(
        default=None,
        description="Signs session cookies. Unset: made once and kept in "
        "`{data_dir}/secret_key` (mode 0600). Set it (the same value everywhere) when several "
        "instances share one database. Changing it signs everyone out.",
    )
    auth_cache_seconds: float = Field(
        default=5.0,
        ge=0,
        description="Seconds a process remembers whom a session cookie or API key belongs to, "
        "instead of a database read per request. Sign-in/out in the same process count at "
        "once; a key revoked with the CLI, a session ended on another instance or a budget set "
        "with `chatrelay users budget` count within this time. `0`: look up every request.",
    )
    # Sessions slide: each day of use pushes the expiry out again by the whole lifetime.
    session_days: int = Field(
        default=30,
        ge=1,
        description="Days a signed-in session lasts without use; each day of use pushes it "
        "out again.",
    )
    guest_session_days: int = Field(
        default=365, ge=1, description="The same for a guest's session."
    )
    sign_in_max_failures: int = Field(
        default=5,
        ge=1,
        description="Failed sign-ins allowed per username and per client address within "
        "`CHATRELAY_SIGN_IN_WINDOW` before `429 too_many_attempts`.",
    )
    sign_in_window: float = Field(default=900.0, gt=0, description="That window, in seconds.")
    register_limit: RateLimit = Field(
        default="10/hour",
        description="Accounts created per client address (same format as "
        "`CHATRELAY_RATE_LIMIT`; empty or `0`: unlimited), throttling argon2 work and name "
        "probing.",
    )
    guest_create_limit: RateLimit = Field(
        default="20/hour",
        description="New guests per client address (empty or `0`: unlimited); a client that "
        "drops its cookie gets no more.",
    )
    prune_interval: float = Field(
        default=3600.0,
        ge=0,
        description="Seconds between deletions of expired sessions and abandoned guests "
        "([security.md](security.md)); `0`: never.",
    )
