"""`chatrelay serve` (cli/serve.py) refusing to start, before it listens on anything."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_bound_beyond_loopback_without_allowed_hosts_it_says_what_to_set_and_exits_2(
    tmp_path: Path,
) -> None:
    # A process of its own: serving sets up the process's logging.
    env = {"PATH": os.environ.get("PATH", ""), "CHATRELAY_DATA_DIR": str(tmp_path / "data")}
    result = subprocess.run(
        [sys.executable, "-m", "chatrelay", "serve", "--host", "0.0.0.0", "--port", "9"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "chatrelay listens on 0.0.0.0, not on loopback" in result.stderr
    assert "CHATRELAY_ALLOWED_HOSTS" in result.stderr
    assert "Traceback" not in result.stderr


def _serve(tmp_path: Path, *arguments: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`chatrelay serve` in a process of its own, with only these settings."""
    base = {"PATH": os.environ.get("PATH", ""), "CHATRELAY_DATA_DIR": str(tmp_path / "data")}
    return subprocess.run(
        [sys.executable, "-m", "chatrelay", "serve", "--port", "9", *arguments],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_several_workers_without_redis_say_what_to_set_and_exit_2(tmp_path: Path) -> None:
    result = _serve(tmp_path, "--workers", "2", LIVEPEER_GATEWAY_URL="http://127.0.0.1:9")
    assert result.returncode == 2, result.stderr
    assert "chatrelay serve --workers 2 needs CHATRELAY_REDIS_URL" in result.stderr
    assert "or run one worker" in result.stderr
    assert "Traceback" not in result.stderr
    # Refused before anything started: no database was made.
    assert not (tmp_path / "data" / "chatrelay.db").exists()


def test_workers_set_in_the_environment_are_refused_the_same_way(tmp_path: Path) -> None:
    result = _serve(tmp_path, CHATRELAY_WORKERS="3", LIVEPEER_GATEWAY_URL="http://127.0.0.1:9")
    assert result.returncode == 2, result.stderr
    assert "chatrelay serve --workers 3 needs CHATRELAY_REDIS_URL" in result.stderr


def test_several_workers_with_the_embedded_model_are_refused_with_why(tmp_path: Path) -> None:
    # No upstream: each worker would load a model of its own.
    result = _serve(tmp_path, "--workers", "2", CHATRELAY_REDIS_URL="redis://127.0.0.1:9/0")
    assert result.returncode == 2, result.stderr
    assert "chatrelay serve --workers 2 needs an upstream" in result.stderr
    assert "embedded model" in result.stderr and "OPENAI_BASE_URL" in result.stderr
    assert "CHATRELAY_REDIS_URL" not in result.stderr  # only what is missing is named
    assert "Traceback" not in result.stderr
