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
