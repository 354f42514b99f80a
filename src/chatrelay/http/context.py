"""The parts the routes use, made once in the app's lifespan (app.py) and handed to each
route as a typed dependency.

Usage::

    @router.get("/api/usage")
    async def usage(quotas: QuotasDep, user: Annotated[User, Depends(require_user)]): ...

    context = app_context(request.app)  # where FastAPI does not solve dependencies

A route declares what it uses; nothing is fetched by name from ``app.state`` (the one slot
that holds the context is read here only). The auth layer's own parts (auth/parts.py) are
kept beside it, for auth/identity.py, which sits below this layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from starlette.applications import Starlette

from chatrelay.answers.responses_stored import StoredResponses
from chatrelay.answers.service import ChatService
from chatrelay.auth.parts import AuthParts
from chatrelay.config import Settings
from chatrelay.limits.quotas import Quotas
from chatrelay.store.database import Database
from chatrelay.upstreams.local_model import LocalModelServer
from chatrelay.upstreams.registry import UpstreamRegistry

_SLOT = "chatrelay_context"


@dataclass(frozen=True, slots=True)
class AppContext:
    settings: Settings
    db: Database
    quotas: Quotas
    registry: UpstreamRegistry
    chat: ChatService
    auth: AuthParts
    responses: StoredResponses  # the Responses API's stored responses
    # The embedded llama.cpp server, when no upstream is configured (CHATRELAY_EMBEDDED).
    local_model: LocalModelServer | None = None


def install_context(app: Starlette, context: AppContext) -> None:
    setattr(app.state, _SLOT, context)


def app_context(app: Starlette) -> AppContext:
    """The app's context; a RuntimeError before its lifespan made it."""
    context = getattr(app.state, _SLOT, None)
    if not isinstance(context, AppContext):
        raise RuntimeError(
            "chatrelay's app context is made in the app's lifespan: start the app (under "
            "uvicorn, or with its lifespan run) before it serves requests"
        )
    return context


# The dependencies: async, so that FastAPI calls them on the loop (a plain function would
# be sent to its thread pool).


async def _context(request: Request) -> AppContext:
    return app_context(request.app)


async def _settings(request: Request) -> Settings:
    return app_context(request.app).settings


async def _db(request: Request) -> Database:
    return app_context(request.app).db


async def _quotas(request: Request) -> Quotas:
    return app_context(request.app).quotas


async def _registry(request: Request) -> UpstreamRegistry:
    return app_context(request.app).registry


async def _chat(request: Request) -> ChatService:
    return app_context(request.app).chat


ContextDep = Annotated[AppContext, Depends(_context)]
SettingsDep = Annotated[Settings, Depends(_settings)]
DatabaseDep = Annotated[Database, Depends(_db)]
QuotasDep = Annotated[Quotas, Depends(_quotas)]
RegistryDep = Annotated[UpstreamRegistry, Depends(_registry)]
ChatDep = Annotated[ChatService, Depends(_chat)]


async def _responses(request: Request) -> StoredResponses:
    return app_context(request.app).responses


ResponsesDep = Annotated[StoredResponses, Depends(_responses)]
