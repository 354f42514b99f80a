"""Builds the ASGI app: routes, the page, error handlers, and what runs for the app's lifetime.

Usage::

    app = create_app(Settings())
    uvicorn.run(app, host="127.0.0.1", port=8000)
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.staticfiles import StaticFiles
from starlette.responses import FileResponse

from chatrelay import __version__
from chatrelay.auth.csrf import CsrfProtection
from chatrelay.auth.identity import require_user
from chatrelay.auth.routes import router as auth_router
from chatrelay.auth.sessions import SessionCookieWriter
from chatrelay.auth.setup import install_auth_state
from chatrelay.chat.conversation_routes import router as conversation_router
from chatrelay.chat.routes import router as chat_router
from chatrelay.chat.service import ChatService
from chatrelay.config import Settings
from chatrelay.errors import install_error_handlers
from chatrelay.http import BodySizeLimit, SecurityHeaders
from chatrelay.store import conversations
from chatrelay.store.database import Database, database_url
from chatrelay.store.models import utcnow
from chatrelay.upstreams.registry import UpstreamRegistry
from chatrelay.upstreams.sidecar import LocalModelServer, find_bundled_model

log = logging.getLogger(__name__)
WEB_DIR = Path(__file__).parent / "web"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = Database(database_url(settings))
        await db.upgrade()
        async with db.transaction() as session:
            # Answers a crashed process left "streaming" keep their text, marked interrupted.
            interrupted = await conversations.interrupt_streaming_answers(
                session, older_than=utcnow()
            )
        if interrupted:
            log.warning("marked %d unfinished answers from a previous run interrupted", interrupted)
        app.state.db = db
        install_auth_state(app, settings)
        registry = UpstreamRegistry.from_settings(settings)
        sidecar: LocalModelServer | None = None
        if not registry.upstreams and settings.embedded:
            sidecar = LocalModelServer(
                settings.embedded_model_path or find_bundled_model(),
                context=settings.embedded_context,
                threads=settings.embedded_threads,
                start_timeout=settings.embedded_start_timeout,
            )
            registry.add(await sidecar.start())
        service = ChatService(settings, registry, db)
        service.open()
        app.state.chat = service
        app.state.sidecar = sidecar
        try:
            yield
        finally:
            await service.shutdown()
            await registry.close()
            if sidecar is not None:
                await sidecar.stop()
            await db.close()

    app = FastAPI(
        title="chatrelay",
        version=__version__,
        summary="Streaming chat relay for OpenAI-compatible and Livepeer LLM endpoints.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    install_error_handlers(app)
    app.include_router(chat_router)
    app.include_router(auth_router)
    app.include_router(conversation_router)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """The process is alive."""
        return {"status": "ok"}

    @app.get("/", include_in_schema=False)
    async def index(request: Request) -> FileResponse:
        await require_user(request)  # a first visit becomes a guest with a session cookie
        return FileResponse(WEB_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")
    app.add_middleware(SessionCookieWriter)
    app.add_middleware(CsrfProtection)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(SecurityHeaders)
    return app
