"""Hot endpoints served ahead of FastAPI's router, with the router's own route as fallback.

A served endpoint handles the requests it can answer exactly as its FastAPI route would (a
well-formed request, say) and hands every other one back to the router, which then skips it:
the FastAPI route answers those, with all of its behaviour (content types, error order and
wording), and stays the endpoint's documentation.

Usage::

    async def endpoint(scope, receive, send):
        raw = await read_body(Request(scope, receive))
        if not can_answer(raw):
            await decline(scope, receive, send, raw)   # the FastAPI route answers
            return
        ...

    app.router.routes[0:0] = [ServedRoute("/v1/chat/completions", endpoint, methods=["POST"])]

Why: FastAPI's request handling (routing through the included routers, dependency solving,
per-request exit stacks) cost ~0.3 ms of CPU an answer and ~5 KB of every open stream
(the experiment ``lean-route`` in bench/systems.py, docs/benchmarks.md).
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.routing import Match, Route
from starlette.types import Message, Receive, Scope, Send

_DECLINED = "chatrelay.declined"


class ServedRoute(Route):
    """A route that matches until its endpoint declines the request."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope.get(_DECLINED):
            return Match.NONE, {}
        match, child_scope = super().matches(scope)
        if match is Match.FULL:
            child_scope["route"] = self  # the request log's and the metrics' route label
        return match, child_scope


async def read_body(request: Request) -> bytes:
    """The request's body; what goes wrong reading it, as FastAPI's route says it (a limit's
    HTTPException as it is, any other failure, a client gone mid-upload say, a 400)."""
    try:
        return await request.body()
    except HTTPException:
        raise
    except Exception as error:
        raise HTTPException(400, "There was an error parsing the body") from error


async def decline(scope: Scope, receive: Receive, send: Send, body: bytes) -> None:
    """Hand the request back to the router, with the body already read: the next route that
    matches (the FastAPI route) answers it."""
    scope[_DECLINED] = True
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # then, as before: the client's disconnect

    await scope["app"].router(scope, replay, send)
