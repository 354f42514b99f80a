"""The Host allow-list: requests are answered only for the names this server is reached by.

Usage::

    allowed = AllowedHosts.of(settings)          # CHATRELAY_ALLOWED_HOSTS, or the default
    allowed.allows("localhost:8000")             # True on loopback
    app.add_middleware(HostAllowList, allowed=allowed)

Why: DNS rebinding. A page on ``rebind.evil.example`` whose name is made to resolve to
127.0.0.1 is, to the browser, same-origin with a chatrelay listening there: it reads the
answers and spends the budget (and the upstream key chatrelay holds), and the CSRF check passes
because ``Origin`` and ``Host`` both say ``rebind.evil.example``. The ``Host`` header is the one
thing the attacker cannot make name this server, so a request for any other name is refused
(400 ``host_not_allowed``) before any route runs.

Not Starlette's ``TrustedHostMiddleware``: it answers in text/plain (every error here is the
JSON error shape) and cuts ``Host`` at its first colon, so ``[::1]:8000`` never matches.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from chatrelay.config import Settings
from chatrelay.errors import ChatRelayError, error_response

# Names that only ever resolve to this machine: what a server on loopback is reached by.
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")


class AllowedHostsRequired(ValueError):
    """Bound to a non-loopback address without CHATRELAY_ALLOWED_HOSTS."""


def split_host(value: str) -> tuple[str, str | None]:
    """``Host`` (or an allow-list entry) as (name, port): lower case, an IPv6 address in
    brackets, no trailing dot; port None when absent."""
    value = value.strip().lower()
    if value.startswith("["):
        name, _, rest = value.partition("]")
        name += "]"
        port = rest[1:] if rest.startswith(":") else None
    elif value.count(":") > 1:  # an IPv6 address written without brackets (an entry)
        name, port = f"[{value}]", None
    else:
        name, colon, port_text = value.partition(":")
        port = port_text if colon else None
    return name.rstrip("."), port


@dataclass(frozen=True, slots=True)
class AllowedHosts:
    """Entries: ``name`` (any port), ``name:port``, ``*.example.com`` (its subdomains, any
    port) or ``*`` (any Host at all: no protection against DNS rebinding)."""

    entries: tuple[tuple[str, str | None], ...]
    any_host: bool = False

    @classmethod
    def parse(cls, entries: Iterable[str]) -> AllowedHosts:
        parsed = tuple(split_host(entry) for entry in entries if entry.strip())
        return cls(parsed, any_host=("*", None) in parsed)

    @classmethod
    def of(cls, settings: Settings) -> AllowedHosts:
        """CHATRELAY_ALLOWED_HOSTS, else the loopback names when bound to loopback. Bound
        elsewhere, the names cannot be guessed (and a wrong guess is a hole), so they are
        required: :class:`AllowedHostsRequired` says what to set."""
        if settings.allowed_hosts is not None:
            return cls.parse(settings.allowed_hosts)
        if settings.on_loopback:
            return cls.parse(LOOPBACK_NAMES)
        raise AllowedHostsRequired(
            f"chatrelay listens on {settings.host}, not on loopback: set "
            "CHATRELAY_ALLOWED_HOSTS to the names clients reach it by (for example "
            "chat.example.com,www.chat.example.com), or to * to accept any Host header (then "
            "nothing protects a browser's user against DNS rebinding)."
        )

    def allows(self, host: str) -> bool:
        if self.any_host:
            return True
        name, port = split_host(host)
        if not name or (port is not None and not port.isdigit()):
            return False
        for allowed, allowed_port in self.entries:
            if allowed_port is not None and allowed_port != port:
                continue
            if allowed == name:
                return True
            suffix = allowed[1:]  # "*.example.com" -> ".example.com": a subdomain's end
            if allowed.startswith("*.") and name.endswith(suffix) and len(name) > len(suffix):
                return True
        return False


class HostAllowList:
    """Pure ASGI: a request whose ``Host`` is not allowed is answered 400 and goes no further.
    (Not async: see chatrelay/http/middleware.py.)"""

    def __init__(self, app: ASGIApp, allowed: AllowedHosts) -> None:
        self.app = app
        self.allowed = allowed

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if scope["type"] != "http" or self.allowed.any_host:
            return self.app(scope, receive, send)
        host = next((value for name, value in scope["headers"] if name == b"host"), None)
        text = host.decode("latin-1") if host is not None else ""
        if self.allowed.allows(text):
            return self.app(scope, receive, send)
        shown = f"'{text[:100]}'" if host is not None else "(none)"
        error = ChatRelayError(
            400,
            f"This server does not answer for the Host {shown}. Reach it by one of the names "
            "its operator allowed (CHATRELAY_ALLOWED_HOSTS).",
            code="host_not_allowed",
        )
        return error_response(error)(scope, receive, send)
