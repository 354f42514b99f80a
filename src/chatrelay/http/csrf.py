"""Cross-site request forgery: cookie-authenticated writes must come from our own pages.

A browser sends ``Origin`` with every cross-origin POST, PUT, PATCH and DELETE, so an unsafe
request whose ``Origin`` is not this server's own scheme://host is refused (403
``csrf_rejected``). Together with ``SameSite=Lax`` cookies and JSON-only bodies (a form post
cannot send ``application/json``), another site cannot act with a visitor's cookie.

Requests carrying ``Authorization: Bearer`` are exempt: a browser never attaches that header
by itself, so it proves the caller holds a key rather than a cookie jar. So are keyless requests
from the origins of ``CHATRELAY_CORS_ORIGINS`` to the API paths (chatrelay/http/cors.py): a cookie
is never what those are authenticated by (chatrelay/auth/identity.py), so they are answered as
a stranger's (a 401 asking for a key), which their page can then read.
"""

from __future__ import annotations

from collections.abc import Awaitable

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from chatrelay.auth.api_keys import bearer_token
from chatrelay.auth.origins import is_api_path, same_origin
from chatrelay.errors import ChatRelayError, error_response
from chatrelay.http.cors import CorsPolicy

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class CsrfProtection:
    """Pure ASGI: refuses unsafe cookie requests from a foreign ``Origin``."""

    def __init__(self, app: ASGIApp, cors: CorsPolicy | None = None) -> None:
        self.app = app
        self.cors = cors or CorsPolicy()

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # Not async: see chatrelay/http/middleware.py.
        if scope["type"] == "http" and scope["method"] in UNSAFE_METHODS:
            headers = Headers(scope=scope)
            origin = headers.get("origin")
            if (
                origin is not None
                and bearer_token(headers.get("authorization")) is None
                and not same_origin(origin, scheme=scope["scheme"], host=headers.get("host", ""))
                and not (self.cors.allows(origin) and is_api_path(scope))
            ):
                error = ChatRelayError(
                    403,
                    "Cross-site request refused: this request did not come from this site's "
                    "own page. Use an API key (Authorization: Bearer) from other origins.",
                    code="csrf_rejected",
                    type="permission_error",
                )
                return error_response(error)(scope, receive, send)
        return self.app(scope, receive, send)
