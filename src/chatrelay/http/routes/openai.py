"""The OpenAI API, spoken by chatrelay itself: ``POST /v1/chat/completions``, ``GET /v1/models``.

Any OpenAI client works against chatrelay by changing its base URL to ``http://host/v1`` and
its key to a chatrelay API key, with the same budgets, limits, failover and storage as the
page. Conversations are stored under the key's user; the header ``X-Conversation-Id``
continues one (the answer carries it too).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from functools import partial
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Header, Request
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from chatrelay.answers.answer import Answer
from chatrelay.answers.events import Position
from chatrelay.answers.request_messages import checked_messages
from chatrelay.answers.turns import AnswerRequest
from chatrelay.auth.identity import current_user
from chatrelay.errors import ChatRelayError
from chatrelay.http.api_docs import error_responses
from chatrelay.http.context import ChatDep, RegistryDep, app_context
from chatrelay.http.event_stream import EventStreamResponse
from chatrelay.http.routes.chat import start_answer
from chatrelay.http.schemas import TopK
from chatrelay.http.served import Endpoint, decline, error_response_of, read_body
from chatrelay.store.models import User
from chatrelay.text import StoredText
from chatrelay.upstreams.client import Upstream

router = APIRouter(prefix="/v1", tags=["openai"])
# A streaming client that sends this header (1/true/yes) keeps its answer generating when it
# leaves, to re-attach through GET /api/messages/{id}/stream; without it, leaving stops it.
KEEP_GENERATING = "X-Chatrelay-Keep-Generating"


def keeps_generating(request: Request) -> bool:
    """Whether the client asked its answer to go on once it leaves (it will re-attach)."""
    return request.headers.get(KEEP_GENERATING, "").strip().lower() in ("1", "true", "yes")


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")  # include_obfuscation and the like go on

    include_usage: StrictBool = False


class CompletionRequest(BaseModel):
    """OpenAI's request body. The fields chatrelay reads itself are typed; every other field
    (tools, tool_choice, response_format, stop, seed, logprobs, ...) is kept as it came and
    forwarded to upstreams that take it, or refused by name (answers/carriage.py). Messages are
    checked by hand (answers/request_messages.py), so that an error names what the client wrote."""

    model_config = ConfigDict(extra="allow")

    model: StoredText | None = None
    messages: list[Any] = Field(min_length=1)
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    max_tokens: StrictInt | None = Field(default=None, ge=1)
    max_completion_tokens: StrictInt | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: TopK | None = None
    n: StrictInt | None = Field(default=None, ge=1, le=1, description="Only 1 is supported")


async def api_user(request: Request) -> User:
    user = await current_user(request)
    if user is None:
        raise ChatRelayError(
            401,
            "You didn't provide an API key. Send 'Authorization: Bearer cr_...' with a key "
            "from 'chatrelay keys create --user NAME'.",
            code="invalid_api_key",
            type="invalid_request_error",
        )
    return user


@router.post(
    "/chat/completions",
    response_model=None,
    responses={
        200: {
            "description": "A `chat.completion` object; with `stream: true`, Server-Sent Events "
            "of `chat.completion.chunk` objects ending with `data: [DONE]`. "
            "`X-Conversation-Id` and `X-Message-Id` name the stored exchange.",
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
            413,
            429,
            502,
            503,
            notes={
                400: "Or a field has a wrong type or value (OpenAI answers 400, not 422).",
                404: "No such model (`model_not_found`) or `X-Conversation-Id`.",
            },
        ),
    },
)
async def chat_completions(
    body: CompletionRequest,
    request: Request,
    user: Annotated[User, Depends(api_user)],
    service: ChatDep,
    conversation_id: Annotated[str | None, Header(alias="X-Conversation-Id")] = None,
) -> Response:
    """OpenAI chat completions, streamed (``stream: true``) or whole."""
    messages = checked_messages(body.messages)
    forwarded: dict[str, Any] = dict(body.model_extra or {})
    if body.stream_options is not None:
        forwarded["stream_options"] = body.stream_options.model_dump(exclude_unset=True)
    if body.n is not None:
        forwarded["n"] = body.n
    asked = AnswerRequest(
        messages,
        model=body.model,
        conversation_id=conversation_id,
        max_tokens=body.max_completion_tokens or body.max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        top_k=body.top_k,
        api=True,
        extra=forwarded,
        max_tokens_field=(
            "max_completion_tokens" if body.max_completion_tokens is not None else "max_tokens"
        ),
    )
    answer, ids = await start_answer(request, service, asked, user)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        position = Position()
        # No OpenAI client can re-attach: one that leaves is done with the answer, and every
        # token more would only be paid for. Unless it says it will come back for it.
        keep = keeps_generating(request)
        return EventStreamResponse(
            _openai_stream(answer, include_usage=include_usage, position=position),
            headers=ids,
            keepalive=service.settings.keepalive_interval,
            on_abandon=partial(_rest_after_shutdown, answer, position, include_usage=include_usage),
            on_leave=None if keep else answer.stop,
        )
    await answer.wait()
    if answer.error is not None:  # failed, or interrupted by a shutdown
        answer.error.headers.update(ids)
        raise answer.error
    return Response(orjson.dumps(completion(answer)), media_type="application/json", headers=ids)


class _ChatCompletions:
    """``POST /v1/chat/completions`` as served (chatrelay/http/served.py): a well-formed request
    without FastAPI's request handling, every other one by the FastAPI route above.

    Well-formed: a JSON body (``Content-Type: application/json``) that the request model
    validates straight from its bytes. Then the key's user is found by the same dependency and
    the same endpoint function answers; what they raise is answered by the app's error
    handlers, as the route's errors are. Anything else (no body, another content type, bad
    JSON, a field wrong) the route answers, with FastAPI's order of errors (a missing key
    before a bad field) and wording.
    """

    async def __call__(
        self, scope: Scope, receive: Receive, send: Send, rest_of_app: ASGIApp
    ) -> None:
        request = Request(scope, receive)
        raw, declined = b"", False
        try:
            raw = await read_body(request)
            body = _well_formed(raw, request.headers.get("content-type"))
            if body is None:
                declined = True
            else:
                user = await api_user(request)
                conversation_id = request.headers.get("x-conversation-id")
                service = app_context(request.app).chat
                response = await chat_completions(body, request, user, service, conversation_id)
                del body  # not held for as long as the answer streams
        except Exception as error:
            response = await error_response_of(scope, receive, error)
        if declined:
            await decline(rest_of_app, scope, receive, send, raw)
            return
        del raw, request
        await response(scope, receive, send)


def _well_formed(raw: bytes, content_type: str | None) -> CompletionRequest | None:
    if content_type is None or not raw:
        return None
    media_type = content_type.partition(";")[0].strip().lower()
    if media_type != "application/json":  # "+json" types and the rest: the route decides
        return None
    try:
        return CompletionRequest.model_validate_json(raw)
    except ValidationError:
        return None


def served_endpoints() -> dict[tuple[str, str], Endpoint]:
    """Endpoints served ahead of FastAPI's request handling (see ``_ChatCompletions``)."""
    return {("POST", "/v1/chat/completions"): _ChatCompletions()}


