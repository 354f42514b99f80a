"""`chatrelay users` and `chatrelay keys`, run through the real command line on a fresh data dir."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from typer.testing import CliRunner, Result

from chatrelay.cli import app
from chatrelay.store.database import Database
from chatrelay.store.models import ApiKey
from tests.conftest import RelayFactory

KEY = re.compile(r"^cr_[A-Za-z0-9_-]{43}$")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    # A data dir that does not exist yet: the commands must create and migrate it.
    return {"CHATRELAY_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "200"}


def run(env: dict[str, str], *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(app, list(args), env=env, input=input)


def key_row(env: dict[str, str], key_id: str) -> list[str]:
    """The cells of ``keys list``'s row for ``key_id``."""
    listed = run(env, "keys", "list")
    row = next(line for line in listed.output.splitlines() if key_id in line)
    return [cell.strip() for cell in row.split("│")[1:-1]]


def test_users_create_and_list(env: dict[str, str]) -> None:
    created = run(env, "users", "create", "Alice", "--admin", "--password", "correct horse")
    assert created.exit_code == 0, created.output
    assert "Created administrator 'alice'" in created.output
    # Without --password the password is asked for twice, hidden.
    prompted = run(env, "users", "create", "bob", input="battery staple\nbattery staple\n")
    assert prompted.exit_code == 0, prompted.output
    assert "battery staple" not in prompted.output

    listed = run(env, "users", "list")
    assert listed.exit_code == 0, listed.output
    rows = [line for line in listed.output.splitlines() if "alice" in line or "bob" in line]
    assert len(rows) == 2
    assert "yes" in rows[0] and "alice" in rows[0]
    assert "yes" not in rows[1]
    assert rows[0].split("│")[-2].strip() == "0"  # conversations


def test_users_create_refuses_duplicates_and_bad_input(env: dict[str, str]) -> None:
    assert run(env, "users", "create", "carol", "--password", "long enough").exit_code == 0
    again = run(env, "users", "create", "CAROL", "--password", "long enough")
    assert again.exit_code == 1
    assert "taken" in again.output
    short = run(env, "users", "create", "dave", "--password", "short")
    assert short.exit_code == 1
    assert "at least 8 characters" in short.output
    bad = run(env, "users", "create", "no spaces", "--password", "long enough")
    assert bad.exit_code == 1
    assert "username" in bad.output
    mismatch = run(env, "users", "create", "erin", input="first one\nsecond one\n")
    assert mismatch.exit_code != 0


def test_set_password(env: dict[str, str]) -> None:
    assert run(env, "users", "create", "frank", "--password", "first password").exit_code == 0
    changed = run(env, "users", "set-password", "frank", "--password", "second password")
    assert changed.exit_code == 0, changed.output
    unknown = run(env, "users", "set-password", "nobody", "--password", "second password")
    assert unknown.exit_code == 1
    assert "no user named 'nobody'" in unknown.output


def test_keys_create_list_revoke(env: dict[str, str]) -> None:
    assert run(env, "users", "create", "grace", "--password", "long enough").exit_code == 0
    created = run(env, "keys", "create", "--user", "grace", "--name", "laptop")
    assert created.exit_code == 0, created.output
    # The key alone on stdout; the notes (shown once, cannot be shown again) on stderr.
    key = created.stdout.strip()
    assert KEY.match(key), created.stdout
    assert "cannot be shown again" in created.stderr
    key_id = re.search(r"key_[A-Za-z0-9_-]+", created.stderr)
    assert key_id is not None

    listed = run(env, "keys", "list")
    assert listed.exit_code == 0, listed.output
    assert key_id.group() in listed.output
    assert key[:10] in listed.output
    assert key not in listed.output
    assert "laptop" in listed.output and "grace" in listed.output
    assert run(env, "keys", "list", "--user", "grace").output.count("key_") == 1

    assert key_row(env, key_id.group())[-1] == ""  # not revoked
    revoked = run(env, "keys", "revoke", key_id.group())
    assert revoked.exit_code == 0, revoked.output
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d", key_row(env, key_id.group())[-1])


