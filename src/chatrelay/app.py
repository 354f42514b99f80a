"""Builds the ASGI app: routes, the page, error handlers, and what runs for the app's lifetime.

Usage::

    app = create_app(Settings())
    uvicorn.run(app, host="127.0.0.1", port=8000)
"""

from __future__ import annotations

import gc
import inspect
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.responses import FileResponse, JSONResponse, Response

from chatrelay import __version__
from chatrelay.alerts import Alerts
from chatrelay.answers.figures import FiguresLoop
from chatrelay.answers.responses_stored import StoredResponses
from chatrelay.answers.service import ChatService
from chatrelay.answers.spending import warming_recorder
from chatrelay.auth.parts import AuthParts, install_auth_parts
from chatrelay.auth.sessions import SessionCookieWriter
from chatrelay.config import Settings
from chatrelay.error_details import shows_details
from chatrelay.errors import install_error_handlers
from chatrelay.http.api_docs import install_api_docs
from chatrelay.http.context import AppContext, ContextDep, RegistryDep, install_context
from chatrelay.http.cors import ApiCors, CorsPolicy
from chatrelay.http.csrf import CsrfProtection
from chatrelay.http.hosts import AllowedHosts, HostAllowList
from chatrelay.http.middleware import BodySizeLimit, SecurityHeaders
from chatrelay.http.routes.account import router as account_router
from chatrelay.http.routes.admin import router as admin_router
from chatrelay.http.routes.auth import router as auth_router
from chatrelay.http.routes.chat import router as chat_router
from chatrelay.http.routes.conversations import router as conversation_router
from chatrelay.http.routes.limits import router as usage_router
from chatrelay.http.routes.livepeer import install_livepeer_gateway
from chatrelay.http.routes.openai import router as openai_router
from chatrelay.http.routes.openai import served_endpoints
from chatrelay.http.routes.responses import router as responses_router
from chatrelay.http.served import ServedEndpoints
from chatrelay.limits.client_ip import ProxyHeaders, TrustedProxies
from chatrelay.limits.quotas import Quotas
from chatrelay.limits.tokens import LlamaVocabCounter
from chatrelay.observability import RequestLog, metrics_response
from chatrelay.store.database import Database, database_url
from chatrelay.store.pruning import Pruner
from chatrelay.upstreams.local_model import LocalModelServer, find_bundled_model
from chatrelay.upstreams.monitor import UpstreamMonitor
from chatrelay.upstreams.registry import UpstreamRegistry

log = logging.getLogger(__name__)
WEB_DIR = Path(__file__).parent / "web"


