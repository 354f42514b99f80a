"""`chatrelay serve`: run the server.

Settings come from the environment (and ``--config``); with no upstream configured the
embedded model is started. The process is uvicorn's, with a quieter main loop
(cli/quiet_server.py); a stop signal ends it cleanly.
"""

from __future__ import annotations

from typing import Annotated

import typer

from chatrelay.cli.common import ConfigOption


def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    config: ConfigOption = None,
) -> None:
    """Run the server (embedded model unless LIVEPEER_GATEWAY_URL or OPENAI_BASE_URL is set)."""
    # The app and uvicorn are loaded only here: the other commands start without them.
    from chatrelay.app import create_app
    from chatrelay.cli.quiet_server import run
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
    run(
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
