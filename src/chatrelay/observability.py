"""What an operator watches: Prometheus metrics, one structured log line per request, request ids.

Metrics are module-level prometheus-client objects, so they work in one process and, with
``PROMETHEUS_MULTIPROC_DIR`` set (several workers), across processes: ``/metrics`` then
aggregates every worker's files. Label values are resolved once per answer, never per token.

The request log line knows no route's types: what a request adds to it is handed over with
:func:`log_user` (who asked) and :func:`log_fields` (what the route did, an answer's model,
upstream and tokens say), read once when the response is over.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from typing import Any

import orjson
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("chatrelay.requests")

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)
_GAP_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10)

REQUESTS = Counter(
    "chatrelay_http_requests_total", "HTTP requests by route and status", ["route", "status"]
)
FIRST_TOKEN = Histogram(
    "chatrelay_time_to_first_token_seconds",
    "From sending a request upstream to its first token",
    ["model", "upstream"],
    buckets=_LATENCY_BUCKETS,
)
TOKEN_GAP = Histogram(
    "chatrelay_inter_token_gap_seconds",
    "Silence between two consecutive content chunks of an answer",
    ["model", "upstream"],
    buckets=_GAP_BUCKETS,
)
TOKENS = Counter("chatrelay_tokens_total", "Tokens by direction (in: prompt, out: completion)",
                 ["model", "direction"])  # fmt: skip
ACTIVE_STREAMS = Gauge(
    "chatrelay_active_streams", "Answers being generated now", multiprocess_mode="livesum"
)
UPSTREAM_ERRORS = Counter(
    "chatrelay_upstream_errors_total", "Failed upstream attempts by kind", ["upstream", "kind"]
)
FAILOVERS = Counter("chatrelay_failovers_total", "Answers continued on another upstream",
                    ["model"])  # fmt: skip
UPSTREAM_FIGURE = Gauge(
    "chatrelay_upstream_figure",
    "Figures per upstream and model over CHATRELAY_FIGURES_WINDOW (answers, ttft_p50_ms, "
    "stall_rate, cost_per_1k_useful, ...), from the database",
    ["upstream", "model", "figure"],
    multiprocess_mode="mostrecent",
)
ALERTS = Counter(
    "chatrelay_alerts_total",
    "Alerts to the webhook by kind and outcome (sent, failed after retries, dropped)",
    ["kind", "outcome"],
)
REJECTIONS = Counter(
    "chatrelay_rejections_total", "Requests refused by a limit (rate, streams, budget)", ["code"]
)
MODEL_STATUS = Gauge(
    "chatrelay_model_status",
    "1 for the model's current status (warm, warming, cold, unavailable), else 0",
    ["model", "status"],
    multiprocess_mode="liveall",
)

MODEL_STATUSES = ("warm", "warming", "cold", "unavailable")


def metrics_response(registry_source: Any = None) -> Response:
    """The exposition of every metric; all workers' when running multi-process."""
    if registry_source is not None:
        for model in registry_source.model_health:
            current = registry_source.model_status(model)
            for status in MODEL_STATUSES:
                MODEL_STATUS.labels(model, status).set(1 if status == current else 0)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        body = generate_latest(registry)
    else:
        body = generate_latest()
    return Response(body, media_type=CONTENT_TYPE_LATEST)


_INCOMING_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# The id of the request being handled: also in the tasks it starts (an answer's answer), so that
# what they log and tell the client can name it (chatrelay/error_details.py).
REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)


# What a route adds to its request's log line: called once, when the response is over, with
# whether the content may be logged (CHATRELAY_LOG_CONTENT).
LogFields = Callable[[bool], Mapping[str, object]]
_LOG_FIELDS = "chatrelay_log_fields"
_LOG_USER = "chatrelay_log_user"


def log_fields(connection: HTTPConnection, fields: LogFields) -> None:
    """Have this request's log line also say what ``fields`` returns when the response is
    over (for a stream: when the stream ends, so an answer can report how it ended)."""
    setattr(connection.state, _LOG_FIELDS, fields)


def log_user(connection: HTTPConnection, user_id: str | None) -> None:
    """The user this request's log line names: the last one given (signing in or out during
    the request changes it), none for a request without one."""
    setattr(connection.state, _LOG_USER, user_id)


def _route_of(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if path else "unmatched"  # a template, so ids do not explode the labels


class RequestLog:
    """Pure ASGI: a request id for every request (``X-Request-Id``), one log line and one
    counter increment when the response is over (for a stream: when the stream ends)."""

    def __init__(self, app: ASGIApp, *, log_content: bool = False) -> None:
        self.app = app
        self.log_content = log_content

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _INCOMING_ID.match(incoming) else secrets.token_hex(8)
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        REQUEST_ID.set(request_id)  # this request's own task: no reset needed
        started = time.perf_counter()
        status = 500

        def send_with_id(message: Message) -> Awaitable[None]:  # not async: see http/middleware.py
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            return send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            route = _route_of(scope)
            REQUESTS.labels(route, str(status)).inc()
            log.info(
                "request",
                extra=self._fields(scope, state, route, status, time.perf_counter() - started),
            )

    def _fields(
        self, scope: Scope, state: dict[str, Any], route: str, status: int, seconds: float
    ) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "request_id": state["request_id"],
            "method": scope["method"],
            "path": scope["path"],
            "route": route,
            "status": status,
            "duration_ms": round(seconds * 1000, 1),
        }
        user_id = state.get(_LOG_USER)
        if user_id is not None:
            fields["user_id"] = user_id
        more: LogFields | None = state.get(_LOG_FIELDS)
        if more is not None:
            fields.update(more(self.log_content))
        return fields


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the record's extra fields: for log collectors."""

    _STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "taskName"}

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in self._STANDARD:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure_logging(*, json: bool | None = None) -> None:
    """JSON lines when stderr is not a terminal (a service), readable text when it is."""
    use_json = (not sys.stderr.isatty()) if json is None else json
    handler = logging.StreamHandler()
    if use_json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(_TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    # What no line shows is not worked out for every record (the logging HOWTO's
    # "Optimization"): making a record with the caller's frame, thread and process was half
    # of what each request's log line cost (docs/performance.md#burst-admission).
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None  # no findCaller


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = f"{record.levelname:<8} {record.name}: {record.getMessage()}"
        extra = {k: v for k, v in vars(record).items() if k not in JsonFormatter._STANDARD}
        if extra:
            text += " " + " ".join(f"{k}={v}" for k, v in extra.items())
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text
