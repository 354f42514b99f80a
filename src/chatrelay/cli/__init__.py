"""The `chatrelay` command: one module per subcommand, gathered here.

    chatrelay serve    run the server                      cli/serve.py
    chatrelay chat     chat with it from a terminal        cli/chat.py
    chatrelay users    accounts                            cli/users.py
    chatrelay keys     API keys                            cli/keys.py
    chatrelay db       migrations by hand                  cli/db.py

Each of these modules imports little more than typer: what a command needs (the app, uvicorn,
the database, httpx) is imported when it runs, so every command starts without the others'.
"""

from __future__ import annotations

import typer

from chatrelay.cli import chat, db, keys, serve, users

app = typer.Typer(help="chatrelay: streaming chat relay for LLMs.", no_args_is_help=True)
app.command("serve")(serve.serve)
app.command("chat")(chat.chat)
app.add_typer(users.app, name="users")
app.add_typer(keys.app, name="keys")
app.add_typer(db.app, name="db")


def main() -> None:
    app()
