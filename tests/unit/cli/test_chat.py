"""`chatrelay chat`'s options (cli/chat.py), handed to the terminal client."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from chatrelay.cli import app
from chatrelay.cli.terminal_client import TerminalClient


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[TerminalClient]:
    clients: list[TerminalClient] = []
    monkeypatch.setattr(TerminalClient, "run", lambda self: clients.append(self))
    return clients


def test_by_default_it_talks_to_a_local_server_and_its_default_model(
    started: list[TerminalClient],
) -> None:
    assert CliRunner().invoke(app, ["chat"]).exit_code == 0
    [client] = started
    assert (client.base_url, client.model) == ("http://127.0.0.1:8000", None)


def test_the_server_and_model_are_options(started: list[TerminalClient]) -> None:
    args = ["chat", "--url", "https://chat.example.org", "--model", "qwen"]
    assert CliRunner().invoke(app, args).exit_code == 0
    [client] = started
    assert (client.base_url, client.model) == ("https://chat.example.org", "qwen")
