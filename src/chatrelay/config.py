"""One typed settings object, read once at start and passed down.

Usage::

    settings = Settings()            # env vars (CHATRELAY_*, LIVEPEER_*, OPENAI_*) and .env
    settings = Settings.load(path)   # the same, with a TOML file underneath the env
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

# The models Livepeer orchestrators commonly advertise (livepeer-wire.md); the first is warm.
LIVEPEER_MODELS = (
    "meta-llama/Meta-Llama-3.1-8B-Instruct",
    "mistralai/Mistral-7B-Instruct-v0.3",
    "google/gemma-2-9b-it",
    "Qwen/Qwen2.5-7B-Instruct",
)
EMBEDDED_MODEL = "SmolLM2-135M-Instruct"

CommaList = Annotated[list[str], NoDecode]


def _split_commas(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class UpstreamSpec(BaseModel):
    """One upstream declared in the TOML config (``[[upstreams]]``)."""

    name: str
    dialect: Literal["livepeer", "openai"] = "openai"
    base_url: str
    api_key: SecretStr | None = None
    # The name of an env var holding the key, so the file itself can stay free of secrets.
    api_key_env: str | None = None
    models: list[str] = Field(default_factory=list)
    weight: float = Field(default=1.0, gt=0)
    # Its models take text only: a request with images, audio or files is refused by name.
    text_only: bool = False
    # Request fields left out for this upstream instead of refused (as LiteLLM's drop_params);
    # responses list the ones dropped in X-Chatrelay-Dropped-Params.
    drop_params: list[str] = Field(default_factory=list)


class Settings(BaseSettings):
    """Everything chatrelay can be told. Env names are CHATRELAY_<FIELD> unless noted."""

    model_config = SettingsConfigDict(
        env_prefix="CHATRELAY_", env_file=".env", extra="ignore", populate_by_name=True
    )

    host: str = "127.0.0.1"
    port: int = 8000
    # The Host names requests may be sent to (comma list; "name", "name:port", "*.example.com",
    # or "*" for any). Unset: the loopback names (any port) when host is a loopback address,
    # and required otherwise (chatrelay/hosts.py): other Host headers are refused with 400.
    allowed_hosts: CommaList | None = None
    # Error messages with their internal details (an upstream's URL, the OS error, the
    # upstream's own words). Unset: on when host is a loopback address, off otherwise (the
    # details then go to the log only, with the request id).
    detailed_errors: bool | None = None

    # What `chatrelay serve` allows each client connection (chatrelay/connection_limits.py),
    # so that it may face the internet without a proxy: a request's head (request line and
    # headers) in bytes and in headers, seconds to receive the head and then the body,
    # seconds an idle kept-alive connection stays open, and open connections at once.
    max_header_bytes: int = Field(default=64 * 1024, ge=1024)
    max_headers: int = Field(default=100, ge=8)
    header_timeout: float = Field(default=10.0, gt=0)
    body_timeout: float = Field(default=60.0, gt=0)
    idle_timeout: float = Field(default=5.0, gt=0)
    max_connections: int = Field(default=4096, ge=1)

    # Upstreams. The env names are the ones operators already know from each provider.
    livepeer_gateway_urls: CommaList = Field(
        default_factory=list,
        validation_alias=AliasChoices("LIVEPEER_GATEWAY_URL", "livepeer_gateway_urls"),
    )
    livepeer_api_key: str | None = Field(
        default=None, validation_alias=AliasChoices("LIVEPEER_API_KEY", "livepeer_api_key")
    )
    openai_base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("OPENAI_BASE_URL", "openai_base_url")
    )
    openai_api_key: str | None = Field(
        default=None, validation_alias=AliasChoices("OPENAI_API_KEY", "openai_api_key")
    )

    # Put the question and answer text in request log lines (off: ids and counts only).
    log_content: bool = False

    # Storage: a SQLite file in data_dir unless a database URL is given
    # (e.g. postgresql+asyncpg://user@127.0.0.1:5432/chatrelay).
    data_dir: Path = Path("data")
    database_url: str | None = None
    # Written every this many seconds while an answer streams, and at its end; never per token.
    flush_interval: float = Field(default=0.5, gt=0)
    # Prepended to every conversation sent upstream (unless it already has a system message).
    system_prompt: str | None = None

    default_model: str | None = None
    models: CommaList = Field(default_factory=list)

    # Generation defaults and the bounds that keep one request from costing a fortune.
    default_max_tokens: int = Field(default=512, ge=1)
    max_tokens_limit: int = Field(default=4096, ge=1)
    max_messages: int = Field(default=200, ge=1)
    max_message_chars: int = Field(default=32_000, ge=1)
    max_total_chars: int = Field(default=200_000, ge=1)
    max_body_bytes: int = Field(default=2 * 1024 * 1024, ge=1024)
    # Inline attachments (data URLs, base64 audio and files in content parts), in bytes as
    # stored: at most this much in one message (0 is unlimited; the body limit above bounds a
    # request anyway), and at most this much in all of one user's stored messages (0 is
    # unlimited; deleting conversations frees it).
    max_attachment_bytes: int = Field(default=2 * 1024 * 1024, ge=0)
    user_attachment_bytes: int = Field(default=100 * 1024 * 1024, ge=0)

    # Upstream timeouts, in seconds. First token is generous: cold Livepeer models take minutes.
    connect_timeout: float = Field(default=10.0, gt=0)
    first_token_timeout: float = Field(default=300.0, gt=0)
    stall_timeout: float = Field(default=60.0, gt=0)
    # How long a chat response waits for the upstream to accept before it starts streaming:
    # refusals within it are HTTP errors; later ones are error events, and Stop works meanwhile.
    stream_start_wait: float = Field(default=5.0, ge=0)
    # Every stream served gets an SSE comment after this many seconds of silence (a cold model,
    # a slow token), so that proxies in front (nginx cuts at 60 s idle) keep the connection.
    keepalive_interval: float = Field(default=15.0, gt=0)

    # Any number of upstreams, from the TOML config; they add to the env-configured ones.
    upstreams: list[UpstreamSpec] = Field(default_factory=list)
    # Before the first byte, failed attempts are retried (other upstreams first, then with
    # back-off) until this many seconds after the request began.
    retry_deadline: float = Field(default=60.0, ge=0)
    # How many times one answer may continue on another upstream after failing mid-stream.
    max_failovers: int = Field(default=2, ge=0)
    breaker_failures: int = Field(default=3, ge=1)
    breaker_cooldown: float = Field(default=30.0, gt=0)
    health_interval: float = Field(default=30.0, ge=0)  # 0 = no background health checks
    # Models warmed by a one-token request at start-up (default: the default model).
    warm_models: CommaList | None = None
    keep_warm_interval: float = Field(default=0.0, ge=0)  # 0 = warm once, at start-up

    # The embedded llama.cpp server, used when no upstream is configured.
    embedded: bool = True
    embedded_model_path: Path | None = None
    embedded_context: int = Field(default=2048, ge=256)
    embedded_threads: int | None = None
    embedded_start_timeout: float = Field(default=120.0, gt=0)

    # How long a finished answer's events are kept (in memory, or in Redis when shared) for a
    # late re-attach; after that a re-attach replays the stored text.
    finished_job_ttl: float = Field(default=60.0, ge=0)
    # Each process writes a heartbeat to the database this often; one silent for six
    # heartbeats is dead, and the others mark its streaming answers interrupted.
    instance_heartbeat: float = Field(default=5.0, gt=0)
    # With CHATRELAY_REDIS_URL: how often new answer events are copied to Redis for followers
    # on other instances (one pipeline for all answers each time; never a write per token).
    event_mirror_interval: float = Field(default=0.02, gt=0)

    # Signs session cookies. Unset: generated once and kept in {data_dir}/secret_key (0600).
    # A SecretStr so that printing the settings never shows it.
    secret_key: SecretStr | None = None
    # Seconds a process remembers whom a session cookie or API key belongs to (0: look it up
    # on every request). A key revoked or a session ended elsewhere counts here after this.
    auth_cache_seconds: float = Field(default=5.0, ge=0)
    # Sessions slide: each day of use pushes the expiry out again by the whole lifetime.
    session_days: int = Field(default=30, ge=1)
    guest_session_days: int = Field(default=365, ge=1)
    # Failed sign-ins allowed per username and per client IP within the window (seconds).
    sign_in_max_failures: int = Field(default=5, ge=1)
    sign_in_window: float = Field(default=900.0, gt=0)
    # Per client address (an IPv6 client's network, see ipv6_prefix): accounts created per
    # window ("10/hour"; empty or 0 is unlimited), throttling argon2 work and name probing.
    register_limit: str | None = "10/hour"
    # Per client address: new guests (a user row and a session) per window; empty or 0 is
    # unlimited. A client that drops its cookie gets a new guest only this often.
    guest_create_limit: str | None = "20/hour"
    # Seconds between prunings of expired sessions and abandoned guests (0: never).
    prune_interval: float = Field(default=3600.0, ge=0)

    # Token budgets: tokens (prompt + completion) per user per period; 0 is unlimited. An
    # account's own budget (`chatrelay users budget NAME N`) wins over these.
    guest_token_budget: int = Field(default=0, ge=0)
    user_token_budget: int = Field(default=0, ge=0)
    # Tokens per period all the guests of one client address use together (0: no such
    # limit), so that a client dropping its cookie for fresh guests gains nothing.
    guest_address_token_budget: int = Field(default=0, ge=0)
    budget_period: Literal["hour", "day", "week", "month"] = "day"
    # A reservation (and a stream slot) is a lease, renewed while its answer runs: a crashed
    # process's holds are released this many seconds after it stopped renewing them.
    budget_lease: float = Field(default=60.0, gt=0)
    # When the limits store (Redis) is down: refuse chat with a 503 (default) or serve unmetered.
    budget_fail_open: bool = False
    # Per client IP: chat requests per window ("20/minute"; unset is unlimited) and answers
    # streaming at once (0 is unlimited).
    rate_limit: str | None = None
    max_streams_per_ip: int = Field(default=0, ge=0)
    # An IPv6 client counts as its whole network of this prefix length for every per-address
    # limit: one host is usually given a /64, so counting single addresses limits nothing.
    ipv6_prefix: int = Field(default=64, ge=1, le=128)
    # Peers whose X-Forwarded-For / X-Forwarded-Proto are believed (IPs or CIDRs). Loopback by
    # default, as uvicorn does, so a reverse proxy on the same host works out of the box.
    trusted_proxies: CommaList = Field(default_factory=lambda: ["127.0.0.1", "::1"])
    # Shared limits, answer events and stops for several processes; unset keeps them in this
    # process's memory (one instance).
    redis_url: str | None = None
    redis_prefix: str = "chatrelay:"
    redis_timeout: float = Field(default=1.0, gt=0)

    # Browser apps on these origins may call /v1/* and /llm (CORS), with a Bearer key only;
    # empty: no cross-origin API access.
    cors_origins: CommaList = Field(default_factory=list)
    # POST /llm (chatrelay as a drop-in Livepeer gateway) without a Bearer key: served as a
    # guest when on, refused with 401 when off.
    llm_guests: bool = False
    # POST /llm without max_tokens: the gateway's 400 "missing required fields" when unset (as
    # go-livepeer does); when set, that many tokens instead (the Livepeer tutorial's route
    # handler, as printed, sends none).
    llm_default_max_tokens: int | None = Field(default=None, ge=1)

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_proxies(cls, value: Any) -> Any:
        return _split_commas(value)

    @field_validator("trusted_proxies")
    @classmethod
    def _check_trusted_proxies(cls, value: list[str]) -> list[str]:
        from chatrelay.limits.client_ip import TrustedProxies

        TrustedProxies(value)  # raises ValueError naming the bad entry
        return value

    @field_validator("rate_limit", "register_limit", "guest_create_limit")
    @classmethod
    def _check_rate_limit(cls, value: str | None) -> str | None:
        from chatrelay.limits.rate import parse_rate_limit

        parse_rate_limit(value)  # raises ValueError saying what a valid one looks like
        return value

    @field_validator(
        "livepeer_gateway_urls",
        "models",
        "warm_models",
        "cors_origins",
        "allowed_hosts",
        mode="before",
    )
    @classmethod
    def _split_lists(cls, value: Any) -> Any:
        return _split_commas(value)

    @classmethod
    def load(cls, config_file: Path | None = None, **overrides: Any) -> Settings:
        """Read settings: keyword overrides beat env vars, which beat the TOML file's keys."""
        if config_file is None:
            return cls(**overrides)
        if not config_file.is_file():
            raise FileNotFoundError(f"config file not found: {config_file}")

        class FileBackedSettings(cls):  # type: ignore[valid-type,misc]
            model_config = SettingsConfigDict(**{**cls.model_config, "toml_file": config_file})

            @classmethod
            def settings_customise_sources(
                cls,
                settings_cls: type[BaseSettings],
                init_settings: PydanticBaseSettingsSource,
                env_settings: PydanticBaseSettingsSource,
                dotenv_settings: PydanticBaseSettingsSource,
                file_secret_settings: PydanticBaseSettingsSource,
            ) -> tuple[PydanticBaseSettingsSource, ...]:
                toml = TomlConfigSettingsSource(settings_cls)
                return (init_settings, env_settings, dotenv_settings, toml)

        return Settings.model_validate(FileBackedSettings(**overrides).model_dump())

    @property
    def has_remote_upstream(self) -> bool:
        return bool(self.livepeer_gateway_urls or self.openai_base_url or self.upstreams)

    @property
    def on_loopback(self) -> bool:
        """Whether ``host`` is a loopback address: only this machine's clients can connect."""
        if self.host.lower() == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host.strip("[]")).is_loopback
        except ValueError:  # a name other than localhost: it may resolve anywhere
            return False
