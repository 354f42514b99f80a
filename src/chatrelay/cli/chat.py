"""`chatrelay chat`: talk to a running chatrelay server from a terminal.

    chatrelay chat --url https://chat.example.org --model my-model

The client itself is cli/terminal_client.py: answers stream in as they are generated, Ctrl-C
stops the current answer, Ctrl-D or /exit leaves, /new starts over, and a dropped connection
re-attaches to the answer.
"""

from __future__ import annotations

from typing import Annotated

import typer


def chat(
    url: Annotated[str, typer.Option(help="The chatrelay server.")] = "http://127.0.0.1:8000",
    model: Annotated[str | None, typer.Option(help="Model to ask (default: the server's).")] = None,
) -> None:
    """Chat in the terminal. Ctrl-C stops an answer, Ctrl-D leaves, /new starts over."""
    # httpx and rich are loaded only here: the other commands start without them.
    from chatrelay.cli.terminal_client import TerminalClient

    TerminalClient(base_url=url, model=model).run()
