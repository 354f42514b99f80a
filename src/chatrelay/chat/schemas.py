"""The request bodies of the chat routes, validated once per request (never per chunk)."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationInfo,
    field_validator,
    model_validator,
)

from chatrelay.text import StoredText


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant"]
    content: StoredText


class ChatRequest(BaseModel):
    """``POST /api/chat``: the conversation so far; the answer streams back."""

    model_config = ConfigDict(extra="ignore")

    # "send": add the messages and answer them. "regenerate": answer the conversation's last
    # user message again, in place of its answer. "edit": give the last user message the text
    # of the one message sent, and answer it again. (First: the checks of messages read it.)
    action: Literal["send", "regenerate", "edit"] = "send"
    messages: list[ChatMessage] = Field(default_factory=list, validate_default=True)
    model: StoredText | None = None
    # Continue this conversation (the server keeps its history); none starts a new one.
    conversation_id: StoredText | None = None
    max_tokens: StrictInt | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)

    @field_validator("messages")
    @classmethod
    def _check_messages(cls, value: list[ChatMessage], info: ValidationInfo) -> list[ChatMessage]:
        action = info.data.get("action", "send")
        if action == "send" and not value:
            raise ValueError("messages must hold at least one message")
        if action == "edit" and (len(value) != 1 or value[0].role != "user"):
            raise ValueError("action 'edit' takes exactly one user message: the new text")
        return value

    @model_validator(mode="after")
    def _check_action(self) -> ChatRequest:
        if self.action != "send" and self.conversation_id is None:
            raise ValueError(f"action '{self.action}' needs the conversation_id to act on")
        return self
