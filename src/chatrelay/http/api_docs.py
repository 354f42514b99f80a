"""The API's description (``/openapi.json``) and its human docs (``/docs``), offline and under CSP.

Routes declare the errors they can answer with ``responses=error_responses(...)``; every one is
the app's one error shape, ``{"error": {"message", "type", "code", "param"?}}``
(:mod:`chatrelay.errors`). :func:`install_api_docs` then serves:

* ``/openapi.json``: FastAPI's description, with that error schema, the ``422`` FastAPI adds by
  itself turned into the error shape (a ``400`` under ``/v1``, as OpenAI answers), the ways to
  authenticate, and a tag for every operation;
* ``/docs``: Swagger UI from the files of the ``fastapi-offline`` package, served by the app
  (no CDN: it works offline), started by a script file of its own (no inline script or style:
  the app's Content-Security-Policy forbids them).

Usage::

    @router.get("/api/things/{id}", responses=error_responses(401, 404))
    ...
    app = FastAPI(docs_url=None, redoc_url=None)  # FastAPI's own /docs needs a CDN
    install_api_docs(app)                          # after the routers are included
"""

from __future__ import annotations

from collections.abc import Mapping
from html import escape
from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.staticfiles import StaticFiles
from starlette.responses import HTMLResponse, Response

from chatrelay.auth.sessions import COOKIE_NAME

DOCS_PATH = "/docs"
ASSETS_PATH = "/docs/assets"  # swagger-ui-bundle.js, swagger-ui.css, favicon.png
INIT_PATH = "/docs/init.js"
SWAGGER_ASSETS = Path(fastapi_offline.__file__).parent / "static"

ERROR_SCHEMA = "Error"
ERROR_REF = f"#/components/schemas/{ERROR_SCHEMA}"

# What each status means across the API; a route may say more with ``notes``.
ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "Invalid request: the body is not valid JSON (`invalid_json`), or a value is over one "
    "of the server's limits (`max_tokens_too_large`, `too_many_messages`, `message_too_long`, "
    "`conversation_too_long`).",
    401: "The `Authorization: Bearer` key is unknown or revoked (`invalid_api_key`), or this "
    "needs credentials that were not sent.",
    403: "Cross-site request refused (`csrf_rejected`): a cookie-authenticated write whose "
    "`Origin` is another site. Requests with an API key are exempt.",
    404: "Not found, or not yours (the same answer either way).",
    409: "Conflict with the current state.",
    413: "The request body is larger than `CHATRELAY_MAX_BODY_BYTES` (`body_too_large`).",
    422: "A field is missing or has an invalid value (`invalid_field`, with `param` naming it).",
    429: "Too many requests (`rate_limited`, `too_many_attempts`) or the token budget is used up "
    "(`budget_exceeded`, with `remaining`, `limit`, `needed`, `period` and `resets_at`). "
    "`Retry-After` says when to retry.",
    502: "The upstream model server refused or failed before answering (`upstream_error`).",
    503: "Temporarily unable to answer: no upstream usable (`no_upstream`, "
    "`upstream_unavailable`), the limits store is unreachable (`limits_unavailable`), or the "
    "server is shutting down (`shutdown`). `Retry-After` says when to retry.",
}

_ERROR_COMPONENTS: dict[str, Any] = {
    ERROR_SCHEMA: {
        "title": "Error",
        "description": "Every error chatrelay answers with, in OpenAI's error shape.",
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"$ref": "#/components/schemas/ErrorDetail"}},
    },
    "ErrorDetail": {
        "title": "ErrorDetail",
        "type": "object",
        "required": ["message", "type", "code"],
        "properties": {
            "message": {"type": "string", "description": "For people: what went wrong."},
            "type": {
                "type": "string",
                "description": "OpenAI's error type, e.g. `invalid_request_error`, "
                "`authentication_error`, `permission_error`, `not_found_error`, "
                "`rate_limit_error`, `upstream_error`, `server_error`.",
            },
            "code": {"type": "string", "description": "For programs: a stable machine code."},
            "param": {
                "type": "string",
                "description": "The request field at fault, e.g. `messages[0].content`.",
            },
        },
        # A budget refusal adds remaining/limit/needed/period/resets_at.
        "additionalProperties": True,
    },
}

_SECURITY_SCHEMES: dict[str, Any] = {
    "apiKey": {
        "type": "http",
        "scheme": "bearer",
        "description": "A chatrelay API key (`cr_...`), from `chatrelay keys create --user NAME`.",
    },
    "sessionCookie": {
        "type": "apiKey",
        "in": "cookie",
        "name": COOKIE_NAME,
        "description": "The web page's session (a guest's or a signed-in account's).",
    },
}

# Tags for operations whose router gives none: by path, or by prefix ending in "/" (first
# match wins).
_TAGS: tuple[tuple[str, str], ...] = (
    ("/api/auth/", "accounts"),
    ("/api/me", "accounts"),
    ("/api/usage", "accounts"),
    ("/api/", "chat"),
    ("/", "operations"),
)


def _tag_of(path: str) -> str:
    return next(
        tag for rule, tag in _TAGS if path == rule or (rule.endswith("/") and path.startswith(rule))
    )


