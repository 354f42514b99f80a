"""The forms some settings are written in, and how each is parsed: comma lists, rate limits
and trusted proxies.

A leaf, like config/ that validates its fields with these: the layers that use the parsed
values (``limits/rate.py``, ``limits/client_ip.py``, ``limits/quotas.py``) import them from
here, so that the settings import no layer.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator
from pydantic_settings import NoDecode

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def split_commas(value: Any) -> Any:
    """``"a, b,,c"`` (the environment's form) as ``["a", "b", "c"]``; a list as it is."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


# Written `a,b,c` in the environment (never decoded as JSON), or as an array in TOML.
CommaList = Annotated[list[str], NoDecode, BeforeValidator(split_commas)]


# ---- rate limits ----------------------------------------------------------------------------

_UNITS = {"second": 1.0, "minute": 60.0, "hour": 3600.0, "day": 86400.0}
_ALIASES = {"s": "second", "sec": "second", "m": "minute", "min": "minute", "h": "hour"}
_ALIASES |= {"d": "day", **{unit: unit for unit in _UNITS}}
_RULE = re.compile(r"\s*(\d+)\s*(?:/|per)\s*(\d+(?:\.\d+)?)?\s*([a-z]+?)s?\s*", re.IGNORECASE)
RULE_FORMAT = "N/unit or N/<count><unit>, unit one of second, minute, hour, day (e.g. 20/minute)"


@dataclass(frozen=True, slots=True)
class RateRule:
    limit: int
    window: float  # seconds
    text: str


def parse_rate_limit(text: str | None) -> RateRule | None:
    """``"20/minute"``, ``"5/10s"``, ``"1000 per day"``; None, empty or ``0/...`` is no limit."""
    if text is None or not text.strip():
        return None
    match = _RULE.fullmatch(text)
    unit = _ALIASES.get(match.group(3).lower()) if match else None
    if match is None or unit is None:
        raise ValueError(f"invalid rate limit {text!r}: expected {RULE_FORMAT}")
    count = float(match.group(2) or 1)
    limit = int(match.group(1))
    if count <= 0:
        raise ValueError(f"invalid rate limit {text!r}: the window must be longer than 0")
    return RateRule(limit, count * _UNITS[unit], text.strip()) if limit > 0 else None


def _checked_rate_limit(text: str | None) -> str | None:
    parse_rate_limit(text)  # raises ValueError saying what a valid one looks like
    return text


# A rate limit as written ("20/minute"), refused at start when it cannot be parsed.
RateLimit = Annotated[str | None, AfterValidator(_checked_rate_limit)]


# ---- trusted proxies ------------------------------------------------------------------------


def proxy_networks(entries: Iterable[str]) -> list[Network]:
    """IP addresses or CIDR networks; ValueError naming the first entry that is neither."""
    networks: list[Network] = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ValueError(
                f"invalid trusted proxy {entry!r}: expected an IP address or a CIDR "
                "network such as 10.0.0.0/8"
            ) from None
    return networks


def _checked_proxies(entries: list[str]) -> list[str]:
    proxy_networks(entries)
    return entries


# Trusted proxies as written, refused at start when an entry is not an address or network.
ProxyList = Annotated[CommaList, AfterValidator(_checked_proxies)]
