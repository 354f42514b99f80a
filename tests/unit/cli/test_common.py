"""What the operator's commands share (cli/common.py): dates in listings and one-line failures."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from chatrelay.cli import app
from chatrelay.cli.common import fail, when


def test_a_moment_is_listed_to_the_minute_and_never_as_a_dash() -> None:
    assert when(datetime(2024, 3, 5, 7, 9, 59)) == "2024-03-05 07:09"
    assert when(None) == "-"


def test_a_failure_is_one_red_line_on_stderr_and_status_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(typer.Exit) as exited:
        fail("no user named 'x'")
    assert exited.value.exit_code == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip() == "Error: no user named 'x'"


@pytest.mark.parametrize("command", [["users", "list"], ["keys", "list"]])
def test_a_missing_config_file_is_reported_in_one_line(tmp_path: Path, command: list[str]) -> None:
    missing = tmp_path / "nowhere.toml"
    data_dir = tmp_path / "data"
    result = CliRunner().invoke(
        app, [*command, "--config", str(missing)], env={"CHATRELAY_DATA_DIR": str(data_dir)}
    )
    assert result.exit_code == 1
    assert result.stderr.strip() == f"Error: config file not found: {missing}"
    assert not data_dir.exists()  # no database was opened
