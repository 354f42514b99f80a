"""Hot endpoints served inside the app's middlewares but ahead of FastAPI's request handling,
with the FastAPI route of the same path as the fallback.

A served endpoint handles the requests it can answer exactly as its FastAPI route would (a
well-formed request, say) and hands every other one on, with its body, to the rest of the app
(FastAPI's exception handling, its router, the route): the FastAPI route answers those, with
all of its behaviour (content types, error order and wording), and stays the endpoint's
documentation.

Usage::

    async def endpoint(scope, receive, send, rest_of_app):
        raw = await read_body(Request(scope, receive))
        if not can_answer(raw):
            await decline(rest_of_app, scope, receive, send, raw)  # the FastAPI route answers
            return
        try:
            response = ...
        except Exception as error:
            response = await error_response_of(scope, receive, error)  # as the route's errors
        await response(scope, receive, send)

    app.add_middleware(ServedEndpoints, endpoints={("POST", "/v1/chat/completions"): endpoint})
    # added first: the innermost of the app's middlewares, so they all still run

Why: FastAPI's request handling (its exception middleware and exit stack, routing through the
included routers, dependency solving) costs CPU on every answer and memory in every open
stream, and is one more layer that every token's write goes through
(docs/performance.md#served-endpoint).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

Endpoint = Callable[[Scope, Receive, Send, ASGIApp], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ServedRoute:
    """``scope["route"]`` of a served request, as a router's match would set it: its path
    is the route label of the request log and the metrics."""

    method: str
    path: str


class ServedEndpoints:
    """Serves the requests of ``endpoints`` (by method and path); everything else goes on."""

    def __init__(self, app: ASGIApp, endpoints: Mapping[tuple[str, str], Endpoint]) -> None:
        self.app = app
        self.endpoints = {ServedRoute(*key): endpoint for key, endpoint in endpoints.items()}

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if scope["type"] == "http":
            route = ServedRoute(scope["method"], _route_path(scope))
            endpoint = self.endpoints.get(route)
            if endpoint is not None:
                scope["route"] = route
                return endpoint(scope, receive, send, self.app)
        return self.app(scope, receive, send)


def _route_path(scope: Scope) -> str:
    """The path without the app's ``root_path`` (which uvicorn's ``--root-path`` puts in
    front of it), as Starlette's router matches it."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] == "/":
        return path[len(root) :]
    return path


async def read_body(request: Request) -> bytes:
    """The request's body; what goes wrong reading it, as FastAPI's route says it (a limit's
    HTTPException as it is, any other failure, a client gone mid-upload say, a 400)."""
    try:
        return await request.body()
    except HTTPException:
        raise
    except Exception as error:
        raise HTTPException(400, "There was an error parsing the body") from error


async def decline(
    rest_of_app: ASGIApp, scope: Scope, receive: Receive, send: Send, body: bytes
) -> None:
    """Hand the request on to the rest of the app, with the body already read: the FastAPI
    route of the path answers it."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # then, as before: the client's disconnect

    await rest_of_app(scope, replay, send)


async def error_response_of(scope: Scope, receive: Receive, error: Exception) -> Response:
    """The response the app's exception handlers give for ``error``, as Starlette's exception
    middleware finds them (by status for an HTTPException, else by the class or its bases);
    ``error`` itself, raised again, if none is for it. Handlers of ``Exception`` and 500 are
    left to the outermost middleware, as FastAPI does (they answer whatever else goes wrong).
    Written here because Starlette's lookup is private (``_lookup_exception_handler``)."""
    handlers = scope["app"].exception_handlers
    handler = None
    if isinstance(error, HTTPException) and error.status_code != 500:
        handler = handlers.get(error.status_code)
    if handler is None:
        kinds = (kind for kind in type(error).__mro__ if kind is not Exception)
        handler = next((handlers[kind] for kind in kinds if kind in handlers), None)
    if handler is None:
        raise error
    request = Request(scope, receive)
    if inspect.iscoroutinefunction(handler):
        response: Response = await handler(request, error)
    else:
        response = await run_in_threadpool(handler, request, error)
    # Answered: the traceback would keep the request's frames (the scope, the user, the
    # body) alive wherever the error is kept (an answer keeps its error), as Starlette drops it.
    error.__traceback__ = None
    return response
