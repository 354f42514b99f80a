"""`chatrelay users ...` and `chatrelay keys ...`: accounts and API keys, for the operator.

They open the configured database directly (migrating it first, so a fresh data dir works)
and need no running server::

    chatrelay users create alice --admin          # asks for the password twice
    chatrelay users budget alice 50000            # tokens per period; 0 = unlimited
    chatrelay users set-password alice            # and signs alice out everywhere
    chatrelay users sign-out alice                # every browser of alice's signed out
    chatrelay keys create --user alice --name laptop
    chatrelay keys list --user alice
    chatrelay keys revoke key_...
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

# The database, argon2 and FastAPI's error type are imported inside the commands: `chatrelay`
# starts (and `chatrelay chat` runs) without loading them.
if TYPE_CHECKING:
    from chatrelay.store.database import Database
    from chatrelay.store.models import ApiKey, User

users_app = typer.Typer(help="Create and list accounts.", no_args_is_help=True)
keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)

T = TypeVar("T")
ConfigOption = Annotated[
    Path | None, typer.Option("--config", help="TOML settings file (env vars win).")
]


class CommandError(Exception):
    """A failure to report in one line, exiting with status 1."""


def _run(config: Path | None, work: Callable[[Database], Awaitable[T]]) -> T:
    """Run ``work`` against the configured database; report failures in one line."""

    from chatrelay.config import Settings
    from chatrelay.errors import ChatRelayError
    from chatrelay.store.database import Database, database_url

    async def main() -> T:
        db = Database(database_url(Settings.load(config)))
        try:
            await db.upgrade()
            return await work(db)
        finally:
            await db.close()

    try:
        return asyncio.run(main())
    except (CommandError, ChatRelayError, FileNotFoundError) as error:
        typer.secho(f"Error: {error}", fg="red", err=True)
        raise typer.Exit(1) from None


async def _user_named(db: Database, name: str) -> User:
    from chatrelay.store import users

    async with db.transaction() as session:
        user = await users.get_user_by_username(session, username=name.lower())
    if user is None:
        raise CommandError(f"no user named '{name}' (see `chatrelay users list`)")
    return user


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M") if moment is not None else "-"


def _new_password(given: str | None) -> str:
    from chatrelay.auth.accounts import check_new_password
    from chatrelay.errors import ChatRelayError

    password = given
    if password is None:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        check_new_password(password)
    except ChatRelayError as error:
        typer.secho(f"Error: {error}", fg="red", err=True)
        raise typer.Exit(1) from None
    return password


@users_app.command("create")
def create_user(
    name: Annotated[str, typer.Argument(help="Username: 3-32 of A-Z a-z 0-9 _ . -")],
    admin: Annotated[bool, typer.Option("--admin", help="Make an administrator.")] = False,
    password: Annotated[
        str | None,
        typer.Option(help="The password; asked for (hidden) when not given. Visible in ps!"),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Create an account."""
    from sqlalchemy.exc import IntegrityError

    from chatrelay.auth.accounts import normalise_username
    from chatrelay.auth.passwords import hash_password
    from chatrelay.errors import ChatRelayError
    from chatrelay.store import users

    try:
        username = normalise_username(name)
    except ChatRelayError as error:
        typer.secho(f"Error: {error}", fg="red", err=True)
        raise typer.Exit(1) from None
    chosen = _new_password(password)

    async def work(db: Database) -> None:
        password_hash = await hash_password(chosen)
        try:
            async with db.transaction() as session:
                await users.create_user(
                    session, username=username, password_hash=password_hash, is_admin=admin
                )
        except IntegrityError:
            raise CommandError(f"the username '{username}' is taken") from None

    _run(config, work)
    typer.echo(f"Created {'administrator' if admin else 'user'} '{username}'.")


