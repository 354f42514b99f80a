"""The CORS allow-list (http/cors.py) as it is read from the settings."""

from __future__ import annotations

import pytest

from chatrelay.app import create_app
from chatrelay.config import Settings
from chatrelay.http.cors import CorsPolicy


def test_origins_are_read_as_browsers_send_them() -> None:
    policy = CorsPolicy.parse(
        ["HTTP://LocalHost:5173/", "https://app.example:443", "http://[::1]:8080", " "]
    )
    assert policy.origins == {"http://localhost:5173", "https://app.example", "http://[::1]:8080"}
    for bad in ("localhost:5173", "https://app.example/path", "ftp://files.example", "https://"):
        with pytest.raises(ValueError, match="CHATRELAY_CORS_ORIGINS"):
            CorsPolicy.parse([bad])
    with pytest.raises(ValueError, match="not an origin"):
        create_app(Settings(cors_origins="app.example", embedded=False))
