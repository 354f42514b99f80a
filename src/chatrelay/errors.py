"""The one error shape every route answers with: ``{"error": {"message", "type", "code"}}``.

Raise :class:`ChatRelayError` anywhere below a route; the app's handlers turn it (and
FastAPI's own validation and HTTP errors) into that JSON with the right status.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from chatrelay.observability import REJECTIONS

log = logging.getLogger(__name__)

# OpenAI's error "type" values, so OpenAI clients classify our errors the way they expect.
INVALID_REQUEST = "invalid_request_error"
NOT_FOUND = "not_found_error"
UPSTREAM = "upstream_error"
SERVER = "server_error"


class ChatRelayError(Exception):
    """An error a client should see, with its HTTP status and a stable machine code."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str,
        type: str = INVALID_REQUEST,
        headers: dict[str, str] | None = None,
        param: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.type = type
        self.headers = headers or {}
        self.param = param
        # Extra machine-readable fields next to message/type/code (e.g. a budget's remaining).
        self.details = details or {}

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"message": self.message, "type": self.type, "code": self.code}
        if self.param is not None:
            error["param"] = self.param
        return {"error": {**self.details, **error}}


def error_response(error: ChatRelayError) -> Response:
    return Response(
        orjson.dumps(error.body()),
        status_code=error.status,
        media_type="application/json",
        headers=error.headers,
    )


def _field_path(location: tuple[Any, ...]) -> str:
    # ("body", "messages", 0, "content") -> "messages[0].content". The names pydantic gives
    # the members of a union or its validators ("function-after[storable(), str]", "str",
    # "list[Part]") are not fields the client wrote: left out.
    path = ""
    for part in location[1:] if location and location[0] == "body" else location:
        if isinstance(part, int):
            path += f"[{part}]"
        elif str(part).isidentifier() and str(part) not in _TYPE_NAMES:
            path += f".{part}" if path else str(part)
    return path or "body"


_TYPE_NAMES = frozenset({"str", "int", "float", "bool", "list", "dict", "none", "tuple"})


def validation_error(exc: RequestValidationError) -> ChatRelayError:
    first = exc.errors()[0]
    field = _field_path(tuple(first.get("loc", ())))
    if first.get("type") == "json_invalid":
        return ChatRelayError(
            400,
            "The request body is not valid JSON: "
            f"{first.get('ctx', {}).get('error', 'parse error')}.",
            code="invalid_json",
        )
    message = str(first.get("msg", "invalid value"))
    return ChatRelayError(
        422, f"Invalid field '{field}': {message}.", code="invalid_field", param=field
    )


def install_error_handlers(app: FastAPI) -> None:
    """Make every failure, ours or the framework's, answer in the one error shape."""

    async def on_chatrelay_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, ChatRelayError)
        if exc.status == 429:
            REJECTIONS.labels(exc.code).inc()
        return error_response(exc)

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        error = validation_error(exc)
        if request.url.path.startswith("/v1/"):
            error.status = 400  # OpenAI answers every invalid request with 400, and SDKs expect it
        return error_response(error)

    async def on_http_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}.get(
            exc.status_code, "http_error"
        )
        kind = NOT_FOUND if exc.status_code == 404 else INVALID_REQUEST
        return error_response(
            ChatRelayError(
                exc.status_code,
                str(exc.detail),
                code=code,
                type=kind,
                headers=dict(exc.headers or {}),
            )
        )

    async def on_unexpected_error(_: Request, exc: Exception) -> Response:
        # Still the JSON error shape (never a text/plain 500), and no internals in it.
        log.error("unhandled error", exc_info=exc)
        return error_response(
            ChatRelayError(
                500,
                "Internal server error; the details are in the server's log.",
                code="internal_error",
                type=SERVER,
            )
        )

    app.add_exception_handler(Exception, on_unexpected_error)
    app.add_exception_handler(ChatRelayError, on_chatrelay_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
