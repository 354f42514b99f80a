"""Stored responses (the Responses API's ``store``): read back, continued, listed, cancelled,
deleted; every one owner-checked, another owner's answered exactly as an absent one (404).

A stored response is a turn of a chatrelay conversation (its question rows and its answer row,
shown on the page like any other) plus the record of what its request asked
(store/responses.py). ``previous_response_id`` continues that conversation when the response
is its last answer; one that was continued already is branched: a new conversation starts
with the history up to it. ``store: false`` keeps the turn only while it generates (so it can
be stopped, and the question is durable before the upstream is asked, as always), then deletes
it: the usage ledger is all that stays.

Usage::

    stored = StoredResponses(service)
    conversation_id, history = await stored.continuation(owner_id, "resp_...")
    obj = await stored.get(owner_id, "resp_...")
    stored.forget_when_done(answer)          # store: false
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from chatrelay.answers.answer import Answer
from chatrelay.answers.responses_output import (
    ResponseHead,
    item_place,
    whole_response,
)
from chatrelay.answers.responses_stream import answer_id_of, in_progress, whole_of
from chatrelay.answers.service import ChatService
from chatrelay.errors import ChatRelayError
from chatrelay.store import message_rows
from chatrelay.store.conversations import NotFound
from chatrelay.store.models import MessageRow, ResponseRow
from chatrelay.store.responses import delete_turn, get_response, turn_rows
from chatrelay.upstreams.chunk import Usage
from chatrelay.upstreams.dialects import UpstreamMessage

log = logging.getLogger(__name__)
MAX_LISTED = 100  # input_items' limit, as OpenAI bounds it
# Stored responses one request may reference items of: each is a read, so it is bounded.
MAX_REFERENCED = 64


class StoredResponses:
    def __init__(self, service: ChatService) -> None:
        self._service = service
        self._db = service.db
        self._forgetting: set[asyncio.Task[None]] = set()

    async def _rows(self, owner_id: str, response_id: str) -> tuple[ResponseRow, MessageRow]:
        answer_id = answer_id_of(response_id)
        if answer_id is None:
            raise not_found(response_id)
        try:
            async with self._db.read() as session:
                return await get_response(session, owner_id=owner_id, answer_id=answer_id)
        except NotFound:
            raise not_found(response_id) from None

    async def get(self, owner_id: str, response_id: str) -> dict[str, Any]:
        """The response object: from the answer itself while it runs here (or ended a moment
        ago), else from its stored rows."""
        row, message = await self._rows(owner_id, response_id)
        head = ResponseHead(
            response_id, message.model or "", int(row.created_at.timestamp()), row.request
        )
        live = self._service.local_answer(message.id, owner_id=owner_id)
        if live is not None:
            return whole_of(live, head)
        return stored_object(head, message)

    async def continuation(
        self, owner_id: str, previous_id: str
    ) -> tuple[str | None, list[UpstreamMessage]]:
        """Where a response that continues ``previous_id`` goes: its conversation (and no
        history to send, the conversation holds it) when ``previous_id`` is its last answer;
        else a new conversation (None) with the history up to it."""
        try:
            _, answer = await self._rows(owner_id, previous_id)
        except ChatRelayError:
            raise ChatRelayError(
                400,
                f"Previous response with id '{previous_id}' not found. Only responses stored "
                "(store: true, the default) by this key's user can be continued.",
                code="previous_response_not_found",
                param="previous_response_id",
            ) from None
        if answer.status == "streaming":
            raise ChatRelayError(
                409,
                f"The response '{previous_id}' is still being generated: continue it once it "
                "has ended (or cancel it: POST /v1/responses/{id}/cancel).",
                code="response_in_progress",
                param="previous_response_id",
            )
        async with self._db.read() as session:
            upto, after = await turn_rows(session, owner_id=owner_id, answer=answer)
        if not after:
            return answer.conversation_id, []
        history = [
            message_rows.upstream_message(m) for m in upto if message_rows.counts_as_history(m)
        ]
        return None, history

    async def references(self, owner_id: str, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The output items the ids name (``item_reference``), of the owner's stored
        responses; an id not found is left out (the translation answers 404 naming it)."""
        found: dict[str, dict[str, Any]] = {}
        responses: dict[str, dict[str, Any] | None] = {}
        for item in ids:
            place = item_place(item)
            if place is None:
                continue
            response_id, index = place
            if response_id not in responses and len(responses) >= MAX_REFERENCED:
                raise ChatRelayError(
                    400,
                    f"The input references items of more than {MAX_REFERENCED} responses. "
                    "Continue from the last one with previous_response_id instead.",
                    code="too_many_item_references",
                    param="input",
                )
            if response_id not in responses:
                try:
                    responses[response_id] = await self.get(owner_id, response_id)
                except ChatRelayError:
                    responses[response_id] = None
            response = responses[response_id]
            output = response["output"] if response is not None else []
            if index < len(output) and output[index].get("id") == item:
                found[item] = output[index]
        return found

    async def cancel(self, owner_id: str, response_id: str) -> dict[str, Any]:
        """Stop the response if it is generating (wherever it runs); the response object."""
        _, message = await self._rows(owner_id, response_id)
        if message.status == "streaming":
            await self._service.stop(message.id, owner_id=owner_id)
            live = self._service.local_answer(message.id, owner_id=owner_id)
            if live is not None:
                await live.wait()
        return await self.get(owner_id, response_id)

    async def delete(self, owner_id: str, response_id: str) -> dict[str, Any]:
        """The response's turn (its questions and answer) and record, stopped first if it is
        generating."""
        _, message = await self._rows(owner_id, response_id)
        live = self._service.local_answer(message.id, owner_id=owner_id)
        if message.status == "streaming" or (live is not None and not live.finished):
            await self._service.stop(message.id, owner_id=owner_id)
            if live is not None:
                await live.wait()
        await self._delete_turn(owner_id, message.id)
        return {"id": response_id, "object": "response", "deleted": True}

    async def input_items(
        self, owner_id: str, response_id: str, *, order: str, after: str | None, limit: int
    ) -> dict[str, Any]:
        """The response's input items as given, in OpenAI's list shape (``desc`` first by
        default), ``after`` an item id, at most ``limit``."""
        row, _ = await self._rows(owner_id, response_id)
        items = listed_items(response_id, row.input)
        if order == "desc":
            items.reverse()
        if after is not None:
            ids = [item["id"] for item in items]
            items = items[ids.index(after) + 1 :] if after in ids else []
        page = items[:limit]
        return {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": len(items) > len(page),
        }

    def forget_when_done(self, answer: Answer) -> None:
        """``store: false``: the turn is deleted once the answer has ended and been billed."""
        task = asyncio.create_task(self._forget(answer))
        self._forgetting.add(task)
        task.add_done_callback(self._forgetting.discard)

    async def _forget(self, answer: Answer) -> None:
        try:
            await answer.wait()
        except asyncio.CancelledError:  # a shutdown ended the answer: deleted all the same
            if not answer.finished:
                raise
        try:
            await self._delete_turn(answer.owner_id, answer.id)
        except Exception:  # logged: the rows stay, as a stored response would
            log.exception("could not delete the unstored response of answer %s", answer.id)

    async def _delete_turn(self, owner_id: str, answer_id: str) -> None:
        async with self._db.transaction() as session:
            await delete_turn(session, owner_id=owner_id, answer_id=answer_id)

    async def close(self) -> None:
        """Shutdown: the pending deletions of unstored responses, done."""
        if self._forgetting:
            await asyncio.gather(*self._forgetting, return_exceptions=True)


