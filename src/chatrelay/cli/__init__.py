"""The `chatrelay` command: `serve` the app, or `chat` with a running one from the terminal."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from chatrelay.cli.admin import keys_app, users_app

app = typer.Typer(help="chatrelay: streaming chat relay for LLMs.", no_args_is_help=True)
app.add_typer(users_app, name="users")
app.add_typer(keys_app, name="keys")
db_app = typer.Typer(help="The database: migrations for operators who run them by hand.")
app.add_typer(db_app, name="db")


@db_app.command("upgrade")
def db_upgrade(
    config: Annotated[
        Path | None, typer.Option("--config", help="TOML settings file (env vars win).")
    ] = None,
) -> None:
    """Migrate the database to the newest schema (`serve` also does this at start)."""
    from chatrelay.config import Settings
    from chatrelay.store.database import database_url, upgrade_database

    url = database_url(Settings.load(config))
    upgrade_database(url)
    typer.echo(f"Database is up to date: {url.split('@')[-1]}")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="TOML settings file (env vars win).")
    ] = None,
) -> None:
    """Run the server (embedded model unless LIVEPEER_GATEWAY_URL or OPENAI_BASE_URL is set)."""
    from chatrelay.app import create_app
    from chatrelay.cli.serve import serve as run_server
    from chatrelay.config import Settings
    from chatrelay.http.connection_limits import ConnectionLimits
    from chatrelay.http.hosts import AllowedHostsRequired
    from chatrelay.observability import configure_logging

    overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    settings = Settings.load(config, **overrides)
    configure_logging()
    try:
        app = create_app(settings, tune_gc=True)
    except AllowedHostsRequired as exc:
        typer.secho(str(exc), fg="red", err=True)
        raise typer.Exit(2) from None
    if not settings.has_remote_upstream:
        typer.secho(
            "No upstream configured: starting the embedded model (SmolLM2-135M) ...", fg="cyan"
        )
    run_server(
        app,
        host=settings.host,
        port=settings.port,
        # Header size and count, head and body deadlines, idle keep-alive, open connections.
        **ConnectionLimits.of(settings).uvicorn_options(),
        timeout_graceful_shutdown=5,
        # chatrelay reads X-Forwarded-For/-Proto itself, trusting CHATRELAY_TRUSTED_PROXIES
        # (limits/client_ip.py): uvicorn's own handling would rewrite the peer before it.
        proxy_headers=False,
        # chatrelay writes one structured line per request itself (with its request id).
        access_log=False,
        log_config=None,
    )


@app.command()
def chat(
    url: Annotated[str, typer.Option(help="The chatrelay server.")] = "http://127.0.0.1:8000",
    model: Annotated[str | None, typer.Option(help="Model to ask (default: the server's).")] = None,
) -> None:
    """Chat in the terminal. Ctrl-C stops an answer, Ctrl-D leaves, /new starts over."""
    from chatrelay.cli.chat import TerminalChat

    TerminalChat(base_url=url, model=model).run()


def main() -> None:
    app()
