"""The HTTP proxy an upstream request goes through, found in the environment as curl and
the Python HTTP clients find it (docs/proxies.md has the rules for operators).

Usage::

    proxy = proxy_for("https://gateway.example/llm")   # None: connect directly
    if proxy is not None:
        proxy.host, proxy.port                          # where to connect instead
        proxy.connect_request("gateway.example:443")    # the CONNECT that opens a tunnel

``HTTP_PROXY``/``HTTPS_PROXY`` (lower case wins) are read by the standard library's
``urllib.request.getproxies_environment``, the function requests and httpx read them with.
``NO_PROXY`` is matched here rather than by ``urllib.request.proxy_bypass_environment``,
which compares names as text only: this also matches IP addresses as addresses and CIDR
ranges (as curl and requests do). Loopback never goes through a proxy: see
:func:`always_direct`.

Credentials in a proxy URL go into the ``Proxy-Authorization`` header and nowhere else:
``Proxy.url``, its ``str`` and ``repr``, and every message made here show the URL without them.
"""

from __future__ import annotations

import base64
import ipaddress
import os
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import unquote, urlsplit
from urllib.request import getproxies_environment

from chatrelay import __version__

# The longest answer to a CONNECT read: a proxy's status line and headers are a few hundred
# bytes; anything this long is not a proxy speaking HTTP.
MAX_CONNECT_ANSWER = 16 * 1024

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class Proxy:
    """An HTTP proxy named by an environment variable."""

    host: str
    port: int
    # The variable that named it, spelled as it is set (``HTTPS_PROXY`` or ``https_proxy``):
    # messages tell the operator what to check.
    variable: str
    url: str  # without credentials: what messages and logs show
    # ``Basic ...`` from the URL's user:password, or "": never shown (repr=False).
    authorization: str = field(default="", repr=False)

    def __str__(self) -> str:
        return f"{self.url} ({self.variable})"

    @property
    def authorization_header(self) -> str:
        """The header line, CRLF included, or "" for a proxy that asks for none."""
        return f"Proxy-Authorization: {self.authorization}\r\n" if self.authorization else ""

    def connect_request(self, authority: str) -> bytes:
        """The request that asks the proxy for a tunnel to ``authority`` (host:port)."""
        return (
            f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n"
            f"{self.authorization_header}User-Agent: chatrelay/{__version__}\r\n\r\n"
        ).encode()

    def refused(self, status: int, what: str) -> ConnectionError:
        """The proxy answered ``status`` instead of doing ``what``: the failure to raise."""
        try:
            phrase = " " + HTTPStatus(status).phrase
        except ValueError:
            phrase = ""
        return ConnectionError(
            f"the proxy {self.url} refused {what}: {status}{phrase}; check {self.variable}"
        )

    def unreachable(self, exc: OSError) -> OSError:
        """``exc`` (connecting to the proxy failed) as the same kind of error, saying that it
        was the proxy that could not be reached, not the upstream."""
        what = f"the proxy {self} cannot be reached: {exc.strerror or exc}"
        try:
            return type(exc)(exc.errno, what) if exc.errno is not None else type(exc)(what)
        except TypeError:  # an OSError subclass with a constructor of its own
            return ConnectionError(what)