def _openai_stream(
    answer: Answer, *, include_usage: bool, position: Position
) -> AsyncGenerator[bytes, None]:
    """The answer's frames as they come from event ``position.index`` on, with OpenAI's ending:
    the finish chunk without usage, then (when asked for) a chunk with empty ``choices`` and
    the usage, then ``[DONE]``."""
    ending = partial(_openai_ending, answer, include_usage)
    return answer.buffer.follow(position.index, position=position, ending=ending)


def _openai_ending(answer: Answer, include_usage: bool) -> bytes:
    """OpenAI's ending, rendered from the answer's values (the page's differs)."""
    if answer.error is not None:
        return stream_error(answer.error)
    encoder = answer.encoder
    ending = encoder.final(answer.finish_reason or "stop", None, status=answer.status)
    if include_usage and answer.usage is not None:
        ending += encoder.usage(answer.usage)
    return ending


def stream_error(error: ChatRelayError) -> bytes:
    """A failure after the stream began, as OpenAI sends it: ``{"error": {...}}`` alone.
    Not a chunk with an ``error`` key: the AI SDK's OpenAI chat model parses that as an
    ordinary chunk and drops the error (openai-wire.md 2.7); the bare frame every SDK raises."""
    body = {"message": error.message, "type": error.type, "param": None, "code": error.code}
    return b"data: " + orjson.dumps({"error": body}) + b"\n\n"


async def _rest_after_shutdown(
    answer: Answer, position: Position, *, include_usage: bool
) -> AsyncGenerator[bytes, None]:
    await answer.cancel_and_wait()
    return _openai_stream(answer, include_usage=include_usage, position=position)


def completion(answer: Answer) -> dict[str, Any]:
    usage = answer.usage
    rich = answer.rich
    message: dict[str, Any] = {"role": "assistant", "content": answer.text}
    if rich is not None:  # tool calls, reasoning, refusal: as the upstream's deltas said
        message.update(rich.message_fields(has_text=bool(message["content"])) or {})
    return {
        "id": answer.encoder.completion_id,
        "object": "chat.completion",
        "created": answer.encoder.created,
        "model": answer.model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": answer.finish_reason or "stop",
                "logprobs": answer.logprobs_of_answer(),
            }
        ],
        "usage": {
            "prompt_tokens": usage.prompt_tokens if usage else 0,
            "completion_tokens": usage.completion_tokens if usage else 0,
            "total_tokens": usage.total_tokens if usage else 0,
        },
    }


def _model(model: str, upstream: Upstream) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": 0, "owned_by": upstream.config.name}


@router.get("/models", responses=error_responses(401))
async def list_models(
    user: Annotated[User, Depends(api_user)], registry: RegistryDep
) -> dict[str, Any]:
    """The models, in OpenAI's list shape."""
    return {"object": "list", "data": [_model(m, u) for m, u in registry.models()]}


@router.get(
    "/models/{model_id:path}",
    responses=error_responses(401, 404, notes={404: "No such model (`model_not_found`)."}),
)
async def retrieve_model(
    model_id: str, user: Annotated[User, Depends(api_user)], registry: RegistryDep
) -> dict[str, Any]:
    """One model, in OpenAI's shape (ids may hold slashes: ``meta-llama/Meta-Llama-...``)."""
    for model, upstream in registry.models():
        if model == model_id:
            return _model(model, upstream)
    raise ChatRelayError(
        404,
        f"The model '{model_id}' does not exist here. GET /v1/models lists the models served.",
        code="model_not_found",
        type="invalid_request_error",
        param="model",
    )
