"""`chatrelay users ...`: accounts, for the operator.

The commands open the configured database directly (migrating it first, so a fresh data dir
works) and need no running server::

    chatrelay users create alice --admin          # asks for the password twice
    chatrelay users list                          # guests are not listed
    chatrelay users budget alice 50000            # tokens per period; 0 = unlimited
    chatrelay users set-password alice            # and signs alice out everywhere
    chatrelay users sign-out alice                # every browser of alice's signed out
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Annotated

import typer

from chatrelay.cli.common import CommandError, ConfigOption, fail, on_database, user_named, when

if TYPE_CHECKING:
    from rich.table import Table

    from chatrelay.store.database import Database
    from chatrelay.store.models import User

app = typer.Typer(help="Create and list accounts.", no_args_is_help=True)


@app.command("create")
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
        fail(error)
    chosen = new_password(password)

    async def work(db: Database) -> None:
        password_hash = await hash_password(chosen)
        try:
            async with db.transaction() as session:
                await users.create_user(
                    session, username=username, password_hash=password_hash, is_admin=admin
                )
        except IntegrityError:
            raise CommandError(f"the username '{username}' is taken") from None

    on_database(config, work)
    typer.echo(f"Created {'administrator' if admin else 'user'} '{username}'.")


@app.command("set-password")
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

    chosen = new_password(password)

    async def work(db: Database) -> tuple[str, int]:
        user = await user_named(db, name)
        password_hash = await hash_password(chosen)
        async with db.transaction() as session:
            await users.set_password_hash(session, user_id=user.id, password_hash=password_hash)
            ended = await end_user_sessions(session, user_id=user.id)
        return user.username or name, len(ended)

    username, ended = on_database(config, work)
    typer.echo(f"Password of '{username}' changed; {sessions(ended)} signed out.")


@app.command("sign-out")
def sign_out(
    name: Annotated[str, typer.Argument(help="Username.")],
    config: ConfigOption = None,
) -> None:
    """Sign an account out everywhere: every browser session of it ends (API keys stay)."""
    from chatrelay.auth.sessions import end_user_sessions

    async def work(db: Database) -> tuple[str, int]:
        user = await user_named(db, name)
        async with db.transaction() as session:
            ended = await end_user_sessions(session, user_id=user.id)
        return user.username or name, len(ended)

    username, ended = on_database(config, work)
    typer.echo(f"'{username}': {sessions(ended)} signed out.")


@app.command("list")
def list_users(config: ConfigOption = None) -> None:
    """List accounts (guests are not listed)."""
    from rich.console import Console

    from chatrelay.store import users

    async def work(db: Database) -> list[tuple[User, int]]:
        async with db.transaction() as session:
            return list(await users.list_users(session))

    Console().print(users_table(on_database(config, work)))


@app.command("budget")
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
        fail("give a number of tokens (0 = unlimited) or --default.")

    async def work(db: Database) -> str:
        user = await user_named(db, name)
        async with db.transaction() as session:
            await usage.set_token_budget(session, user_id=user.id, tokens=tokens)
        return user.username or name

    username = on_database(config, work)
    if tokens is None:
        typer.echo(f"'{username}' follows the default token budget (CHATRELAY_USER_TOKEN_BUDGET).")
    else:
        typer.echo(f"Token budget of '{username}': {budget(tokens)} per period.")


@app.command("spend-limit")
def set_spend_limit(
    name: Annotated[str, typer.Argument(help="Username.")],
    amount: Annotated[
        float | None,
        typer.Argument(
            help="Money per budget period, in the upstreams' currency (their prices); "
            "0 = unlimited."
        ),
    ] = None,
    default: Annotated[
        bool, typer.Option("--default", help="Follow CHATRELAY_USER_SPEND_LIMIT again.")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Set an account's own spend limit; it applies from its next request."""
    from chatrelay.store import usage
    from chatrelay.upstreams.pricing import NANOS

    if (amount is None) == (not default) or (amount is not None and amount < 0):
        fail("give an amount (0 = unlimited) or --default.")

    async def work(db: Database) -> str:
        user = await user_named(db, name)
        async with db.transaction() as session:
            limit = None if amount is None else round(amount * NANOS)
            await usage.set_spend_limit(session, user_id=user.id, nanos=limit)
        return user.username or name

    username = on_database(config, work)
    if amount is None:
        typer.echo(f"'{username}' follows the default spend limit (CHATRELAY_USER_SPEND_LIMIT).")
    else:
        shown = "unlimited" if amount == 0 else f"{amount:g}"
        typer.echo(f"Spend limit of '{username}': {shown} per period.")


def new_password(given: str | None) -> str:
    """``given``, or the password typed twice (hidden), once it is long enough."""
    from chatrelay.auth.accounts import check_new_password
    from chatrelay.errors import ChatRelayError

    password = given
    if password is None:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        check_new_password(password)
    except ChatRelayError as error:
        fail(error)
    return password


def users_table(rows: Iterable[tuple[User, int]]) -> Table:
    """``users list``'s table: each account with its number of conversations."""
    from rich.table import Table

    table = Table("username", "admin", "created (UTC)", "token budget", "conversations")
    for user, count in rows:
        table.add_row(
            user.username,
            "yes" if user.is_admin else "",
            when(user.created_at),
            budget(user.token_budget),
            str(count),
        )
    return table


def budget(tokens: int | None) -> str:
    """An account's own token budget as listed: None follows the default, 0 is unlimited."""
    if tokens is None:
        return "default"
    return "unlimited" if tokens == 0 else f"{tokens:,}"


def sessions(count: int) -> str:
    # A running server may honour a cached session for CHATRELAY_AUTH_CACHE_SECONDS more.
    return f"{count} session{'' if count == 1 else 's'}"
