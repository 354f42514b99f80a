"""What the operator's commands share (cli/common.py): dates in listings, one-line failures, and
settings that cannot be read reported by name."""

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


COMMANDS = [["users", "list"], ["keys", "list"], ["db", "upgrade"], ["serve"]]


def _run(tmp_path: Path, command: list[str], **env: str):  # type: ignore[no-untyped-def]
    data_dir = tmp_path / "data"
    result = CliRunner().invoke(app, command, env={"CHATRELAY_DATA_DIR": str(data_dir), **env})
    assert not data_dir.exists()  # refused before a database was opened, or a server started
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


@pytest.mark.parametrize("command", COMMANDS)
def test_a_missing_config_file_is_reported_with_status_2(
    tmp_path: Path, command: list[str]
) -> None:
    missing = tmp_path / "nowhere.toml"
    result = _run(tmp_path, [*command, "--config", str(missing)])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"Error: config file not found: {missing} (--config takes the path of a TOML file)",
        "Every setting is described in docs/configuration.md.",
    ]


@pytest.mark.parametrize("command", COMMANDS)
def test_a_file_that_is_not_toml_is_reported_with_where(tmp_path: Path, command: list[str]) -> None:
    config = tmp_path / "chatrelay.toml"
    config.write_text("port = \n")
    result = _run(tmp_path, [*command, "--config", str(config)])
    assert result.exit_code == 2
    assert result.stderr.splitlines()[0] == (
        f"Error: {config} is not valid TOML: Invalid value (at line 1, column 8)"
    )


@pytest.mark.parametrize("command", COMMANDS)
def test_values_that_are_not_valid_are_named_as_the_operator_sets_them(
    tmp_path: Path, command: list[str]
) -> None:
    config = tmp_path / "chatrelay.toml"
    config.write_text('stall_timeout = -1\n[[upstreams]]\nname = "a"\n')
    result = _run(tmp_path, [*command, "--config", str(config)], CHATRELAY_PORT="eighty")
    assert result.exit_code == 2
    first, *problems, last = result.stderr.splitlines()
    assert first == "Error: settings that are not valid:"
    assert sorted(problems) == [
        "  CHATRELAY_PORT (TOML `port`): Input should be a valid integer, unable to parse string "
        "as an integer, given 'eighty'",
        "  CHATRELAY_STALL_TIMEOUT (TOML `stall_timeout`): Input should be greater than 0, "
        "given -1",
        "  CHATRELAY_UPSTREAMS (TOML `upstreams.0.base_url`): Field required",
    ]
    assert last == "Every setting is described in docs/configuration.md."


def test_a_value_that_may_hold_a_secret_is_never_shown(tmp_path: Path) -> None:
    config = tmp_path / "chatrelay.toml"
    config.write_text(
        'database_url = ["postgresql://me:hunter2-secret@db/chat"]\n'
        'secret_key = ["hunter2-secret"]\n'
    )
    result = _run(tmp_path, ["users", "list", "--config", str(config)])
    assert result.exit_code == 2
    assert sorted(result.stderr.splitlines()[1:-1]) == [
        "  CHATRELAY_DATABASE_URL (TOML `database_url`): Input should be a valid string",
        "  CHATRELAY_SECRET_KEY (TOML `secret_key`): Input should be a valid string",
    ]
    assert "hunter2" not in result.output
