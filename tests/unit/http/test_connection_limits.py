"""The connection limits (http/connection_limits.py) as the settings make them, handed to
uvicorn's protocol."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("limit", ["max_header_bytes", "header_timeout", "max_connections"])
def test_the_limits_are_settings(limit: str) -> None:
    from chatrelay.config import Settings
    from chatrelay.http.connection_limits import ConnectionLimits

    value = {"max_header_bytes": 2048, "header_timeout": 3.0, "max_connections": 7}[limit]
    limits = ConnectionLimits.of(Settings(**{limit: value}))
    assert getattr(limits, limit) == value
    options = limits.uvicorn_options()
    assert options["http"].limits is limits and options["timeout_keep_alive"] == 5.0