@users_app.command("set-password")
def set_password(
    name: Annotated[str, typer.Argument(help="Username.")],
    password: Annotated[
        str | None,
        typer.Option(help="The new password; asked for (hidden) when not given. Visible in ps!"),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Set an account's password and sign it out everywhere (as a password change on the
    page does: whoever holds an old session cookie is out)."""
    from chatrelay.auth.passwords import hash_password
    from chatrelay.auth.sessions import end_user_sessions
    from chatrelay.store import users

    chosen = _new_password(password)

    async def work(db: Database) -> tuple[str, int]:
        user = await _user_named(db, name)
        password_hash = await hash_password(chosen)
        async with db.transaction() as session:
            await users.set_password_hash(session, user_id=user.id, password_hash=password_hash)
            ended = await end_user_sessions(session, user_id=user.id)
        return user.username or name, len(ended)

    username, ended = _run(config, work)
    typer.echo(f"Password of '{username}' changed; {_sessions(ended)} signed out.")


@users_app.command("sign-out")
def sign_out(
    name: Annotated[str, typer.Argument(help="Username.")],
    config: ConfigOption = None,
) -> None:
    """Sign an account out everywhere: every browser session of it ends (API keys stay)."""
    from chatrelay.auth.sessions import end_user_sessions

    async def work(db: Database) -> tuple[str, int]:
        user = await _user_named(db, name)
        async with db.transaction() as session:
            ended = await end_user_sessions(session, user_id=user.id)
        return user.username or name, len(ended)

    username, ended = _run(config, work)
    typer.echo(f"'{username}': {_sessions(ended)} signed out.")


def _sessions(count: int) -> str:
    # A running server may honour a cached session for CHATRELAY_AUTH_CACHE_SECONDS more.
    return f"{count} session{'' if count == 1 else 's'}"


@users_app.command("list")
def list_users(config: ConfigOption = None) -> None:
    """List accounts (guests are not listed)."""
    from rich.console import Console
    from rich.table import Table

    from chatrelay.store import users

    async def work(db: Database) -> list[tuple[User, int]]:
        async with db.transaction() as session:
            return list(await users.list_users(session))

    table = Table("username", "admin", "created (UTC)", "token budget", "conversations")
    for user, count in _run(config, work):
        table.add_row(
            user.username,
            "yes" if user.is_admin else "",
            _when(user.created_at),
            _budget(user.token_budget),
            str(count),
        )
    Console().print(table)


def _budget(tokens: int | None) -> str:
    if tokens is None:
        return "default"
    return "unlimited" if tokens == 0 else f"{tokens:,}"


@users_app.command("budget")
def set_budget(
    name: Annotated[str, typer.Argument(help="Username.")],
    tokens: Annotated[
        int | None,
        typer.Argument(help="Tokens per budget period (CHATRELAY_BUDGET_PERIOD); 0 = unlimited."),
    ] = None,
    default: Annotated[
        bool, typer.Option("--default", help="Follow CHATRELAY_USER_TOKEN_BUDGET again.")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Set an account's own token budget; it applies from its next request."""
    from chatrelay.store import usage

    if (tokens is None) == (not default) or (tokens is not None and tokens < 0):
        typer.secho(
            "Error: give a number of tokens (0 = unlimited) or --default.", fg="red", err=True
        )
        raise typer.Exit(1)

    async def work(db: Database) -> str:
        user = await _user_named(db, name)
        async with db.transaction() as session:
            await usage.set_token_budget(session, user_id=user.id, tokens=tokens)
        return user.username or name

    username = _run(config, work)
    if tokens is None:
        typer.echo(f"'{username}' follows the default token budget (CHATRELAY_USER_TOKEN_BUDGET).")
    else:
        typer.echo(f"Token budget of '{username}': {_budget(tokens)} per period.")


@keys_app.command("create")
def create_key(
    user: Annotated[str, typer.Option("--user", help="Username the key acts as.")],
    name: Annotated[str, typer.Option("--name", help="A label to tell keys apart.")] = "",
    config: ConfigOption = None,
) -> None:
    """Create an API key. It is printed once: only its hash is kept."""
    from chatrelay.auth.api_keys import issue_api_key
    from chatrelay.store import users

    issued = issue_api_key()

    async def work(db: Database) -> str:
        owner = await _user_named(db, user)
        async with db.transaction() as session:
            row = await users.create_api_key(
                session,
                user_id=owner.id,
                name=name,
                key_hash=issued.key_hash,
                prefix=issued.prefix,
            )
        return row.id

    key_id = _run(config, work)
    # The key alone on stdout (so `KEY=$(chatrelay keys create ...)` works), notes on stderr.
    typer.echo(f"Created API key {key_id} for '{user.lower()}':", err=True)
    typer.echo(issued.key)
    typer.secho(
        "Copy it now: it cannot be shown again (only its hash is stored). "
        "Send it as 'Authorization: Bearer <key>'.",
        fg="yellow",
        err=True,
    )


@keys_app.command("list")
def list_keys(
    user: Annotated[str | None, typer.Option("--user", help="Only this user's keys.")] = None,
    config: ConfigOption = None,
) -> None:
    """List API keys (their first characters, never the keys)."""
    from rich.console import Console
    from rich.table import Table

    from chatrelay.store import users

    async def work(db: Database) -> list[tuple[ApiKey, str]]:
        owner_id = (await _user_named(db, user)).id if user is not None else None
        async with db.transaction() as session:
            return list(await users.list_api_keys(session, user_id=owner_id))

    table = Table("id", "prefix", "name", "user", "created (UTC)", "last used", "revoked")
    # The id is what `keys revoke` takes: never cut short, however narrow the terminal.
    table.columns[0].no_wrap = True
    table.columns[0].min_width = len("key_") + 16
    for key, username in _run(config, work):
        table.add_row(
            key.id,
            key.prefix + "…",
            key.name,
            username,
            _when(key.created_at),
            _when(key.last_used_at),
            _when(key.revoked_at) if key.revoked_at else "",
        )
    Console().print(table)


@keys_app.command("revoke")
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

    _run(config, work)
    typer.echo(f"Revoked {key_id}.")