def create_app(settings: Settings | None = None, *, tune_gc: bool = False) -> FastAPI:
    """``tune_gc``: for a server process of its own (``chatrelay serve``), see _tune_gc."""
    settings = settings or Settings()
    allowed_hosts = AllowedHosts.of(settings)  # refuses to start bound elsewhere without it
    detailed_errors = shows_details(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = Database(database_url(settings))
        await db.upgrade()
        quotas = Quotas.from_settings(settings, db)
        quotas.start()
        pruner = Pruner(db, interval=settings.prune_interval)  # expired sessions, old guests
        pruner.start()
        auth = AuthParts.start(
            settings,
            db,
            sign_in_throttle=quotas.sign_in_throttle,
            count_new_guest=quotas.count_new_guest,
        )
        install_auth_parts(app, auth)
        registry = UpstreamRegistry.from_settings(settings)
        local_model: LocalModelServer | None = None
        if not registry.upstreams and settings.embedded:
            local_model = LocalModelServer(
                settings.embedded_model_path or find_bundled_model(),
                context=settings.embedded_context,
                threads=settings.embedded_threads,
                start_timeout=settings.embedded_start_timeout,
            )
            registry.add(await local_model.start())
            # Its server does not report usage: count with its own vocabulary instead.
            quotas.counters["embedded"] = LlamaVocabCounter(local_model.model_path)
        service = ChatService(settings, registry, db, quotas=quotas)
        alerts = Alerts.from_settings(settings)  # None without CHATRELAY_ALERT_WEBHOOK_URL
        if alerts is not None:
            alerts.start()
            quotas.alerts = service.alerts = alerts
        # Joins the instances: answers a crashed process left "streaming" keep their text,
        # marked interrupted (at once if it ran on this host, else once its heartbeat stops).
        await service.open()
        default = registry.default_model
        warm = settings.warm_models if settings.warm_models is not None else [default or ""]
        monitor = UpstreamMonitor(
            registry,
            warm_models=[m for m in warm if m],
            keep_warm=settings.keep_warm_interval,
            health_interval=settings.health_interval,
            on_warmed=warming_recorder(db, registry.price_of),
            alerts=alerts,
            alert_after=settings.alert_upstream_down,
        )
        monitor.start()
        figures = FiguresLoop(
            db, registry, interval=settings.figures_interval, window=settings.figures_window
        )
        figures.start()
        context = AppContext(
            settings=settings,
            db=db,
            quotas=quotas,
            registry=registry,
            chat=service,
            auth=auth,
            responses=(responses := StoredResponses(service)),
            local_model=local_model,
        )
        install_context(app, context)  # what the routes are given (http/context.py)
        if tune_gc:
            _tune_gc()
        try:
            yield
        finally:
            await monitor.close()
            await figures.close()
            await pruner.close()
            await service.shutdown()
            await responses.close()
            await quotas.close()
            if alerts is not None:
                await alerts.close()
            await registry.close()
            if local_model is not None:
                await local_model.stop()
            await db.close()

    app = FastAPI(
        title="chatrelay",
        version=__version__,
        summary="Streaming chat relay for OpenAI-compatible and Livepeer LLM endpoints.",
        lifespan=lifespan,
        # Swagger UI is served by install_api_docs: FastAPI's own pages load it from a CDN.
        docs_url=None,
        redoc_url=None,
        **_without_fastapi_telemetry(),
    )
    install_error_handlers(app)
    app.include_router(chat_router)
    app.include_router(auth_router)
    app.include_router(account_router)
    app.include_router(conversation_router)
    app.include_router(openai_router)
    app.include_router(responses_router)
    app.include_router(usage_router)
    app.include_router(admin_router)  # and the page, /admin
    install_livepeer_gateway(app)  # POST /llm; its served layer is the innermost
    install_api_docs(app)

    async def metrics_endpoint(registry: RegistryDep) -> Response:
        # No docstring: the route's summary below describes it.
        return metrics_response(registry)

    app.add_api_route(
        "/metrics",
        metrics_endpoint,
        methods=["GET"],
        summary="Prometheus metrics (all workers' when PROMETHEUS_MULTIPROC_DIR is set)",
        response_class=Response,
    )

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """The process is alive."""
        return {"status": "ok"}

    @app.get("/readyz", responses={503: {"description": "Not ready: see `checks`"}})
    async def readyz(context: ContextDep) -> Response:
        """Ready for traffic: the database answers, at least one upstream is usable, and an
        upstream of the default model has answered since start."""
        checks: dict[str, str] = {}
        try:
            await context.db.ping()
            checks["database"] = "ok"
        except Exception as exc:  # any failure means not ready; say which
            checks["database"] = f"failing: {type(exc).__name__}"
        registry = context.registry
        # Not ready until an upstream of the default model has answered (probed here until
        # then, briefly): a gateway URL where nothing listens is not a ready server.
        upstreams = await registry.readiness(wait=min(settings.connect_timeout, 2.0))
        if upstreams != "ok" and not detailed_errors:  # it names the upstreams' URLs
            log.warning("not ready: upstreams %s", upstreams)
            upstreams = "not ready (the server's log says why)"
        checks["upstreams"] = upstreams
        ready = all(value == "ok" for value in checks.values())
        body = {"status": "ready" if ready else "not ready", "checks": checks}
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        # Creates no guest: the first chat does (auth/identity.py NewGuest).
        return FileResponse(WEB_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")
    # Innermost: the hot endpoints served without FastAPI's request handling (the routes
    # above document them and answer what they decline: chatrelay/http/served.py).
    app.add_middleware(ServedEndpoints, endpoints=served_endpoints())
    app.add_middleware(SessionCookieWriter)
    cors = CorsPolicy.parse(settings.cors_origins)
    app.add_middleware(CsrfProtection, cors=cors)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    if cors.origins:  # outside CsrfProtection and BodySizeLimit: their refusals readable too
        app.add_middleware(ApiCors, policy=cors)
    # Before any route, CORS or CSRF: a request for a Host not served here goes no further.
    app.add_middleware(HostAllowList, allowed=allowed_hosts)
    app.add_middleware(SecurityHeaders)
    # Outermost: every layer below sees the client and scheme that trusted proxies report.
    # Just inside ProxyHeaders: every request gets an id and a log line, whatever answers it.
    app.add_middleware(RequestLog, log_content=settings.log_content)
    app.add_middleware(ProxyHeaders, proxies=TrustedProxies(settings.trusted_proxies))
    return app


def _without_fastapi_telemetry() -> dict[str, Any]:
    """FastAPI 0.16x's own OpenTelemetry hooks off: chatrelay has its Prometheus metrics and
    request log, and the hooks' "is anyone listening?" check costs CPU on every request
    (docs/performance.md#fastapi-telemetry). (Older FastAPI has no such argument.)"""
    if "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    return {"telemetry": {"tracing": False, "metrics": False, "logs": False}}


def _tune_gc() -> None:
    """Keep the garbage collector from pausing every stream at once.

    Under load, full collections of the whole heap were long, and every open stream waited
    for them (docs/performance.md#gc). What exists once the server has started
    (modules, the app, pydantic models) lives as long as the process: frozen, it is never
    scanned again; and young collections run every 10,000 allocations instead of 700.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 50, 100)
