"""OpenAI's Responses API, spoken by chatrelay itself: ``POST /v1/responses``, and the stored
responses (``GET``/``DELETE /v1/responses/{id}``, ``POST .../cancel``, ``GET .../input_items``).

A response is an answer like any other, on the same path as ``/v1/chat/completions`` (keys,
budgets, limits, failover, stop, storage): the request is translated into chat terms
(answers/responses_request.py), the answer relayed once, and each follower reads it as the
Responses API's events (answers/responses_stream.py). docs/api.md#responses-api says what is
carried and what is refused.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from functools import partial
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Body, Depends, Query, Request
from starlette.responses import Response

from chatrelay.answers.answer import Answer
from chatrelay.answers.events import Position
from chatrelay.answers.responses_output import ResponseHead
from chatrelay.answers.responses_request import chat_form, item_references
from chatrelay.answers.responses_stored import MAX_LISTED, input_record
from chatrelay.answers.responses_stream import ResponseShape, response_id, whole_of
from chatrelay.answers.turns import AnswerRequest
from chatrelay.errors import ChatRelayError
from chatrelay.http.api_docs import error_responses
from chatrelay.http.context import ChatDep, ResponsesDep
from chatrelay.http.event_stream import EventStreamResponse
from chatrelay.http.routes.chat import start_answer
from chatrelay.http.routes.openai import api_user, keeps_generating
from chatrelay.store.models import User
from chatrelay.store.responses import insert_response
from chatrelay.upstreams.dialects import UpstreamMessage

router = APIRouter(prefix="/v1", tags=["openai"])
UserDep = Annotated[User, Depends(api_user)]
# A refusal of the translated request names the chat field; the client wrote this one.
_RESPONSES_NAMES = {
    "response_format": "text.format",
    "max_tokens": "max_output_tokens",
    "max_completion_tokens": "max_output_tokens",
    "reasoning_effort": "reasoning.effort",
    "messages": "input",
}


@router.post(
    "/responses",
    response_model=None,
    responses={
        200: {
            "description": "A `response` object; with `stream: true`, Server-Sent Events "
            "(`event:` and `data:` lines) from `response.created` to `response.completed`, "
            "`.incomplete` or `.failed`. `X-Conversation-Id` names the stored conversation.",
            "content": {
                "application/json": {"schema": {"type": "object"}},
                "text/event-stream": {"schema": {"type": "string"}},
            },
        },
        **error_responses(
            400,
            401,
            403,
            404,
            409,
            413,
            429,
            502,
            503,
            notes={
                400: "A field wrong, or one chatrelay cannot honour (`unsupported_parameter`, "
                "naming it): hosted tools, `background`, a field the upstream cannot carry.",
                404: "No such model, or an `item_reference` not found.",
                409: "`previous_response_id` names a response still generating.",
            },
        ),
    },
)
async def create_response(
    body: Annotated[Any, Body()],
    request: Request,
    user: UserDep,
    service: ChatDep,
    stored: ResponsesDep,
) -> Response:
    """A response, streamed (``stream: true``) or whole, stored unless ``store: false``."""
    created_at = int(time.time())
    references = await stored.references(
        user.id, item_references(body) if isinstance(body, dict) else []
    )
    form = chat_form(body, references)
    conversation_id: str | None = None
    history: list[UpstreamMessage] = []
    if form.previous_response_id is not None:
        conversation_id, history = await stored.continuation(user.id, form.previous_response_id)
    record = None
    if form.store:
        record = partial(
            _record, owner_id=user.id, request=form.echo, input=input_record(body.get("input"))
        )
    asked = AnswerRequest(
        [*history, *form.input_messages],
        model=form.model,
        conversation_id=conversation_id,
        max_tokens=form.max_tokens,
        temperature=form.temperature,
        top_p=form.top_p,
        api=True,
        extra=form.extra,
        instructions=form.instructions,
        stored_with=record,
    )
    try:
        answer, ids = await start_answer(request, service, asked, user)
    except ChatRelayError as error:
        raise _in_responses_terms(error) from None
    if not form.store:
        stored.forget_when_done(answer)
    head = ResponseHead(response_id(answer.id), answer.model, created_at, form.echo)
    if form.stream:
        shape = ResponseShape(answer, head)
        position = Position()
        return EventStreamResponse(
            _events(answer, shape, position),
            headers=ids,
            keepalive=service.settings.keepalive_interval,
            on_abandon=partial(_rest_after_shutdown, answer, shape, position),
            on_leave=None if keeps_generating(request) else answer.stop,
        )
    await answer.wait()
    if answer.error is not None:  # failed, or interrupted by a shutdown
        answer.error.headers.update(ids)
        raise answer.error
    return _json(whole_of(answer, head), ids)


def _record(
    connection: Any,
    conversation_id: str,
    answer_id: str,
    *,
    owner_id: str,
    request: dict[str, Any],
    input: list[Any],
) -> None:
    insert_response(
        connection, conversation_id, answer_id, owner_id=owner_id, request=request, input=input
    )


def _in_responses_terms(error: ChatRelayError) -> ChatRelayError:
    """A refusal of the translated request, naming the field as a Responses client wrote it."""
    param = error.param
    if param:
        name, dot, rest = param.partition(".")
        base = name.partition("[")[0]
        if base in _RESPONSES_NAMES:
            error.param = _RESPONSES_NAMES[base] + (dot + rest if base != "messages" else "")
    return error


async def _events(
    answer: Answer, shape: ResponseShape, position: Position
) -> AsyncGenerator[bytes, None]:
    yield shape.start()
    async for data in answer.buffer.follow(position.index, position=position, shape=shape):
        yield data


async def _rest_after_shutdown(
    answer: Answer, shape: ResponseShape, position: Position
) -> AsyncGenerator[bytes, None]:
    await answer.cancel_and_wait()
    return answer.buffer.follow(position.index, position=position, shape=shape)


def _json(obj: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(obj), media_type="application/json", headers=headers)


_ID_NOTES = {404: "No response of this key's user has this id (`response_not_found`)."}


@router.get("/responses/{response_id}", responses=error_responses(401, 404, notes=_ID_NOTES))
async def retrieve_response(response_id: str, user: UserDep, stored: ResponsesDep) -> Response:
    """A stored response: as it ended, or as it stands while it generates."""
    return _json(await stored.get(user.id, response_id))


@router.delete("/responses/{response_id}", responses=error_responses(401, 404, notes=_ID_NOTES))
async def delete_response(response_id: str, user: UserDep, stored: ResponsesDep) -> Response:
    """Delete a stored response: its turn of the conversation (questions and answer), stopped
    first if it is generating."""
    return _json(await stored.delete(user.id, response_id))


@router.post(
    "/responses/{response_id}/cancel", responses=error_responses(401, 404, notes=_ID_NOTES)
)
async def cancel_response(response_id: str, user: UserDep, stored: ResponsesDep) -> Response:
    """Stop a response that is generating (any response: ``background`` is not supported,
    every response generates while its request waits or streams); the response object, its
    status ``cancelled`` (one that had ended already is returned as it ended)."""
    return _json(await stored.cancel(user.id, response_id))


@router.get(
    "/responses/{response_id}/input_items",
    responses=error_responses(400, 401, 404, notes=_ID_NOTES),
)
async def list_input_items(
    response_id: str,
    user: UserDep,
    stored: ResponsesDep,
    order: Literal["asc", "desc"] = "desc",
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LISTED)] = 20,
) -> Response:
    """The input items of a stored response, as its request gave them."""
    return _json(
        await stored.input_items(user.id, response_id, order=order, after=after, limit=limit)
    )
