"""`chatrelay serve`: run the server.

Settings come from the environment (and ``--config``); with no upstream configured the
embedded model is started. The process is uvicorn's, with a quieter main loop
(cli/quiet_server.py); a stop signal ends it cleanly. ``--workers N`` runs N such processes
on one port under a supervisor (cli/workers.py), refused with what to set when the settings
cannot share what the workers must (exit status 2, as for any setting refused at start).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from chatrelay.cli.common import ConfigOption, load_settings

if TYPE_CHECKING:
    from chatrelay.config import Settings


def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Processes answering on the port (default 1; one per core to use them all). "
            "More than one needs CHATRELAY_REDIS_URL and an upstream.",
            show_default=False,
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Run the server (embedded model unless LIVEPEER_GATEWAY_URL or OPENAI_BASE_URL is set)."""
    # The app and uvicorn are loaded only here: the other commands start without them.
    from chatrelay.http.hosts import AllowedHosts, AllowedHostsRequired
    from chatrelay.observability import configure_logging

    given = {"host": host, "port": port, "workers": workers}
    settings = load_settings(config, **{k: v for k, v in given.items() if v is not None})
    configure_logging()
    try:
        AllowedHosts.of(settings)  # before anything starts: bound beyond loopback, it is needed
    except AllowedHostsRequired as exc:
        _refuse(str(exc))
    if settings.workers > 1:
        _serve_workers(settings)
    else:
        _serve_here(settings)


def _serve_here(settings: Settings) -> None:
    """One process: the app served by this one."""
    from chatrelay.app import create_app
    from chatrelay.cli.quiet_server import run, server_options

    app = create_app(settings, tune_gc=True)
    if not settings.has_remote_upstream:
        typer.secho(
            "No upstream configured: starting the embedded model (SmolLM2-135M) ...", fg="cyan"
        )
    run(app, **server_options(settings))


def _serve_workers(settings: Settings) -> None:
    """``settings.workers`` processes on one port, this one supervising them."""
    from chatrelay.cli.workers import Workers, refusals

    problems = refusals(settings)
    if problems:
        _refuse("\n".join(problems))
    raise typer.Exit(Workers(settings).run())


def _refuse(message: str) -> NoReturn:
    typer.secho(message, fg="red", err=True)
    raise typer.Exit(2) from None
