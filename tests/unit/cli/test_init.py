"""The `chatrelay` dispatcher (cli/__init__.py): its subcommands, and that starting it loads
none of what only one of them needs."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from chatrelay.cli import app


def test_the_help_lists_every_subcommand() -> None:
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    listed = [line.split()[1] for line in result.output.splitlines() if line.startswith("│ ")]
    assert [name for name in listed if not name.startswith("-")] == [
        "serve",
        "chat",
        "users",
        "keys",
        "db",
    ]


def test_no_arguments_shows_the_help() -> None:
    result = CliRunner().invoke(app, [])
    assert "Usage:" in result.output and "serve" in result.output


def test_starting_the_command_loads_no_server_client_or_database() -> None:
    # In a fresh interpreter: this test process has loaded all of them already.
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, chatrelay.cli; print(' '.join(sorted(sys.modules)))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    heavy = {"uvicorn", "httpx", "sqlalchemy", "fastapi", "argon2", "chatrelay.app"}
    assert heavy.isdisjoint(loaded), sorted(heavy.intersection(loaded))
