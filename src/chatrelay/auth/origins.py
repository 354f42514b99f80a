"""Where a request comes from and where it goes: the questions that decide whether a cookie
may speak for the caller.

Both the auth layer (auth/identity.py: a cookie never authenticates another origin's call to
the API paths) and the HTTP layer's middlewares (http/cors.py, http/csrf.py) ask them, so they
live here, below both.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.types import Scope

_LLM_PATHS = ("/llm", "/llm/")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def is_api_path(scope: Scope) -> bool:
    """``/v1/*``, ``/llm`` or ``/llm/``: the paths browser apps on other origins may call.

    The path without the app's ``root_path`` (uvicorn's ``--root-path`` puts it in front)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] == "/":
        path = path[len(root) :]
    return path.startswith("/v1/") or path in _LLM_PATHS


def _origin_key(scheme: str, netloc: str) -> tuple[str, str, int | None] | None:
    try:
        parts = urlsplit(f"{scheme}://{netloc}")
        port = parts.port or _DEFAULT_PORTS.get(scheme)
    except ValueError:
        return None
    if parts.hostname is None:
        return None
    return scheme, parts.hostname, port


def same_origin(origin: str, *, scheme: str, host: str) -> bool:
    """``origin`` (an Origin header) names the scheme and host this request was sent to."""
    sent_scheme, _, netloc = origin.partition("://")
    theirs = _origin_key(sent_scheme.lower(), netloc)
    ours = _origin_key(scheme.lower(), host)
    return theirs is not None and theirs == ours
