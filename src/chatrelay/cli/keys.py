"""`chatrelay keys ...`: API keys, for the operator.

Like `chatrelay users`, the commands open the configured database directly and need no running
server::

    chatrelay keys create --user alice --name laptop    # the key alone on stdout, shown once
    chatrelay keys list --user alice                    # first characters only, never the keys
    chatrelay keys revoke key_...                       # 401 from the next request on
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Annotated

import typer

from chatrelay.cli.common import CommandError, ConfigOption, on_database, user_named, when

if TYPE_CHECKING:
    from rich.table import Table

    from chatrelay.store.database import Database
    from chatrelay.store.models import ApiKey

app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)


@app.command("create")
def create_key(
    user: Annotated[str, typer.Option("--user", help="Username the key acts as.")],
    name: Annotated[str, typer.Option("--name", help="A label to tell keys apart.")] = "",
    spend_limit: Annotated[
        float | None,
        typer.Option(
            "--spend-limit",
            min=0,
            help="Money this key may spend per budget period (on top of its user's limit).",
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Create an API key. It is printed once: only its hash is kept."""
    from chatrelay.auth.api_keys import issue_api_key
    from chatrelay.store import users
    from chatrelay.upstreams.pricing import NANOS

    issued = issue_api_key()

    async def work(db: Database) -> str:
        owner = await user_named(db, user)
        async with db.transaction() as session:
            row = await users.create_api_key(
                session,
                user_id=owner.id,
                name=name,
                key_hash=issued.key_hash,
                prefix=issued.prefix,
            )
            if spend_limit:
                row.spend_limit = round(spend_limit * NANOS)
        return row.id

    key_id = on_database(config, work)
    # The key alone on stdout (so `KEY=$(chatrelay keys create ...)` works), notes on stderr.
    typer.echo(f"Created API key {key_id} for '{user.lower()}':", err=True)
    typer.echo(issued.key)
    typer.secho(
        "Copy it now: it cannot be shown again (only its hash is stored). "
        "Send it as 'Authorization: Bearer <key>'.",
        fg="yellow",
        err=True,
    )


@app.command("list")
def list_keys(
    user: Annotated[str | None, typer.Option("--user", help="Only this user's keys.")] = None,
    config: ConfigOption = None,
) -> None:
    """List API keys (their first characters, never the keys)."""
    from rich.console import Console

    from chatrelay.store import users

    async def work(db: Database) -> list[tuple[ApiKey, str]]:
        owner_id = (await user_named(db, user)).id if user is not None else None
        async with db.transaction() as session:
            return list(await users.list_api_keys(session, user_id=owner_id))

    Console().print(keys_table(on_database(config, work)))


@app.command("revoke")
def revoke_key(
    key_id: Annotated[str, typer.Argument(help="The key's id (key_..., see `keys list`).")],
    config: ConfigOption = None,
) -> None:
    """Revoke an API key: requests with it answer 401 from now on."""
    from chatrelay.store import users

    async def work(db: Database) -> None:
        async with db.transaction() as session:
            key = await users.revoke_api_key(session, key_id=key_id)
        if key is None:
            raise CommandError(f"no API key with id '{key_id}' (see `chatrelay keys list`)")

    on_database(config, work)
    typer.echo(f"Revoked {key_id}.")


def keys_table(rows: Iterable[tuple[ApiKey, str]]) -> Table:
    """``keys list``'s table: each key with its owner's username."""
    from rich.table import Table

    table = Table("id", "prefix", "name", "user", "created (UTC)", "last used", "revoked")
    # The id is what `keys revoke` takes: never cut short, however narrow the terminal.
    table.columns[0].no_wrap = True
    table.columns[0].min_width = len("key_") + 16
    for key, username in rows:
        table.add_row(
            key.id,
            key.prefix + "…",
            key.name,
            username,
            when(key.created_at),
            when(key.last_used_at),
            when(key.revoked_at) if key.revoked_at else "",
        )
    return table
