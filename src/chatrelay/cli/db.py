"""`chatrelay db upgrade`: migrate the database by hand.

`chatrelay serve` migrates at start; an operator who runs several instances migrates once from
the new release before restarting them (docs/deploy.md), with this command.
"""

from __future__ import annotations

import typer

from chatrelay.cli.common import ConfigOption, load_settings

app = typer.Typer(help="The database: migrations for operators who run them by hand.")


@app.command("upgrade")
def upgrade(config: ConfigOption = None) -> None:
    """Migrate the database to the newest schema (`serve` also does this at start)."""
    from chatrelay.store.database import database_url, upgrade_database

    url = database_url(load_settings(config))
    upgrade_database(url)
    # What follows the '@': a URL's user and password stay out of the terminal.
    typer.echo(f"Database is up to date: {url.split('@')[-1]}")