def always_direct(host: str) -> bool:
    """Loopback: never through a proxy, whatever NO_PROXY says.

    The embedded model's server listens on 127.0.0.1, and a proxy asked for 127.0.0.1 would
    connect to its own machine, not chatrelay's: no operator wants that. Go's HTTP clients
    (Docker, Kubernetes) do the same; curl, requests and httpx would need ``NO_PROXY`` to
    list localhost. ``*.localhost`` names are loopback too (RFC 6761)."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    address = _address(host)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address is not None and address.is_loopback


def proxy_for(url: str) -> Proxy | None:
    """The proxy that requests to ``url`` go through, from the environment, or None.

    Raises ValueError, naming the variable, for a proxy URL chatrelay cannot use (another
    scheme than http://, no host, a bad port): never a silent direct connection."""
    parts = urlsplit(url)
    host = (parts.hostname or "").rstrip(".")
    scheme = parts.scheme.lower()
    if not host or always_direct(host):
        return None
    proxies = getproxies_environment()
    value = proxies.get(scheme)
    port = parts.port or (443 if scheme == "https" else 80)
    if not value or no_proxy_matches(host, port, proxies):
        return None
    return _parse(value, _spelled(f"{scheme}_proxy"))


def no_proxy_matches(host: str, port: int, proxies: dict[str, str]) -> bool:
    """Whether NO_PROXY (``proxies["no"]``) says ``host:port`` is reached directly.

    Entries are separated by commas and compared without regard to case:
    ``*`` alone matches everything; ``example.com``, ``.example.com`` and ``*.example.com``
    match that name and every name under it (as curl; httpx and Go take a leading dot to mean
    the names under it only); an IP address matches that address however it is written, and
    ``10.0.0.0/8`` or ``fd00::/8`` the addresses in the range (names are not resolved to be
    compared with them); ``:port`` after any of them (``[::1]:8080`` for IPv6) limits the
    entry to that port."""
    host = host.lower().rstrip(".")
    address = _address(host)
    for raw in proxies.get("no", "").split(","):
        entry = raw.strip().lower()
        if entry == "*":
            return True
        name, entry_port = _split_port(entry)
        if not name or (entry_port is not None and entry_port != port):
            continue
        if "/" in name:
            try:
                network = ipaddress.ip_network(name, strict=False)
            except ValueError:
                continue
            if address is not None and address in network:
                return True
            continue
        entry_address = _address(name)
        if entry_address is not None:
            if address == entry_address:
                return True
            continue
        name = name.removeprefix("*").strip(".")
        if name and (host == name or host.endswith("." + name)):
            return True
    return False


def _spelled(name: str) -> str:
    """The variable as it is set: getproxies_environment prefers the lower-case one."""
    return name if os.environ.get(name) else name.upper()


def _parse(value: str, variable: str) -> Proxy:
    # A bare host:port means http://, as curl, requests and httpx take it.
    raw = value.strip() if "://" in value else f"http://{value.strip()}"
    parts = urlsplit(raw)
    if "@" in raw.partition("://")[2] and "@" not in parts.netloc:
        # A '#', '/' or '?' in the user or password ends the URL's authority early: the
        # password would show in the host. Said without echoing any of the value.
        raise ValueError(
            f"{variable} is not a URL chatrelay can read: percent-encode the user and password "
            "of the proxy URL (a '#', '/' or '?' in them must be %23, %2F, %3F)"
        )
    address = parts.netloc.rpartition("@")[2]
    shown = f"{parts.scheme}://{address}"
    if parts.scheme.lower() == "https":
        raise ValueError(
            f"{variable} names a proxy reached over TLS ({shown}), which chatrelay does not "
            "speak: give the proxy's http:// address (a tunnel to an https:// upstream is "
            "end-to-end TLS all the same)"
        )
    if parts.scheme.lower() != "http":
        raise ValueError(f"{variable} names a {parts.scheme}:// proxy ({shown}): only http://")
    try:
        port = parts.port or 80
    except ValueError:
        raise ValueError(f"{variable} has a bad port ({shown})") from None
    if not parts.hostname:
        raise ValueError(f"{variable} has no host ({shown})")
    authorization = ""
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        authorization = "Basic " + base64.b64encode(pair).decode()
    return Proxy(parts.hostname, port, variable, f"http://{address}", authorization)


def _split_port(entry: str) -> tuple[str, int | None]:
    """A NO_PROXY entry's name and port, if it has one ("" for a port that is no number)."""
    if entry.startswith("["):
        name, _, rest = entry[1:].partition("]")
        port = rest.removeprefix(":")
    elif entry.count(":") == 1:
        name, _, port = entry.partition(":")
    else:
        return entry, None  # no port, or an IPv6 address without brackets
    if not port:
        return name, None
    return (name, int(port)) if port.isdigit() else ("", None)


def _address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None