def not_found(response_id: str) -> ChatRelayError:
    return ChatRelayError(
        404,
        f"No response found with id '{response_id}'.",
        code="response_not_found",
        type="invalid_request_error",
        param="response_id",
    )


def stored_object(head: ResponseHead, message: MessageRow) -> dict[str, Any]:
    """The response object of a stored answer row."""
    extra: Mapping[str, Any] = message.extra or {}
    usage = None
    if message.prompt_tokens is not None or message.completion_tokens is not None:
        usage = Usage(message.prompt_tokens or 0, message.completion_tokens or 0)
    error = None
    if message.status in ("error", "interrupted"):
        error = ChatRelayError(502, message.error or "The answer failed.", code="server_error")
    calls = extra.get("tool_calls")
    response = whole_response(
        head,
        text=message.content,
        tool_calls=calls if isinstance(calls, list) else (),
        reasoning=_text(extra.get("reasoning_content") or extra.get("reasoning")),
        refusal=_text(extra.get("refusal")),
        usage=usage,
        finish_reason=message.finish_reason,
        stopped=message.status == "stopped",
        error=error,
    )
    return in_progress(response) if message.status == "streaming" else response


def input_record(raw_input: Any) -> list[Any]:
    """The input items to keep: a string input as the one user message it stands for."""
    if isinstance(raw_input, str):
        return [{"type": "message", "role": "user", "content": raw_input}]
    return list(raw_input) if isinstance(raw_input, list) else []


def listed_items(response_id: str, items: Sequence[Any]) -> list[dict[str, Any]]:
    """The input items as ``input_items`` lists them: each with an id, a message's text
    content as a list of parts."""
    key = response_id.removeprefix("resp_")
    listed = []
    for number, item in enumerate(items):
        if not isinstance(item, dict):
            continue
        item = dict(item)
        if item.get("type", "message") == "message":
            item["type"] = "message"
            content = item.get("content")
            if isinstance(content, str):
                kind = "output_text" if item.get("role") == "assistant" else "input_text"
                item["content"] = [{"type": kind, "text": content}]
            item.setdefault("status", "completed")
        item.setdefault("id", f"in_{key}_{number}")
        listed.append(item)
    return listed


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""
