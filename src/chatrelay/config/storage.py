"""The storage and instance settings: the database, how often answers are written to it, and
Redis, which several instances share."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field


class StorageSettings(BaseModel):
    """Settings mixin: storage, Redis and instances."""

    # A SQLite file in data_dir unless a database URL is given.
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
