"""One typed settings object, read once at start and passed down.

Usage::

    settings = Settings()            # env vars (CHATRELAY_*, LIVEPEER_*, OPENAI_*) and .env
    settings = Settings.load(path)   # the same, with a TOML file underneath the env
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from chatrelay.setting_types import CommaList, ProxyList, RateLimit

# The models Livepeer orchestrators commonly advertise (livepeer-wire.md); the first is warm.
LIVEPEER_MODELS = (
    "meta-llama/Meta-Llama-3.1-8B-Instruct",
    "mistralai/Mistral-7B-Instruct-v0.3",
    "google/gemma-2-9b-it",
    "Qwen/Qwen2.5-7B-Instruct",
)
EMBEDDED_MODEL = "SmolLM2-135M-Instruct"


class UpstreamSpec(BaseModel):
    """One upstream declared in the TOML config (``[[upstreams]]``)."""

    name: str = Field(description="Its name in logs, metrics and the stored `upstream`.")
    dialect: Literal["livepeer", "openai"] = Field(
        default="openai", description="`livepeer` (a gateway's `/llm`) or `openai`."
    )
    base_url: str = Field(
        description="Its base URL, as `LIVEPEER_GATEWAY_URL` or `OPENAI_BASE_URL`."
    )
    api_key: SecretStr | None = Field(default=None, description="Its key, sent as a Bearer token.")
    api_key_env: str | None = Field(
        default=None,
        description="The name of an env var holding the key, so the file itself can stay free "
        "of secrets.",
    )
    models: list[str] = Field(
        default_factory=list,
        description="The models it serves (Livepeer's default: the four usual ones).",
    )
    weight: float = Field(
        default=1.0, gt=0, description="Its share of the traffic relative to the others."
    )
    text_only: bool = Field(
        default=False,
        description="Its models take text only: a request with images, audio or files is "
        "refused by name.",
    )
    drop_params: list[str] = Field(
        default_factory=list,
        description="Request fields left out for it instead of refused (as LiteLLM's "
        "`drop_params`); responses list the ones dropped in `X-Chatrelay-Dropped-Params`.",
    )


class Settings(BaseSettings):
    """Everything chatrelay can be told. Env names are CHATRELAY_<FIELD> unless noted."""

    model_config = SettingsConfigDict(
        env_prefix="CHATRELAY_", env_file=".env", extra="ignore", populate_by_name=True
    )

    host: str = Field(
        default="127.0.0.1",
        description="Where `chatrelay serve` listens (also `--host`).",
    )
    port: int = Field(default=8000, description="The port it listens on (also `--port`).")
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
        description="Open connections `chatrelay serve` answers; a request on one beyond gets "
        "503 `too_many_connections`.",
    )

    # Upstreams. The env names are the ones operators already know from each provider.
    livepeer_gateway_urls: CommaList = Field(
        default_factory=list,
        validation_alias=AliasChoices("LIVEPEER_GATEWAY_URL", "livepeer_gateway_urls"),
        description="Livepeer gateway base URL; a comma list gives several gateways (named "
        "`livepeer`, `livepeer-2`, ...). Requests go to `{url}/llm`.",
    )
    livepeer_api_key: str | None = Field(
        default=None,
        validation_alias=AliasChoices("LIVEPEER_API_KEY", "livepeer_api_key"),
        description="Sent as `Authorization: Bearer ...` to the gateway.",
    )
    openai_base_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("OPENAI_BASE_URL", "openai_base_url"),
        description="Any OpenAI-compatible server, named `openai` "
        "(`{base}/v1/chat/completions`, or `{base}/chat/completions` when the base ends in "
        "`/v1`).",
    )
    openai_api_key: str | None = Field(
        default=None,
        validation_alias=AliasChoices("OPENAI_API_KEY", "openai_api_key"),
        description="Sent as `Authorization: Bearer ...` to it.",
    )

    log_content: bool = Field(
        default=False,
        description="Put the question and answer text in request log lines (`question`, "
        "`answer`); off: ids and counts only.",
    )

    # Storage: a SQLite file in data_dir unless a database URL is given.
    data_dir: Path = Field(
        default=Path("data"),
        description="Where the SQLite database (`chatrelay.db`) and the generated secret key "
        "live. Created 0700; the database and its `-wal`/`-shm` files 0600 (an existing one is "
        "tightened at start).",
    )
    database_url: str | None = Field(
        default=None,
        description="E.g. `postgresql+asyncpg://chatrelay@127.0.0.1:5432/chatrelay`. Migrated "
        "automatically by `serve`. Unset: SQLite in the data dir.",
    )
    flush_interval: float = Field(
        default=0.5,
        gt=0,
        description="Seconds between writes of a streaming answer's text, and once at its end "
        "(never a write per token).",
    )
    system_prompt: str | None = Field(
        default=None,
        description="Sent first in every conversation that has no system message of its own.",
    )

    default_model: str | None = Field(
        default=None,
        description="Model used when a request names none. Unset: the first model offered "
        "(Livepeer: `meta-llama/Meta-Llama-3.1-8B-Instruct`).",
    )
    models: CommaList = Field(
        default_factory=list,
        description="Comma list of the models offered. Unset with Livepeer: Llama 3.1 8B, "
        "Mistral 7B v0.3, Gemma 2 9B, Qwen 2.5 7B.",
    )

    # Generation defaults and the bounds that keep one request from costing a fortune.
    default_max_tokens: int = Field(
        default=512,
        ge=1,
        description="`max_tokens` when a request gives none (always sent: Livepeer requires it "
        "and bills by it).",
    )
    max_tokens_limit: int = Field(
        default=4096, ge=1, description="Largest `max_tokens` a request may ask for."
    )
    max_messages: int = Field(default=200, ge=1, description="Most messages in one request.")
    max_message_chars: int = Field(
        default=32_000, ge=1, description="Longest single message, in characters."
    )
    max_total_chars: int = Field(
        default=200_000, ge=1, description="Longest conversation in one request, in characters."
    )
    max_body_bytes: int = Field(
        default=2 * 1024 * 1024,
        ge=1024,
        description="Largest request body (413 `body_too_large` beyond).",
    )
    max_attachment_bytes: int = Field(
        default=2 * 1024 * 1024,
        ge=0,
        description="Inline attachments (data URLs of images, audio, files), in bytes as "
        "stored, in one message (`0`: unlimited); over it a question is refused with 413 before "
        "anything is stored ([conversations.md](conversations.md)).",
    )
    user_attachment_bytes: int = Field(
        default=100 * 1024 * 1024,
        ge=0,
        description="The same, over all of one user's stored messages (`0`: unlimited; "
        "deleting conversations frees it).",
    )

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

    upstreams: list[UpstreamSpec] = Field(
        default_factory=list,
        description="More upstreams, added to the ones above; usually `[[upstreams]]` in the "
        "TOML file, or JSON in the env var (see [Several upstreams](#several-upstreams)).",
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

    # The embedded llama.cpp server, used when no upstream is configured.
    embedded: bool = Field(
        default=True, description="Start the embedded model when no upstream is configured."
    )
    embedded_model_path: Path | None = Field(
        default=None,
        description="A different GGUF file for the embedded server. Unset: the bundled "
        "SmolLM2-135M-Instruct.",
    )
    embedded_context: int = Field(
        default=2048, ge=256, description="llama.cpp context size of the embedded server."
    )
    embedded_threads: int | None = Field(
        default=None, description="llama.cpp threads of the embedded server. Unset: all cores."
    )
    embedded_start_timeout: float = Field(
        default=120.0,
        gt=0,
        description="Seconds `serve` waits for the embedded server to answer at start.",
    )

    finished_job_ttl: float = Field(
        default=60.0,
        ge=0,
        description="Seconds a finished answer's events are kept (in memory, or in Redis) for "
        "a re-attach; later a re-attach replays the stored text.",
    )
    instance_heartbeat: float = Field(
        default=5.0,
        gt=0,
        description="Seconds between an instance's heartbeats in the database; one silent for "
        "six (30 s) is dead and its streaming answers become `interrupted` (at once for a "
        "vanished process of the same host and PID namespace); an instance taken for dead by "
        "mistake marks its running answers streaming again when it next beats.",
    )
    event_mirror_interval: float = Field(
        default=0.02,
        gt=0,
        description="With Redis: seconds between copies of new answer events to Redis Streams "
        "(one pipeline for all answers; never a write per token).",
    )

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

    guest_token_budget: int = Field(
        default=0,
        ge=0,
        description="Tokens (prompt + completion) a guest may use per budget period; `0` is "
        "unlimited.",
    )
    user_token_budget: int = Field(
        default=0,
        ge=0,
        description="Tokens an account may use per budget period; `0` is unlimited. "
        "`chatrelay users budget NAME N` sets one account's own, which wins.",
    )
    guest_address_token_budget: int = Field(
        default=0,
        ge=0,
        description="Tokens per budget period all the guests of one client address share, on "
        "top of each guest's own, so that dropping the cookie for fresh guests gains nothing; "
        "`0`: none.",
    )
    budget_period: Literal["hour", "day", "week", "month"] = Field(
        default="day",
        description="`hour`, `day`, `week` (from Monday) or `month`, in UTC.",
    )
    budget_lease: float = Field(
        default=60.0,
        gt=0,
        description="Seconds a reservation or stream slot outlives a process that stopped "
        "renewing it (a crash).",
    )
    budget_fail_open: bool = Field(
        default=False,
        description="When the limits store (Redis) is down: `false` refuses chat and sign-in "
        "with `503 limits_unavailable`; `true` serves without limits (still ledgered).",
    )
    rate_limit: RateLimit = Field(
        default=None,
        description="Chat requests per client address, e.g. `20/minute`, `5/10s`, `1000/day` "
        "(sliding window). Unset: unlimited.",
    )
    max_streams_per_ip: int = Field(
        default=0,
        ge=0,
        description="Answers generated at once per client address; `0` is unlimited.",
    )
    ipv6_prefix: int = Field(
        default=64,
        ge=1,
        le=128,
        description="An IPv6 client counts as its network of this many bits for every "
        "per-address limit (rate, stream slots, sign-in, registration, new guests): one host "
        "is usually given a /64. `128`: exact addresses.",
    )
    trusted_proxies: ProxyList = Field(
        default_factory=lambda: ["127.0.0.1", "::1"],
        description="Proxies (IPs or CIDRs) whose `X-Forwarded-For` and `X-Forwarded-Proto` "
        "are believed. Empty: none.",
    )
    redis_url: str | None = Field(
        default=None,
        description="E.g. `redis://127.0.0.1:6379/0`: rate limits, stream slots, budgets, the "
        "sign-in throttle, answer events (re-attach through any instance) and stops shared by "
        "every process. Unset: in this process.",
    )
    redis_prefix: str = Field(
        default="chatrelay:",
        description="Redis key prefix (one per deployment sharing a Redis).",
    )
    redis_timeout: float = Field(
        default=1.0, gt=0, description="Seconds before Redis counts as down."
    )

    cors_origins: CommaList = Field(
        default_factory=list,
        description="Comma list of browser origins that may call `/v1/*` and `/llm` with a "
        "Bearer key only ([deploy.md](deploy.md)); empty: no cross-origin API access.",
    )
    llm_guests: bool = Field(
        default=False,
        description="Serve `POST /llm` requests without a key as guests; off: 401 "
        "([livepeer-gateway.md](livepeer-gateway.md)).",
    )
    llm_default_max_tokens: int | None = Field(
        default=None,
        ge=1,
        description="`POST /llm` without `max_tokens`: unset answers the gateway's `400 missing "
        "required fields` (as go-livepeer does); set, that many tokens instead (the Livepeer "
        "tutorial's route handler, as printed, sends none).",
    )

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
