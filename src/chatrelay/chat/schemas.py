"""The request bodies of the chat routes, validated once per request (never per chunk)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from chatrelay.text import StoredText


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant"]
    content: StoredText


class ChatRequest(BaseModel):
    """``POST /api/chat``: the conversation so far; the answer streams back."""

    model_config = ConfigDict(extra="ignore")

    messages: list[ChatMessage] = Field(min_length=1)
    model: StoredText | None = None
    # Continue this conversation (the server keeps its history); none starts a new one.
    conversation_id: StoredText | None = None
    max_tokens: StrictInt | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
