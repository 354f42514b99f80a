"""CORS for the API paths (``/v1/*``, ``/llm``): browser apps on the origins of
``CHATRELAY_CORS_ORIGINS`` call them with an API key.

Usage::

    policy = CorsPolicy.parse(settings.cors_origins)  # a ValueError names a bad entry
    app.add_middleware(CsrfProtection, cors=policy)
    if policy.origins:
        app.add_middleware(ApiCors, policy=policy)  # outside CsrfProtection: its 403s too

For a listed origin, an API path's preflight is answered (204) and every answer, errors
included, carries ``Access-Control-Allow-Origin``. Never ``Access-Control-Allow-Credentials``:
a request from another origin is never authenticated by the visitor's cookie
(chatrelay/auth/identity.py), only by ``Authorization: Bearer``, so a page elsewhere can spend
its own key but never act as its visitor. For an origin not listed, and for every other path,
nothing here happens: the request goes on as without CORS (a preflight gets the 405 of a route
without OPTIONS, an unsafe request the CSRF 403), and the browser refuses the answer.

Hand-written, not Starlette's ``CORSMiddleware``: its ``send`` wrapper is an ``async def`` run
for every message of a stream (see chatrelay/http/middleware.py); it cannot allow a family of
headers by prefix, and the OpenAI SDKs add ``x-stainless-*`` names from release to release
(one name not allowed fails the whole preflight); and it answers refused origins' preflights
with CORS headers all the same.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatrelay.auth.origins import is_api_path

ALLOWED_METHODS = "GET, POST"
# What the OpenAI SDKs and chatrelay's own API read or send besides the safelisted ones;
# x-stainless-* names (the SDKs' telemetry, retry count, timeout...) are allowed as requested.
ALLOWED_HEADERS = (
    "Authorization, Content-Type, OpenAI-Organization, OpenAI-Project, User-Agent, "
    "X-Conversation-Id, X-Request-Id"
)
_STAINLESS = "x-stainless-"
# What a page may read of an answer beyond the safelisted (Content-Type and the like).
EXPOSED_HEADERS = b"X-Conversation-Id, X-Message-Id, X-Request-Id, Retry-After"
# Short enough that a changed CHATRELAY_CORS_ORIGINS reaches browsers within minutes.
MAX_AGE = "600"
_HEADER_NAME = re.compile(r"[a-z0-9-]+")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalise_origin(value: str) -> str:
    """``value`` as a browser sends it in ``Origin``: lower-case, no default port, no slash.

    Raises ValueError for what is not an origin (a path, no scheme, another scheme)."""
    text = value.strip()
    if text == "*":
        return text
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as error:
        raise ValueError(f"CHATRELAY_CORS_ORIGINS: {value!r} is not an origin") from error
    scheme = parts.scheme.lower()
    if (
        scheme not in _DEFAULT_PORTS
        or not parts.hostname
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or parts.username is not None
    ):
        raise ValueError(
            f"CHATRELAY_CORS_ORIGINS: {value!r} is not an origin "
            "(scheme://host[:port], e.g. https://app.example.com or http://localhost:5173)"
        )
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        host = f"{host}:{port}"
    return f"{scheme}://{host}"


@dataclass(frozen=True, slots=True)
class CorsPolicy:
    """The origins whose pages may call the API paths (``*``: any origin; keys still needed)."""

    origins: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, origins: Iterable[str]) -> CorsPolicy:
        return cls(frozenset(normalise_origin(o) for o in origins if o.strip()))

    def allows(self, origin: str) -> bool:
        return origin in self.origins or "*" in self.origins


class ApiCors:
    """Pure ASGI: answers listed origins' preflights of the API paths, and adds the CORS
    headers to their answers once, at ``http.response.start``."""

    def __init__(self, app: ASGIApp, policy: CorsPolicy) -> None:
        self.app = app
        self.policy = policy

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # Not async, and nothing at all for other paths: see chatrelay/http/middleware.py.
        if scope["type"] != "http" or not is_api_path(scope):
            return self.app(scope, receive, send)
        origin: bytes | None = None
        requested_method: bytes | None = None
        requested_headers: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"origin":
                origin = value
            elif name == b"access-control-request-method":
                requested_method = value
            elif name == b"access-control-request-headers":
                requested_headers = value
        if origin is None or not self.policy.allows(origin.decode("latin-1")):
            return self.app(scope, receive, send)
        if scope["method"] == "OPTIONS" and requested_method is not None:
            return _preflight(origin, requested_headers)(scope, receive, send)
        cors_headers = [
            (b"access-control-allow-origin", origin),
            (b"access-control-expose-headers", EXPOSED_HEADERS),
            (b"vary", b"Origin"),
        ]

        def send_with_cors(message: Message) -> Awaitable[None]:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *cors_headers]
            return send(message)

        return self.app(scope, receive, send_with_cors)


def _preflight(origin: bytes, requested_headers: bytes | None) -> Response:
    """The method and the headers are not checked here: the browser compares what it asked
    for with what is allowed, and its console then names exactly what was refused."""
    allowed = ALLOWED_HEADERS
    if requested_headers is not None:
        stainless = [
            name
            for name in (h.strip().lower() for h in requested_headers.decode("latin-1").split(","))
            if name.startswith(_STAINLESS) and _HEADER_NAME.fullmatch(name)
        ]
        if stainless:
            allowed = ", ".join([allowed, *stainless])
    return Response(
        status_code=204,
        headers={
            "Access-Control-Allow-Origin": origin.decode("latin-1"),
            "Access-Control-Allow-Methods": ALLOWED_METHODS,
            "Access-Control-Allow-Headers": allowed,
            "Access-Control-Max-Age": MAX_AGE,
            "Vary": "Origin, Access-Control-Request-Headers",
        },
    )
