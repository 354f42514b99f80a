"""Who the client is: the socket peer, or what trusted proxies say it is.

Usage::

    proxies = TrustedProxies(["10.0.0.0/8", "127.0.0.1"])
    proxies.client_ip("10.0.0.2", ["203.0.113.9, 10.0.0.5"])   # -> "203.0.113.9"
    app.add_middleware(ProxyHeaders, proxies=proxies)          # outermost: sets scope["client"]

``X-Forwarded-For`` is read right to left: each trusted proxy appends the address it saw, so
the right-most address that is *not* a trusted proxy is the client. Everything left of it was
written by the client itself and is ignored (anyone can send ``X-Forwarded-For: 1.2.3.4``).
The peer's own address counts only when the peer is not a trusted proxy.

This replaces uvicorn's proxy-header handling (``chatrelay serve`` turns that off), so one
setting, ``CHATRELAY_TRUSTED_PROXIES``, decides both the client address and the scheme.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Awaitable, Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from chatrelay.setting_types import proxy_networks

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_address(value: str) -> Address | None:
    """An address from a header hop: ``1.2.3.4``, ``1.2.3.4:5678``, ``[::1]:80``, ``::1``."""
    value = value.strip().strip('"')
    if value.startswith("["):
        value = value[1 : value.find("]")] if "]" in value else ""
    elif value.count(":") == 1:  # IPv4 with a port; a bare IPv6 has at least two colons
        value = value.partition(":")[0]
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # ::ffff:1.2.3.4 is 1.2.3.4, for trust and for limits
    return address


# Remembered: parsing the address cost ~1 % of an admission in a burst, and a burst comes from
# few addresses (bounded: a flood of distinct ones only evicts).
@functools.lru_cache(maxsize=4096)
def limit_key(client: str | None, *, ipv6_prefix: int) -> str | None:
    """What per-address limits count ``client`` as: an IPv4 address itself, an IPv6 address
    as its network of ``ipv6_prefix`` bits (``2001:db8:1:2::/64``).

    A host or subscriber is commonly given a whole /64, so counting exact IPv6 addresses
    would give one client 2^64 fresh rate limits, stream slots and sign-in throttles.
    Anything that is not an address (a test client's name) counts as itself.
    """
    if client is None:
        return None
    try:
        address = ipaddress.ip_address(client)
    except ValueError:
        return client
    if isinstance(address, ipaddress.IPv4Address):
        return client
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(ipaddress.IPv6Network((address, ipv6_prefix), strict=False))


class TrustedProxies:
    def __init__(self, entries: Iterable[str]) -> None:
        # ValueError naming a bad entry (the setting is checked with the same at start).
        self.networks = proxy_networks(entries)

    def trusts(self, address: Address | None) -> bool:
        return address is not None and any(address in network for network in self.networks)

    def client_ip(self, peer: str | None, forwarded_for: Iterable[str]) -> str | None:
        """The client's address; ``forwarded_for`` is every X-Forwarded-For value, in order."""
        peer_address = parse_address(peer) if peer else None
        if not self.trusts(peer_address):
            return str(peer_address) if peer_address is not None else peer
        nearest = peer_address  # the closest hop we can vouch for
        hops = [hop for value in forwarded_for for hop in value.split(",") if hop.strip()]
        for hop in reversed(hops):
            address = parse_address(hop)
            if address is None:
                break  # garbage a trusted proxy would not write: stop at what we can vouch for
            if not self.trusts(address):
                return str(address)
            nearest = address
        return str(nearest)


class ProxyHeaders:
    """Pure ASGI: ``scope["client"]`` and ``scope["scheme"]`` as trusted proxies report them."""

    def __init__(self, app: ASGIApp, *, proxies: TrustedProxies) -> None:
        self.app = app
        self.proxies = proxies
        # Whether each peer is a trusted proxy, remembered: parsing the address and testing it
        # against every network took several percent of a request's CPU, and the peers of a
        # server are few (its proxies; docs/performance.md#proxy-headers). Bounded, for a
        # server exposed to many addresses.
        self._peer_trusted: dict[str, bool] = {}

    def _trusted_peer(self, peer: str | None) -> bool:
        if peer is None:
            return False
        trusted = self._peer_trusted.get(peer)
        if trusted is None:
            if len(self._peer_trusted) >= 4096:
                self._peer_trusted.clear()
            trusted = self._peer_trusted[peer] = self.proxies.trusts(parse_address(peer))
        return trusted

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # Not async: see chatrelay/http/middleware.py.
        if scope["type"] in ("http", "websocket") and self.proxies.networks:
            client = scope.get("client")
            peer = client[0] if client else None
            if self._trusted_peer(peer):
                forwarded: list[str] = []
                proto: str | None = None
                for name, value in scope["headers"]:
                    if name == b"x-forwarded-for":
                        forwarded.append(value.decode("latin-1"))
                    elif name == b"x-forwarded-proto":
                        proto = value.decode("latin-1").strip().lower()
                if forwarded:
                    host = self.proxies.client_ip(peer, forwarded)
                    scope["client"] = (host, 0)
                if proto in ("http", "https") and scope["type"] == "http":
                    scope["scheme"] = proto
        return self.app(scope, receive, send)