_TAG_DESCRIPTIONS = {
    "chat": "The web page's chat API: streamed answers (Server-Sent Events), stop, models.",
    "conversations": "Your stored conversations. Owner checked on every id.",
    "accounts": "Accounts, sessions and usage.",
    "openai": "OpenAI's API: point an OpenAI client's base URL at `/v1`, key = an API key.",
    "operations": "Health and metrics, for operators.",
    "admin": "The admin view's API: usage and spend grouped and exported, the figures per "
    "upstream, accounts and keys. Admins only; anyone else gets a 404.",
}


def error_responses(
    *statuses: int, notes: Mapping[int, str] | None = None
) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route decorator: each status in the app's error shape.

    ``notes`` adds what the status means for this route to the shared description.
    """
    notes = notes or {}
    responses: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        description = ERROR_DESCRIPTIONS[status]
        if status in notes:
            description = f"{notes[status]} {description}"
        responses[status] = {
            "description": description,
            "content": {"application/json": {"schema": {"$ref": ERROR_REF}}},
        }
    return responses


def _is_default_422(response: Mapping[str, Any]) -> bool:
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    return bool(schema.get("$ref", "").endswith("/HTTPValidationError"))


def _refs(value: Any) -> set[str]:
    if isinstance(value, dict):
        found = {value["$ref"]} if isinstance(value.get("$ref"), str) else set()
        for item in value.values():
            found |= _refs(item)
        return found
    if isinstance(value, list):
        return set().union(*(_refs(item) for item in value)) if value else set()
    return set()


def finish_openapi(spec: dict[str, Any]) -> dict[str, Any]:
    """FastAPI's description made true to what the app answers (see the module's docstring)."""
    paths: dict[str, dict[str, Any]] = spec.get("paths", {})
    for path, operations in paths.items():
        openai_route = path.startswith("/v1/")
        for operation in operations.values():
            responses: dict[str, Any] = operation.setdefault("responses", {})
            if "422" in responses and _is_default_422(responses["422"]):
                # Our handler answers validation errors in the error shape, never FastAPI's.
                del responses["422"]
                status = 400 if openai_route else 422
                responses.setdefault(str(status), error_responses(status)[status])
            if not operation.get("tags"):
                operation["tags"] = [_tag_of(path)]
            if openai_route:
                operation["security"] = [{"apiKey": []}]
    components = spec.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas.update(_ERROR_COMPONENTS)
    # FastAPI's validation error schemas, now unused (unless a route names them itself).
    fastapi_own = ("HTTPValidationError", "ValidationError")
    others = {name: schema for name, schema in schemas.items() if name not in fastapi_own}
    used = _refs(paths) | _refs(others)
    for name in fastapi_own:
        if f"#/components/schemas/{name}" not in used:
            schemas.pop(name, None)
    components["securitySchemes"] = _SECURITY_SCHEMES
    # Credentials are optional in general (a first visit becomes a guest); /v1 requires a key.
    spec["security"] = [{"apiKey": []}, {"sessionCookie": []}, {}]
    used_tags = {tag for ops in paths.values() for op in ops.values() for tag in op["tags"]}
    spec["tags"] = [
        {"name": name, "description": text}
        for name, text in _TAG_DESCRIPTIONS.items()
        if name in used_tags
    ]
    return spec


_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} API</title>
<link rel="stylesheet" href="{assets}/swagger-ui.css">
<link rel="icon" type="image/png" href="{assets}/favicon.png">
</head>
<body>
<div id="swagger-ui" data-openapi-url="{openapi_url}"></div>
<script src="{assets}/swagger-ui-bundle.js"></script>
<script src="{init}"></script>
</body>
</html>
"""

# Swagger UI's start, in a file of its own: the CSP allows no inline script.
_INIT_JS = """"use strict";
(function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.openapiUrl,
    domNode: root,
    deepLinking: true,
    layout: "BaseLayout",
    presets: [SwaggerUIBundle.presets.apis],
    // The default validator badge is an image from a foreign site: offline, and not allowed.
    validatorUrl: null,
    // Requests made with "Try it out" carry the page's session cookie, as the web page's do.
    withCredentials: true,
  });
})();
"""


def install_api_docs(app: FastAPI) -> None:
    """Serve the finished ``/openapi.json`` and Swagger UI at ``/docs`` (call after routers)."""

    generate = app.openapi  # FastAPI's own: regenerates when routes are added
    finished: list[dict[str, Any]] = []

    def openapi() -> dict[str, Any]:
        spec = generate()
        if not finished or finished[0] is not spec:
            finished[:] = [finish_openapi(spec)]  # in place, once per generated description
        return spec

    app.openapi = openapi  # type: ignore[method-assign]

    async def docs_page(request: Request) -> HTMLResponse:
        root = escape(request.scope.get("root_path", ""))
        page = _PAGE.format(
            title=escape(app.title),
            assets=root + ASSETS_PATH,
            init=root + INIT_PATH,
            openapi_url=root + escape(app.openapi_url or "/openapi.json"),
        )
        return HTMLResponse(page, headers={"Cache-Control": "no-cache"})

    async def docs_init() -> Response:
        return Response(_INIT_JS, media_type="text/javascript; charset=utf-8")

    app.add_api_route(DOCS_PATH, docs_page, methods=["GET"], include_in_schema=False)
    app.add_api_route(INIT_PATH, docs_init, methods=["GET"], include_in_schema=False)
    app.mount(ASSETS_PATH, StaticFiles(directory=SWAGGER_ASSETS), name="api-docs-assets")