def test_unknown_users_and_keys_exit_1(env: dict[str, str]) -> None:
    for args in (
        ("keys", "create", "--user", "nobody"),
        ("keys", "list", "--user", "nobody"),
    ):
        result = run(env, *args)
        assert result.exit_code == 1, args
        assert "no user named 'nobody'" in result.output
    result = run(env, "keys", "revoke", "key_doesnotexist")
    assert result.exit_code == 1
    assert "no API key with id 'key_doesnotexist'" in result.output


async def test_a_cli_key_works_against_the_server(
    relay_for: RelayFactory, database_url: str, tmp_path: Path
) -> None:
    env = {"CHATRELAY_DATABASE_URL": database_url, "CHATRELAY_DATA_DIR": str(tmp_path)}
    # The commands run their own event loop, so they go to a thread here.
    created = await asyncio.to_thread(
        run, env, "users", "create", "heidi", "--password", "long enough"
    )
    assert created.exit_code == 0, created.output
    issued = await asyncio.to_thread(run, env, "keys", "create", "--user", "heidi")
    assert issued.exit_code == 0, issued.output
    key = issued.stdout.strip()

    # No memory of credentials: the CLI's revocation must count at the very next request.
    async with relay_for(
        database_url=database_url, data_dir=tmp_path, auth_cache_seconds=0
    ) as relay:
        bearer = {"authorization": f"Bearer {key}"}
        response = await relay.client.get("/api/me", headers=bearer)
        assert response.status_code == 200
        assert response.json()["username"] == "heidi"
        login = await relay.client.post(
            "/api/auth/login", json={"username": "heidi", "password": "long enough"}
        )
        assert login.status_code == 200

        db: Database = relay.context.db
        async with db.transaction() as session:
            row = (await session.scalars(select(ApiKey))).one()
        revoked = await asyncio.to_thread(run, env, "keys", "revoke", row.id)
        assert revoked.exit_code == 0, revoked.output
        async with httpx.AsyncClient(base_url=relay.url) as client:
            assert (await client.get("/api/me", headers=bearer)).status_code == 401


def test_db_upgrade_creates_the_schema(tmp_path: Path) -> None:
    import sqlite3

    from typer.testing import CliRunner

    from chatrelay.cli import app

    result = CliRunner().invoke(app, ["db", "upgrade"], env={"CHATRELAY_DATA_DIR": str(tmp_path)})
    assert result.exit_code == 0, result.output
    assert "up to date" in result.output
    with sqlite3.connect(tmp_path / "chatrelay.db") as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
        version = connection.execute("SELECT version_num FROM alembic_version").fetchone()
    assert {"users", "sessions", "api_keys", "conversations", "messages"} <= tables
    assert "usage_ledger" in tables
    assert version == ("0008",)


def test_users_budget_sets_and_clears_an_accounts_own_budget(env: dict[str, str]) -> None:
    assert run(env, "users", "create", "dora", "--password", "long enough").exit_code == 0

    def budget_cell() -> str:
        listed = run(env, "users", "list")
        row = next(line for line in listed.output.splitlines() if "dora" in line)
        return row.split("│")[-3].strip()

    assert budget_cell() == "default"
    assert run(env, "users", "budget", "Dora", "50000").exit_code == 0
    assert budget_cell() == "50,000"
    zero = run(env, "users", "budget", "dora", "0")
    assert zero.exit_code == 0 and "unlimited" in zero.output
    assert budget_cell() == "unlimited"
    cleared = run(env, "users", "budget", "dora", "--default")
    assert cleared.exit_code == 0 and "CHATRELAY_USER_TOKEN_BUDGET" in cleared.output
    assert budget_cell() == "default"

    assert run(env, "users", "budget", "dora").exit_code == 1  # neither a number nor --default
    assert run(env, "users", "budget", "dora", "5", "--default").exit_code == 1
    assert run(env, "users", "budget", "dora", "--", "-5").exit_code == 1
    unknown = run(env, "users", "budget", "nobody", "10")
    assert unknown.exit_code == 1 and "no user named 'nobody'" in unknown.output
