"""Pure ASGI middleware (never BaseHTTPMiddleware: it would slow down every stream).

The ``send`` wrappers here and in the other middlewares are plain functions that return the
inner ``send``'s awaitable, not ``async def``s: they run for every token of every stream, and
an ``async def`` layer costs a coroutine object and a frame each time. So are the middlewares'
own ``__call__``s where nothing is left to do once the inner app is done: they return its
awaitable, and no frame of theirs is kept for as long as a stream lasts (less memory, and
one fewer level for every resumption of the request's task: docs/performance.md#middlewares).
"""

from __future__ import annotations

from collections.abc import Awaitable

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatrelay.errors import ChatRelayError, error_response

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
_SECURITY_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]


class SecurityHeaders:
    """CSP and friends on every response; the page runs no inline script and no foreign code."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if scope["type"] != "http":
            return self.app(scope, receive, send)

        def send_with_headers(message: Message) -> Awaitable[None]:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *_SECURITY_HEADERS]
            return send(message)

        return self.app(scope, receive, send_with_headers)


class BodySizeLimit:
    """Refuses oversized request bodies before anyone parses them, in the JSON error shape.

    Not FastAPI's ``max_body_size``: Starlette's limiter answers a declared oversized body
    with a text/plain 413 of its own, and every error here must be ``{"error": {...}}``.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> HTTPException:
        return HTTPException(
            413,
            f"The request body is larger than {self.max_bytes} bytes (CHATRELAY_MAX_BODY_BYTES).",
        )

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if scope["type"] != "http":
            return self.app(scope, receive, send)
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                error = self._too_large()
                response = error_response(
                    ChatRelayError(413, str(error.detail), code="body_too_large")
                )
                return response(scope, receive, send)
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # An HTTPException is re-raised by the route's body reading and then
                    # answered by the app's handler in the JSON error shape.
                    raise self._too_large()
            return message

        return self.app(scope, counting_receive, send)
