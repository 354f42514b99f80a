"""``POST /api/chat``, ``POST /api/messages/{id}/stop`` and ``GET /api/models``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import StreamingResponse

from chatrelay.api_docs import error_responses
from chatrelay.auth.identity import current_user, require_user
from chatrelay.chat.job import GenerationJob
from chatrelay.chat.schemas import ChatRequest
from chatrelay.chat.service import ChatService
from chatrelay.errors import ChatRelayError
from chatrelay.store.conversations import NotFound
from chatrelay.store.models import User

router = APIRouter()

# What a streamed answer needs so that no proxy or browser holds tokens back.
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _service(request: Request) -> ChatService:
    service: ChatService = request.app.state.chat
    return service


@router.post(
    "/api/chat",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The answer as Server-Sent Events: OpenAI `chat.completion.chunk` "
            "objects, then `data: [DONE]`. Failures after the stream began arrive as "
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
            notes={404: "No such model (`model_not_found`) or conversation."},
        ),
    },
)
async def chat(
    body: ChatRequest, request: Request, user: Annotated[User, Depends(require_user)]
) -> StreamingResponse:
    """Stream the answer as OpenAI ``chat.completion.chunk`` events; the exchange is stored."""
    job, ids = await start_answer(request, body, user)
    return StreamingResponse(
        job.buffer.follow(),
        media_type="text/event-stream",
        headers={**STREAM_HEADERS, **ids},
    )


async def start_answer(
    request: Request, body: ChatRequest, user: User
) -> tuple[GenerationJob, dict[str, str]]:
    """Store the question and start its answer, for any route that asks: the job, and the
    headers that say where it is stored. An upstream refusal within the start wait is raised
    as the HTTP error it is, carrying those headers (the question is stored all the same, so
    a retry can continue there)."""
    service = _service(request)
    # The address ProxyHeaders settled on: the peer, or the client a trusted proxy names.
    client_ip = request.client.host if request.client else None
    caller = service.quotas.caller(user, client_ip)
    job = await service.start(body, owner_id=user.id, caller=caller)
    request.state.job = job  # for the request's log line
    ids = {"X-Message-Id": job.id, "X-Conversation-Id": job.conversation_id}
    try:
        await job.accepted(wait=service.settings.stream_start_wait)
    except ChatRelayError as refused:
        refused.headers.update(ids)
        raise
    return job, ids


@router.post(
    "/api/messages/{message_id}/stop",
    responses=error_responses(401, 403, 404, notes={404: "No such answer in progress."}),
)
async def stop(
    message_id: str, request: Request, user: Annotated[User | None, Depends(current_user)]
) -> dict[str, Any]:
    """Stop generating an answer now; the text so far is kept."""
    if user is None:
        raise NotFound("message", message_id)
    job = _service(request).stop(message_id, owner_id=user.id)
    return {"id": job.id, "status": "stopping" if not job.finished else job.status}


@router.get("/api/models")
async def models(request: Request) -> dict[str, Any]:
    """The models this server can answer with (OpenAI list shape), the default one, and how
    ready each is: ``warm``, ``warming``, ``cold`` or ``unavailable``."""
    registry = _service(request).registry
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
