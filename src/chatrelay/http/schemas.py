"""The request bodies of the chat routes, validated once per request (never per chunk)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationInfo,
    field_validator,
    model_validator,
)

from chatrelay.answers.turns import AnswerRequest
from chatrelay.text import StoredText
from chatrelay.upstreams.dialects import UpstreamMessage


def _check_top_k(value: int) -> int:
    if value == 0 or value < -1:
        raise ValueError("top_k must be -1 (no limit) or at least 1")
    return value


# Sampling from the k most likely tokens, as vLLM and the Livepeer runner take it.
TopK = Annotated[StrictInt, AfterValidator(_check_top_k)]


class RequestMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant"]
    content: StoredText


def upstream_messages(messages: list[RequestMessage]) -> list[UpstreamMessage]:
    """The messages as they go upstream (and are stored)."""
    return [{"role": m.role, "content": m.content} for m in messages]


class ChatRequest(BaseModel):
    """``POST /api/chat``: the conversation so far; the answer streams back."""

    model_config = ConfigDict(extra="ignore")

    # "send": add the messages and answer them. "regenerate": answer the conversation's last
    # user message again, in place of its answer. "edit": give the last user message the text
    # of the one message sent, and answer it again. (First: the checks of messages read it.)
    action: Literal["send", "regenerate", "edit"] = "send"
    messages: list[RequestMessage] = Field(default_factory=list, validate_default=True)
    model: StoredText | None = None
    # Continue this conversation (the server keeps its history); none starts a new one.
    conversation_id: StoredText | None = None
    max_tokens: StrictInt | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: TopK | None = None

    @field_validator("messages")
    @classmethod
    def _check_messages(
        cls, value: list[RequestMessage], info: ValidationInfo
    ) -> list[RequestMessage]:
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

    def asked(self) -> AnswerRequest:
        """What the answer domain is asked for (answers/turns.py)."""
        return AnswerRequest(
            upstream_messages(self.messages),
            action=self.action,
            model=self.model,
            conversation_id=self.conversation_id,
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
        )
