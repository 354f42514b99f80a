"""What a client is told of an error (error_details.py): details on loopback only, and a
summary of its own for every way an upstream fails."""

from __future__ import annotations

from chatrelay.config import Settings
from chatrelay.error_details import for_client, shows_details
from chatrelay.upstreams.client import UpstreamFailure


def test_details_default_on_for_loopback_only() -> None:
    assert shows_details(Settings())
    assert shows_details(Settings(host="::1"))
    assert not shows_details(Settings(host="0.0.0.0", allowed_hosts="*"))
    assert not shows_details(Settings(host="chat.example.com"))
    assert shows_details(Settings(host="0.0.0.0", detailed_errors=True))


def test_every_upstream_failure_kind_has_its_own_summary() -> None:
    """Each way an upstream can fail is told as itself, not as the catch-all."""
    generic = for_client(
        UpstreamFailure("x", kind="no_such_kind", code="upstream_error"), detailed=False
    ).message
    for kind in ("upstream_unreachable", "upstream_bad_response", "bad_event", "stall", "cut"):
        told = for_client(
            UpstreamFailure("at http://10.0.0.7:8935 x", kind=kind, code=kind), detailed=False
        )
        assert told.message != generic, kind
        assert "10.0.0.7" not in told.message
