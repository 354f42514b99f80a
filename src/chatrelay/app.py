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

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.responses import FileResponse

from chatrelay import __version__
from chatrelay.chat.routes import router as chat_router
from chatrelay.chat.service import ChatService
from chatrelay.config import Settings
from chatrelay.errors import install_error_handlers
from chatrelay.http import BodySizeLimit, SecurityHeaders
from chatrelay.store.database import Database, database_url
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
        app.state.db = db
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
        service = ChatService(settings, registry)
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

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """The process is alive."""
        return {"status": "ok"}

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(WEB_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(SecurityHeaders)
    return app
