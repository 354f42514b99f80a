"""The log settings."""

from __future__ import annotations

from pydantic import BaseModel, Field


class LogSettings(BaseModel):
    """Settings mixin: what the request log says."""

    log_content: bool = Field(
        default=False,
        description="Put the question and answer text in request log lines (`question`, "
        "`answer`); off: ids and counts only.",
    )
