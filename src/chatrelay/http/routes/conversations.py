"""The conversations a person has: list, read, rename, delete, export. Owner checked on every id."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field
from starlette.responses import Response

from chatrelay.answers.service import ChatService
from chatrelay.auth.identity import current_user
from chatrelay.http.api_docs import error_responses
from chatrelay.http.context import ChatDep, DatabaseDep
from chatrelay.store import conversations
from chatrelay.store.conversations import NotFound
from chatrelay.store.database import Database
from chatrelay.store.models import Conversation, MessageRow, User
from chatrelay.text import StoredText

router = APIRouter(prefix="/api/conversations", tags=["conversations"])
Owner = Annotated[User | None, Depends(current_user)]
NOT_YOURS = {404: "No such conversation, or not yours (`conversation_not_found`)."}


class Rename(BaseModel):
    title: StoredText = Field(min_length=1, max_length=200)


def _owner_id(user: User | None, conversation_id: str) -> str:
    # Without an identity nothing is yours: the same 404 as for someone else's id.
    if user is None:
        raise NotFound("conversation", conversation_id)
    return user.id


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def conversation_summary(conversation: Conversation) -> dict[str, Any]:
    return {
        "id": conversation.id,
        "title": conversation.title,
        "created_at": _iso(conversation.created_at),
        "updated_at": _iso(conversation.updated_at),
    }


def message_view(message: MessageRow, live_text: str | None = None) -> dict[str, Any]:
    return {
        "id": message.id,
        "role": message.role,
        "content": live_text if live_text is not None else message.content,
        # The rest of the message as sent upstream (tool calls, tool_call_id, parts, reasoning,
        # refusal...); null for plain text. See docs/conversations.md.
        "extra": message.extra,
        "status": message.status,
        "error": message.error,
        "model": message.model,
        "upstream": message.upstream,
        "finish_reason": message.finish_reason,
        "prompt_tokens": message.prompt_tokens,
        "completion_tokens": message.completion_tokens,
        "created_at": _iso(message.created_at),
        "updated_at": _iso(message.updated_at),
    }


@router.get("", responses=error_responses(401, 422))
async def list_conversations(
    user: Owner,
    db: DatabaseDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
    q: Annotated[
        StoredText | None, Query(max_length=200, description="Search titles and text")
    ] = None,
) -> dict[str, Any]:
    """Your conversations, most recently active first."""
    if user is None:
        return {"data": [], "has_more": False}
    async with db.read() as session:
        rows = await conversations.list_conversations(
            session, owner_id=user.id, limit=limit + 1, offset=offset, query=q
        )
    return {"data": [conversation_summary(c) for c in rows[:limit]], "has_more": len(rows) > limit}


async def _load(
    db: Database, chat: ChatService, user: User | None, conversation_id: str
) -> tuple[Conversation, list[dict[str, Any]]]:
    owner_id = _owner_id(user, conversation_id)
    async with db.read() as session:
        conversation = await conversations.get_conversation(
            session, owner_id=owner_id, conversation_id=conversation_id
        )
        stored = await conversations.messages_of(
            session, owner_id=owner_id, conversation_id=conversation_id
        )
    # An answer still streaming here is shown as far as it has come, not as last flushed.
    messages = [
        message_view(
            m, chat.live_text(m.id, owner_id=owner_id) if m.status == "streaming" else None
        )
        for m in stored
    ]
    return conversation, messages


@router.get("/{conversation_id}", responses=error_responses(401, 404, notes=NOT_YOURS))
async def get_conversation(
    conversation_id: str, user: Owner, db: DatabaseDep, chat: ChatDep
) -> dict[str, Any]:
    """One conversation with all its messages, oldest first."""
    conversation, messages = await _load(db, chat, user, conversation_id)
    return {**conversation_summary(conversation), "messages": messages}


@router.patch(
    "/{conversation_id}", responses=error_responses(400, 401, 403, 404, 413, 422, notes=NOT_YOURS)
)
async def rename_conversation(
    conversation_id: str, body: Rename, user: Owner, db: DatabaseDep
) -> dict[str, Any]:
    """Change the title."""
    owner_id = _owner_id(user, conversation_id)
    async with db.transaction() as session:
        conversation = await conversations.rename_conversation(
            session, owner_id=owner_id, conversation_id=conversation_id, title=body.title.strip()
        )
    return conversation_summary(conversation)


@router.delete(
    "/{conversation_id}",
    status_code=204,
    responses=error_responses(401, 403, 404, notes=NOT_YOURS),
)
async def delete_conversation(
    conversation_id: str, user: Owner, db: DatabaseDep, chat: ChatDep
) -> Response:
    """Delete the conversation and its messages; an answer still streaming in it is stopped."""
    owner_id = _owner_id(user, conversation_id)
    async with db.transaction() as session:
        stored = await conversations.messages_of(
            session, owner_id=owner_id, conversation_id=conversation_id
        )
        await conversations.delete_conversation(
            session, owner_id=owner_id, conversation_id=conversation_id
        )
    streaming = [m.id for m in stored if m.status == "streaming"]
    await chat.stop_all(streaming, conversation_id=conversation_id)
    return Response(status_code=204)


@router.get(
    "/{conversation_id}/export",
    responses={
        200: {
            "description": "The conversation as a download (`Content-Disposition: attachment`).",
            "content": {
                "application/json": {},
                "text/markdown": {"schema": {"type": "string"}},
            },
        },
        **error_responses(401, 404, 422, notes=NOT_YOURS),
    },
)
async def export_conversation(
    conversation_id: str,
    user: Owner,
    db: DatabaseDep,
    chat: ChatDep,
    format: Literal["json", "markdown"] = "json",
) -> Response:
    """Download the conversation as JSON or Markdown."""
    conversation, messages = await _load(db, chat, user, conversation_id)
    filename = f"chatrelay-{conversation.id}"
    if format == "json":
        body = orjson.dumps(
            {**conversation_summary(conversation), "messages": messages}, option=orjson.OPT_INDENT_2
        )
        media_type, filename = "application/json", filename + ".json"
    else:
        body = to_markdown(conversation, messages).encode()
        media_type, filename = "text/markdown; charset=utf-8", filename + ".md"
    return Response(
        body,
        media_type=media_type,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


ROLE_HEADINGS = {
    "user": "You",
    "assistant": "Assistant",
    "system": "System",
    "developer": "Developer",
    "tool": "Tool result",
}
# A data URL in Markdown is shown this long: the JSON export carries it whole.
DATA_URL_SHOWN = 48


def to_markdown(conversation: Conversation, messages: list[dict[str, Any]]) -> str:
    lines = [f"# {conversation.title}", "", f"_Exported from chatrelay, {conversation.id}_", ""]
    for message in messages:
        extra = message["extra"] if isinstance(message["extra"], dict) else {}
        heading = ROLE_HEADINGS.get(message["role"], message["role"])
        if message["role"] == "assistant" and message["model"]:
            heading += f" ({message['model']})"
        if message["role"] == "tool" and isinstance(extra.get("tool_call_id"), str):
            heading += f" ({extra['tool_call_id']})"
        if message["status"] not in ("complete",):
            heading += f" [{message['status']}]"
        lines += [f"## {heading}", ""]
        reasoning = _reasoning_of(extra)
        if reasoning:
            lines += [_quoted("Reasoning", reasoning), ""]
        if message["content"]:
            lines += [message["content"], ""]
        lines += _attachment_lines(extra.get("content"))
        if isinstance(extra.get("refusal"), str) and extra["refusal"]:
            lines += [_quoted("Refusal", extra["refusal"]), ""]
        for call in extra.get("tool_calls") or []:
            lines += _tool_call_lines(call)
        if message["error"]:
            lines += [f"> Error: {message['error']}", ""]
    return "\n".join(lines)


def _reasoning_of(extra: dict[str, Any]) -> str:
    # DeepSeek and llama.cpp call it reasoning_content; vLLM and OpenRouter, reasoning.
    for key in ("reasoning_content", "reasoning"):
        if isinstance(extra.get(key), str) and extra[key]:
            return str(extra[key])
    return ""


def _quoted(label: str, text: str) -> str:
    return "\n".join([f"> **{label}**", ">", *(f"> {line}" for line in text.splitlines())])


def _fenced(text: str, language: str = "") -> list[str]:
    # Longer than any run of backticks inside, so that the text cannot close the fence.
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [fence + language, text, fence, ""]


def _pretty(arguments: Any) -> str:
    """Tool call arguments shown indented when they are JSON, as they came otherwise."""
    try:
        value = orjson.loads(arguments) if isinstance(arguments, str) else arguments
        return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):
        return arguments if isinstance(arguments, str) else repr(arguments)


def _tool_call_lines(call: Any) -> list[str]:
    if not isinstance(call, dict):
        return []
    # A function call, or a custom tool's call (its "input" instead of "arguments").
    function = call.get("function") or call.get("custom")
    if not isinstance(function, dict):
        function = {}
    name = str(function.get("name", ""))
    arguments = function.get("arguments", function.get("input", ""))
    ident = f" ({call['id']})" if isinstance(call.get("id"), str) else ""
    return [f"**Tool call** `{name}`{ident}:", "", *_fenced(_pretty(arguments), "json")]


def _attachment_lines(content: Any) -> list[str]:
    """The parts of a message that are not text: images as links (a data URL shortened)."""
    if not isinstance(content, list):
        return []
    lines = []
    for part in content:
        if not isinstance(part, dict) or part.get("type") == "text":
            continue
        kind = str(part.get("type", "part"))
        body = part.get(kind)
        url = body.get("url") if isinstance(body, dict) else None
        if isinstance(url, str) and url.startswith("data:"):
            lines.append(f"- {kind}: `{url[:DATA_URL_SHOWN]}…` ({len(url):,} bytes)")
        elif isinstance(url, str):
            lines.append(f"- {kind}: <{url}>")
        elif isinstance(body, dict) and isinstance(body.get("filename"), str):
            lines.append(f"- {kind}: {body['filename']}")
        else:
            lines.append(f"- {kind}")
    return [*lines, ""] if lines else []
