"""The request settings: generation defaults and the bounds that keep one request from costing
a fortune."""

from __future__ import annotations

from pydantic import BaseModel, Field


class RequestSettings(BaseModel):
    """Settings mixin: what one request may ask for and carry."""

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
    system_prompt: str | None = Field(
        default=None,
        description="Sent first in every conversation that has no system message of its own.",
    )

    # Livepeer's `/llm` route.
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
