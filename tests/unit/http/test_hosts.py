"""The Host allow-list (http/hosts.py) on its own: what each entry allows, and what a bind
address beyond loopback requires."""

from __future__ import annotations

import pytest

from chatrelay.config import Settings
from chatrelay.http.hosts import AllowedHosts, AllowedHostsRequired


@pytest.mark.parametrize(
    ("entries", "host", "allowed"),
    [
        (["*"], "anything.example:1", True),
        (["::1"], "[::1]:8000", True),
        (["[::1]:8000"], "[::1]:8001", False),
        (["example.com"], "example.com.", True),
        (["example.com"], "example.com:abc", False),
        (["*.example.com"], ".example.com", False),
    ],
)
def test_allow_list_entries(entries: list[str], host: str, allowed: bool) -> None:
    assert AllowedHosts.parse(entries).allows(host) is allowed


def test_a_non_loopback_bind_without_names_is_a_configuration_error() -> None:
    with pytest.raises(AllowedHostsRequired):
        AllowedHosts.of(Settings(host="0.0.0.0"))
    assert AllowedHosts.of(Settings(host="0.0.0.0", allowed_hosts="*")).any_host
    assert AllowedHosts.of(Settings(host="::1")).allows("localhost:1")
