"""Livepeer's LLM API, spoken by chatrelay itself: ``POST /llm`` (and ``/llm/``).

Any client of a go-livepeer gateway works against chatrelay by pointing its gateway URL at it
(the Livepeer Next.js tutorial: ``LIVEPEER_GATEWAY_URL`` alone; its ``LIVEPEER_API_KEY``
becomes a chatrelay API key), and chatrelay's own ``livepeer`` dialect can use another
chatrelay as its gateway. Behind it are the same budgets, limits, failover, storage and stop
as the page's answers.

Answered as a gateway answers (``livepeer-wire.md``):

* streamed: ``data:`` chunks with ``finish_reason: ""`` until the last one, ``role`` in every
  delta, the running ``usage`` in every chunk, keys in the order Go marshals them, no
  ``[DONE]``; a failure after the 200 is ``data: {"error": "..."}`` and the end of the body;
* whole (``stream: false``): the gateway's ``chat.completion``-like body;
* errors: 400 ``missing required fields`` when ``model``, ``messages`` (non-empty),
  ``max_tokens`` or ``stream`` is absent, 503 when no upstream has the model, 500 when the
  upstream failed; in chatrelay's error shape, a superset of the gateway's
  ``{"error": {"message": ...}}``.

Keyless requests are refused (401) unless ``CHATRELAY_LLM_GUESTS`` is on; then each is served
as a guest (the one its session cookie names, if any).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable
from functools import partial
from typing import Any

import orjson
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from chatrelay.answers.answer import Answer
from chatrelay.answers.events import Position
from chatrelay.answers.turns import AnswerRequest
from chatrelay.auth.identity import AUTHENTICATION_ERROR, current_user, require_user
from chatrelay.errors import ChatRelayError, validation_error
from chatrelay.http.context import app_context
from chatrelay.http.event_stream import EventStreamResponse
from chatrelay.http.routes.chat import start_answer
from chatrelay.http.routes.openai import keeps_generating
from chatrelay.http.schemas import RequestMessage, TopK, upstream_messages
from chatrelay.http.served import Endpoint, ServedEndpoints, error_response_of, read_body
from chatrelay.store.models import User
from chatrelay.text import StoredText

PATHS = ("/llm", "/llm/")
# The gateway's own words for a request without one of the fields it needs (go-livepeer
# checks model, messages, stream and max_tokens); clients may match on them.
MISSING_FIELDS = "missing required fields"
REQUIRED = ("model", "messages", "max_tokens", "stream")


class LivepeerRequest(BaseModel):
    """The gateway's request (go-livepeer ``LLMRequest``): only these seven fields exist, and
    others are ignored, as the gateway's JSON decoding ignores them. Every field is optional
    here so that an absent one is the gateway's 400 ``missing required fields``, not a
    validation error; ``null`` counts as absent, as a nil pointer does in Go."""

    model_config = ConfigDict(extra="ignore")

    model: StoredText | None = None
    messages: list[RequestMessage] | None = None
    max_tokens: StrictInt | None = Field(default=None, ge=1)
    stream: StrictBool | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: TopK | None = None

    def missing(self) -> list[str]:
        return [name for name in REQUIRED if not _given(getattr(self, name))]


def _given(value: object) -> bool:
    return value is not None and value != []


class LivepeerFrames:
    """An answer's events in a go-livepeer gateway's shape (a ``FrameShape`` of answers/events.py),
    for one follower.

    A token is one ``%`` of a byte template, as an OpenAI chunk is two concatenations: the
    running usage counts the tokens sent (one per chunk from a Livepeer upstream, so exactly
    its own count) with the prompt tokens the upstream has reported so far; the last chunk
    carries the answer's settled usage. Whole frames (a few an answer) are re-encoded: the
    role chunk goes (a gateway sends none: ``role`` is in every delta), as does ``[DONE]``;
    comments (keep-alives) pass; an error is the runner's ``{"error": "..."}``."""

    __slots__ = ("_answer", "_template")

    def __init__(self, answer: Answer) -> None:
        self._answer = answer
        head = self._chunk("\x00", "", (0, 0))
        # The usage numbers in the order the template takes them: completion, prompt, total.
        head["usage"] = dict.fromkeys(
            ("completion_tokens", "prompt_tokens", "total_tokens"), "\x01"
        )
        raw = orjson.dumps(head).replace(b"%", b"%%")  # a '%' in the model's name stays one
        raw = raw.replace(b'"\\u0001"', b"%d")
        self._template = b"data: " + raw.replace(b'"\\u0000"', b'"%s"') + b"\n\n"

    def _chunk(self, content: str, finish_reason: str, usage: tuple[int, int]) -> dict[str, Any]:
        # Keys in the order go-livepeer's JSON has them (Go marshals struct fields in order).
        answer = self._answer
        prompt, completion = usage
        return {
            "choices": [
                {
                    "delta": {"content": content, "role": "assistant"},
                    "finish_reason": finish_reason,
                    "index": 0,
                }
            ],
            "created": answer.encoder.created,
            "id": answer.encoder.completion_id,
            "model": answer.model,
            "usage": _usage(prompt, completion),
        }

    def content(self, escaped: bytes | bytearray, count: int) -> bytes:
        usage = self._answer.usage
        prompt = usage.prompt_tokens if usage is not None else 0
        return self._template % (escaped, count, prompt, prompt + count)

    def whole(self, frame: bytes) -> bytes:
        if frame.startswith(b":"):
            return frame  # a comment (keep-alive, "waiting for the upstream")
        return b""  # the role chunk, [DONE]

    def rich(self, frame: bytes, escaped: bytes | bytearray, count: int) -> bytes:
        return self.content(escaped, count)  # the runner's chunk has no field for the rest

    def ending(self) -> bytes:
        error = self._answer.error
        if error is not None:
            # The runner's shape, and chatrelay's machine code beside it (clients that do
            # not know it ignore it).
            return _sse({"error": error.message, "code": error.code})
        return _sse(self._final())

    def _final(self) -> dict[str, Any]:
        answer = self._answer
        usage = answer.usage
        counted = (
            (usage.prompt_tokens, usage.completion_tokens)
            if usage is not None
            else (0, answer.buffer.content_count())
        )
        chunk = self._chunk("", answer.finish_reason or "stop", counted)
        if answer.status != "complete":  # stopped: the client's own stop, not the model's
            chunk["x_chatrelay"] = {"status": answer.status}
        return chunk


