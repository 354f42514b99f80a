"""What the operator's commands share: the ``--config`` option, one-line failures, and running
a command's work against the configured database (``chatrelay users``, ``keys``, ``db``).

The database, argon2 and FastAPI's error type are imported inside the functions: `chatrelay`
starts (and `chatrelay chat` runs) without loading them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn, TypeVar

import typer

if TYPE_CHECKING:
    from chatrelay.store.database import Database
    from chatrelay.store.models import User

T = TypeVar("T")
ConfigOption = Annotated[
    Path | None, typer.Option("--config", help="TOML settings file (env vars win).")
]


class CommandError(Exception):
    """A failure to report in one line, exiting with status 1."""


def fail(message: object) -> NoReturn:
    """Report ``message`` in one red line on stderr and exit with status 1."""
    typer.secho(f"Error: {message}", fg="red", err=True)
    raise typer.Exit(1) from None


def on_database(config: Path | None, work: Callable[[Database], Awaitable[T]]) -> T:
    """Run ``work`` against the configured database; report failures in one line."""

    from chatrelay.config import Settings
    from chatrelay.errors import ChatRelayError
    from chatrelay.store.database import Database, database_url

    async def main() -> T:
        db = Database(database_url(Settings.load(config)))
        try:
            # Migrated first, so that a fresh data dir works without `chatrelay db upgrade`.
            await db.upgrade()
            return await work(db)
        finally:
            await db.close()

    try:
        return asyncio.run(main())
    except (CommandError, ChatRelayError, FileNotFoundError) as error:
        fail(error)


async def user_named(db: Database, name: str) -> User:
    """The account called ``name`` (any case), or a :class:`CommandError` naming it."""
    from chatrelay.store import users

    async with db.transaction() as session:
        user = await users.get_user_by_username(session, username=name.lower())
    if user is None:
        raise CommandError(f"no user named '{name}' (see `chatrelay users list`)")
    return user


def when(moment: datetime | None) -> str:
    """A moment in a listing, to the minute; ``-`` for never."""
    return moment.strftime("%Y-%m-%d %H:%M") if moment is not None else "-"
