"""`chatrelay users` (cli/users.py) short of the database: how budgets and accounts are listed,
and the arguments refused before any database is opened."""

from __future__ import annotations

import io
from datetime import datetime
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner, Result

from chatrelay.cli import app
from chatrelay.cli.users import budget, sessions, users_table
from chatrelay.store.models import User


def test_a_budget_is_listed_as_default_unlimited_or_a_number() -> None:
    assert budget(None) == "default"
    assert budget(0) == "unlimited"
    assert budget(50_000) == "50,000"


def test_sessions_are_counted_in_words() -> None:
    assert [sessions(n) for n in (0, 1, 2)] == ["0 sessions", "1 session", "2 sessions"]


def test_the_users_table() -> None:
    created = datetime(2024, 1, 2, 3, 4)
    rows = [
        (User(username="alice", is_admin=True, created_at=created, token_budget=None), 3),
        (User(username="bob", is_admin=False, created_at=created, token_budget=0), 0),
    ]
    out = io.StringIO()
    Console(file=out, width=200).print(users_table(rows))
    lines = [line for line in out.getvalue().splitlines() if "alice" in line or "bob" in line]
    cells = [[cell.strip() for cell in line.split("│")[1:-1]] for line in lines]
    assert cells == [
        ["alice", "yes", "2024-01-02 03:04", "default", "3"],
        ["bob", "", "2024-01-02 03:04", "unlimited", "0"],
    ]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def run(data_dir: Path, *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(
        app, list(args), env={"CHATRELAY_DATA_DIR": str(data_dir)}, input=input
    )


@pytest.mark.parametrize(
    "args",
    [
        ("budget", "dora"),  # neither a number nor --default
        ("budget", "dora", "5", "--default"),  # both
        ("budget", "dora", "--", "-5"),
    ],
)
def test_budget_arguments_are_refused_before_the_database(data_dir: Path, args: tuple) -> None:
    result = run(data_dir, "users", *args)
    assert result.exit_code == 1
    assert result.stderr.strip() == "Error: give a number of tokens (0 = unlimited) or --default."
    assert not data_dir.exists()


def test_a_bad_username_or_password_is_refused_before_the_database(data_dir: Path) -> None:
    bad = run(data_dir, "users", "create", "no spaces", "--password", "long enough")
    assert bad.exit_code == 1 and bad.stderr.startswith("Error: ") and "username" in bad.stderr
    short = run(data_dir, "users", "create", "dave", "--password", "short")
    assert short.exit_code == 1 and "at least 8 characters" in short.stderr
    short_again = run(data_dir, "users", "set-password", "dave", "--password", "short")
    assert short_again.exit_code == 1 and "at least 8 characters" in short_again.stderr
    mismatch = run(data_dir, "users", "create", "erin", input="first one\nsecond one\n")
    assert mismatch.exit_code != 0
    assert not data_dir.exists()