def _usage(prompt: int, completion: int) -> dict[str, int]:
    """The gateway's usage object (Go's key order)."""
    return {
        "completion_tokens": completion,
        "prompt_tokens": prompt,
        "total_tokens": prompt + completion,
    }


def _sse(obj: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def whole_answer(answer: Answer) -> dict[str, Any]:
    """The gateway's non-streaming body (keys in Go's order)."""
    usage = answer.usage
    prompt = usage.prompt_tokens if usage is not None else 0
    completion = usage.completion_tokens if usage is not None else answer.buffer.content_count()
    body: dict[str, Any] = {
        "choices": [
            {
                "finish_reason": answer.finish_reason or "stop",
                "index": 0,
                "message": {"content": answer.text, "role": "assistant"},
            }
        ],
        "created": answer.encoder.created,
        "id": answer.encoder.completion_id,
        "model": answer.model,
        "usage": _usage(prompt, completion),
    }
    if answer.status != "complete":
        body["x_chatrelay"] = {"status": answer.status}
    return body


def livepeer_stream(answer: Answer, position: Position) -> AsyncGenerator[bytes, None]:
    """The answer's events from ``position.index`` on, in the gateway's shape."""
    return answer.buffer.follow(position.index, position=position, shape=LivepeerFrames(answer))


async def _rest_after_shutdown(answer: Answer, position: Position) -> AsyncGenerator[bytes, None]:
    await answer.cancel_and_wait()
    return livepeer_stream(answer, position)


def as_gateway_error(error: Exception) -> Exception:
    """chatrelay's error with the status a gateway gives the same failure; its body (message,
    type, code) stays chatrelay's. A copy: an answer keeps its own error for re-attaching."""
    if isinstance(error, ValidationError):
        return _bad_request(error)
    if not isinstance(error, ChatRelayError):
        return error
    status = error.status
    if error.code == "model_not_found":
        status = 503  # the gateway: no orchestrator offers the model
    elif status == 502:
        status = 500  # the gateway answers 500 for any failure of the orchestrator
    elif status == 422:
        status = 400  # the gateway's JSON decoding refuses a bad field with 400
    if status == error.status:
        return error
    return ChatRelayError(
        status,
        error.message,
        code=error.code,
        type=error.type,
        headers=dict(error.headers),
        param=error.param,
        details=dict(error.details),
    )


def _bad_request(error: ValidationError) -> ChatRelayError:
    located = [{**e, "loc": ("body", *e["loc"])} for e in error.errors(include_url=False)]
    refused = validation_error(RequestValidationError(located))
    refused.status = 400
    return refused


def _key_required() -> ChatRelayError:
    return ChatRelayError(
        401,
        "This server needs an API key for /llm: send 'Authorization: Bearer cr_...' with a key "
        "from 'chatrelay keys create --user NAME' (the Livepeer tutorial's LIVEPEER_API_KEY), "
        "or turn on CHATRELAY_LLM_GUESTS to serve keyless requests as guests.",
        code="authentication_required",
        type=AUTHENTICATION_ERROR,
    )


async def _answer(request: Request) -> Response:
    context = app_context(request.app)
    settings = context.settings
    # Who first, as a gateway behind its auth proxy: a bad key is a 401 whatever the body.
    user: User | None = await current_user(request)
    if user is None and not settings.llm_guests:
        raise _key_required()
    body = LivepeerRequest.model_validate_json(await read_body(request))
    if body.max_tokens is None and settings.llm_default_max_tokens is not None:
        body.max_tokens = settings.llm_default_max_tokens  # the operator's choice, not Livepeer's
    missing = body.missing()
    if missing:
        raise ChatRelayError(
            400, MISSING_FIELDS, code="missing_required_fields", details={"missing": missing}
        )
    assert body.messages is not None
    asked = AnswerRequest(
        upstream_messages(body.messages),
        model=body.model,
        max_tokens=body.max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        top_k=body.top_k,
        conversation_id=request.headers.get("x-conversation-id"),
    )
    if user is None:  # checked above: guests are served
        user = await require_user(request)
    stream = body.stream
    del body
    answer, ids = await start_answer(request, context.chat, asked, user)
    if stream:
        position = Position()
        # A gateway's client that leaves is done with the answer (a gateway cancels it too,
        # and no Livepeer client can re-attach): every token more would only be paid for.
        # Unless it says it will come back for it, as on /v1.
        keep = keeps_generating(request)
        return EventStreamResponse(
            livepeer_stream(answer, position),
            headers=ids,
            keepalive=settings.keepalive_interval,
            on_abandon=partial(_rest_after_shutdown, answer, position),
            on_leave=None if keep else answer.stop,
        )
    await answer.wait()
    if answer.error is not None:  # failed, or interrupted by a shutdown
        refused = as_gateway_error(answer.error)
        assert isinstance(refused, ChatRelayError)
        refused.headers.update(ids)
        raise refused
    return Response(orjson.dumps(whole_answer(answer)), media_type="application/json", headers=ids)


class LivepeerGateway:
    """``POST /llm`` as a plain ASGI endpoint: every request, good or bad, is answered here
    (a gateway's errors are not FastAPI's), with the app's error handlers for the errors."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            response = await _answer(request)
        except Exception as error:
            answer = as_gateway_error(error)
            if answer is not error:
                # The original may be kept (an answer keeps its error for re-attaching clients):
                # not with this request's frames in its traceback.
                error.__traceback__ = None
            # Anything else (a bug) is raised again, to the app's outermost handler.
            response = await error_response_of(scope, receive, answer)
        del request  # not held for as long as the answer streams
        await response(scope, receive, send)


gateway = LivepeerGateway()

router = APIRouter()
# Plain routes (the endpoint is the ASGI app itself, no FastAPI request handling): they answer
# other methods with 405, and POST where the served layer below is not installed. Not in
# /openapi.json: docs/livepeer-gateway.md describes the API.
router.routes.extend(
    Route(path, gateway, methods=["POST"], include_in_schema=False) for path in PATHS
)


def _served(scope: Scope, receive: Receive, send: Send, rest_of_app: ASGIApp) -> Awaitable[None]:
    return gateway(scope, receive, send)


def install_livepeer_gateway(app: FastAPI) -> None:
    """``POST /llm``: the route, and the same endpoint served ahead of FastAPI's request
    handling (chatrelay/http/served.py), as ``/v1/chat/completions`` is: no exception middleware
    wrapping every token's write. Call it before the app's other middlewares are added: its
    layer is then the innermost, and they all still run."""
    app.include_router(router)
    endpoints: dict[tuple[str, str], Endpoint] = {("POST", path): _served for path in PATHS}
    app.add_middleware(ServedEndpoints, endpoints=endpoints)
