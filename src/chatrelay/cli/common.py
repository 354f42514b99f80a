"""What the operator's commands share: the ``--config`` option and the settings read with it
(``load_settings``: what cannot be read is reported by name, not as a traceback), one-line
failures, and running a command's work against the configured database (``chatrelay users``,
``keys``, ``db``).

The database, argon2 and FastAPI's error type are imported inside the functions: `chatrelay`
starts (and `chatrelay chat` runs) without loading them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer

if TYPE_CHECKING:
    from chatrelay.config import Settings
    from chatrelay.store.database import Database
    from chatrelay.store.models import User

T = TypeVar("T")
ConfigOption = Annotated[
    Path | None, typer.Option("--config", help="TOML settings file (env vars win).")
]


class CommandError(Exception):
    """A failure to report in one line, exiting with status 1."""


def fail(message: object, status: int = 1) -> NoReturn:
    """Report ``message`` in red on stderr (one line, unless it says more) and exit with
    ``status``."""
    typer.secho(f"Error: {message}", fg="red", err=True)
    raise typer.Exit(status) from None


def load_settings(config: Path | None, **overrides: Any) -> Settings:
    """The settings (the environment, the ``--config`` file, then ``overrides``). Settings that
    cannot be read are reported, each by the name the operator sets, with exit status 2 (as
    `serve` refuses settings), not a traceback."""
    import tomllib

    from pydantic import ValidationError

    from chatrelay.config import Settings

    try:
        return Settings.load(config, **overrides)
    except FileNotFoundError as error:
        problem = f"{error} (--config takes the path of a TOML file)"
    except tomllib.TOMLDecodeError as error:
        problem = f"{config} is not valid TOML: {error}"
    except ValidationError as error:
        problem = "settings that are not valid:\n" + "\n".join(map(_invalid, error.errors()))
    fail(f"{problem}\nEvery setting is described in docs/configuration.md.", status=2)


def _invalid(error: Any) -> str:
    """One of pydantic's errors as a line: the setting by its variable and TOML key, what is
    wrong, and the value given where it is a number or a flag (a URL or a key may hold a
    secret, which is never printed)."""
    from chatrelay.config import Settings

    loc = error["loc"]
    where = ".".join(str(part) for part in loc) or "settings"
    field = Settings.model_fields.get(str(loc[0])) if loc else None
    if field is None:
        return f"  {where}: {error['msg']}"
    given = f", given {error['input']!r}" if field.annotation in _PLAIN and len(loc) == 1 else ""
    return f"  {Settings.env_name(str(loc[0]))} (TOML `{where}`): {error['msg']}{given}"


_PLAIN = (int, float, bool, int | None, float | None)  # settings whose value is no secret


def on_database(config: Path | None, work: Callable[[Database], Awaitable[T]]) -> T:
    """Run ``work`` against the configured database; report failures in one line."""

    from chatrelay.errors import ChatRelayError
    from chatrelay.store.database import Database, database_url

    settings = load_settings(config)

    async def main() -> T:
        db = Database(database_url(settings))
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
