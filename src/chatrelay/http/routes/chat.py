"""``POST /api/chat``, re-attach and stop (``/api/messages/{id}/stream``, ``.../stop``), and
``GET /api/models``."""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request

from chatrelay.answers.answer import Answer
from chatrelay.answers.events import Position
from chatrelay.answers.service import ChatService
from chatrelay.answers.turns import AnswerRequest
from chatrelay.auth.identity import current_user, identify, new_guest_writer, require_user
from chatrelay.errors import ChatRelayError
from chatrelay.http.api_docs import error_responses
from chatrelay.http.context import ChatDep, RegistryDep
from chatrelay.http.event_stream import EventStreamResponse
from chatrelay.http.schemas import ChatRequest
from chatrelay.observability import log_fields
from chatrelay.store.conversations import NotFound
from chatrelay.store.models import User
from chatrelay.text import message_text

router = APIRouter()
# Lists the request fields an upstream's drop_params left out (config: [[upstreams]]).
DROPPED_PARAMS = "X-Chatrelay-Dropped-Params"
# The last event a client may say it saw (``?after``, ``Last-Event-ID``): far more than any
# answer has, and a position every store of events can read.
LAST_EVENT = 2**31


@router.post(
    "/api/chat",
    response_class=EventStreamResponse,
    responses={
        200: {
            "description": "The answer as Server-Sent Events: OpenAI `chat.completion.chunk` "
            "objects, then `data: [DONE]`, each with an `id:` (1, 2, 3, ...) to resume from "
            "(`GET /api/messages/{id}/stream`). Failures after the stream began arrive as "
            '`data: {"error": ...}` events. `X-Message-Id` and `X-Conversation-Id` name the '
            "stored answer and its conversation.",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        **error_responses(
            400,
            401,
            403,
            404,
            413,
            422,
            429,
            502,
            503,
            409,
            notes={
                404: "No such model (`model_not_found`) or conversation.",
                409: "Regenerate/edit while the last answer is still streaming "
                "(`answer_in_progress`).",
            },
        ),
    },
)
async def chat(
    body: ChatRequest,
    request: Request,
    user: Annotated[User, Depends(require_user)],
    service: ChatDep,
) -> EventStreamResponse:
    """Stream the answer as OpenAI ``chat.completion.chunk`` events; the exchange is stored.

    ``action`` ``regenerate`` answers the conversation's last question again (in place of its
    answer); ``edit`` replaces the last question's text with the one message sent first."""
    answer, ids = await start_answer(request, service, body.asked(), user)
    position = Position()
    return EventStreamResponse(
        answer.buffer.follow(ids=True, position=position),
        headers=ids,
        keepalive=service.settings.keepalive_interval,
        on_abandon=partial(answer.rest_after_shutdown, position, ids=True),
    )


async def start_answer(
    request: Request, service: ChatService, asked: AnswerRequest, user: User
) -> tuple[Answer, dict[str, str]]:
    """Store the question and start its answer, for any route that asks: the answer, and the
    headers that say where it is stored. An upstream refusal within the start wait is raised
    as the HTTP error it is, carrying those headers (the question is stored all the same, so
    a retry can continue there)."""
    # The address ProxyHeaders settled on: the peer, or the client a trusted proxy names.
    client_ip = request.client.host if request.client else None
    # A guest not stored yet is written once the request passed every limit and check.
    identity = await identify(request)  # resolved already, by the route's user
    caller = service.quotas.caller(
        user,
        client_ip,
        on_admitted=new_guest_writer(request),
        api_key_id=identity.api_key_id,
        key_spend_limit=identity.api_key_spend_limit,
    )
    answer = await service.start(asked, owner_id=user.id, caller=caller)
    log_fields(request, partial(_answer_log_fields, answer))
    ids = {"X-Message-Id": answer.id, "X-Conversation-Id": answer.conversation_id}
    if answer.dropped_params:  # left out for an upstream by the operator's drop_params
        ids[DROPPED_PARAMS] = ", ".join(answer.dropped_params)
    try:
        await answer.accepted(wait=service.settings.stream_start_wait)
    except ChatRelayError as refused:
        refused.headers.update(ids)
        raise
    return answer, ids


def _answer_log_fields(answer: Answer, with_content: bool) -> dict[str, object]:
    """What the request's log line says of its answer, read when the response is over; its
    text only with CHATRELAY_LOG_CONTENT."""
    fields = answer.log_fields()
    if with_content:
        fields["question"] = message_text(answer.messages[-1]) if answer.messages else ""
        fields["answer"] = answer.text
    return fields


@router.get(
    "/api/messages/{message_id}/stream",
    response_class=EventStreamResponse,
    responses={
        200: {
            "description": "The answer's events after `Last-Event-ID` (or `after`), then live "
            "until it ends, wherever it is generated. When the original events have expired "
            "the stored answer is replayed from a role chunk (the text starts over).",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        **error_responses(
            400,
            401,
            403,
            404,
            422,
            notes={
                400: "`after` or `Last-Event-ID` is not an event number (`invalid_position`).",
                404: "No such answer.",
            },
        ),
    },
)
async def reattach(
    message_id: str,
    user: Annotated[User | None, Depends(current_user)],
    service: ChatDep,
    # Read as text, as the header is: an invalid position is one 400 whichever way it came.
    after: Annotated[
        str | None,
        Query(description=f"Last event id seen: an event number from 0 to {LAST_EVENT}."),
    ] = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> EventStreamResponse:
    """Re-attach to an answer: replay what was missed, then follow it live (a reload, a lost
    connection, a second tab). Never stops it: only ``POST .../stop`` does."""
    if user is None:
        raise NotFound("message", message_id)
    if after is not None:
        position_seen = _event_number(after, "after")
    else:
        position_seen = _event_number(last_event_id, "Last-Event-ID")
    position = Position()
    frames = await service.reattach(
        message_id, owner_id=user.id, after=position_seen, position=position
    )
    answer = service.local_answer(message_id, owner_id=user.id)
    return EventStreamResponse(
        frames,
        headers={"X-Message-Id": message_id},
        keepalive=service.settings.keepalive_interval,
        # Followed here: at shutdown it ends as the request that started it does.
        on_abandon=partial(answer.rest_after_shutdown, position, ids=True) if answer else None,
    )


def _event_number(seen: str | None, name: str) -> int:
    """The last event a client saw (an EventSource sends back the last id it got; none, or
    empty: from the start). Only an event number is one: anything else is refused, never
    taken for some other position."""
    if not seen:
        return 0
    # Digits only: int() would also take signs, spaces, underscores and other scripts' digits.
    if seen.isascii() and seen.isdigit() and len(seen) <= 10:
        number = int(seen)
        if number <= LAST_EVENT:
            return number
    raise ChatRelayError(
        400,
        f"{name} must be an event number from 0 to {LAST_EVENT}: the id of an event of this "
        "answer's stream.",
        code="invalid_position",
        param=name,
    )


@router.post(
    "/api/messages/{message_id}/stop",
    responses=error_responses(
        401,
        403,
        404,
        409,
        notes={
            404: "No such answer.",
            409: "Generated by an instance this one cannot reach (no CHATRELAY_REDIS_URL).",
        },
    ),
)
async def stop(
    message_id: str, user: Annotated[User | None, Depends(current_user)], service: ChatDep
) -> dict[str, Any]:
    """Stop generating an answer now, wherever it runs; the text so far is kept. Answers
    ``stopping``, or the stored status of an answer that has already ended."""
    if user is None:
        raise NotFound("message", message_id)
    status = await service.stop(message_id, owner_id=user.id)
    return {"id": message_id, "status": status}


@router.get("/api/models")
async def models(registry: RegistryDep) -> dict[str, Any]:
    """The models this server can answer with (OpenAI list shape), the default one, and how
    ready each is: ``warm``, ``warming``, ``cold`` or ``unavailable``."""
    listing = []
    for model, upstream in registry.models():
        health = registry.health_of(model)
        latency = health.last_first_token_latency
        listing.append(
            {
                "id": model,
                "object": "model",
                "created": 0,
                "owned_by": upstream.config.name,
                "status": registry.model_status(model),
                "first_token_latency": round(latency, 3) if latency is not None else None,
                "upstreams": [u.config.name for u in registry.serving(model)],
            }
        )
    return {"object": "list", "default": registry.default_model, "data": listing}
