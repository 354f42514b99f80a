"""An account ends its own sessions: sign out everywhere, change the password (the API and
`chatrelay users set-password | sign-out`), through the real server on a real socket.

A stolen session cookie is modelled as a second client holding a copy of the cookie. Tests
taking ``database_url`` run on SQLite and on a fresh PostgreSQL database.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from sqlalchemy import func, select

from chatrelay.auth.api_keys import issue_api_key
from chatrelay.auth.passwords import verify_password
from chatrelay.auth.sessions import COOKIE_NAME
from chatrelay.store import users
from chatrelay.store.models import Session as SessionRow
from tests.conftest import RelayFactory, RunningRelay
from tests.e2e.test_admin_cli import run
from tests.e2e.test_auth import PASSWORD, browser, db_of, error_code, login, me, register

NEW_PASSWORD = "a much better passphrase"


async def sessions_of(relay: RunningRelay, user_id: str) -> int:
    async with db_of(relay).read() as session:
        count = await session.scalar(
            select(func.count()).select_from(SessionRow).where(SessionRow.user_id == user_id)
        )
    return int(count or 0)


async def signed_in_as(client: httpx.AsyncClient) -> str | None:
    """The account this client's cookie signs in, or None (a new guest, then)."""
    body = await me(client)
    return None if body["is_guest"] else str(body["username"])


async def key_for(relay: RunningRelay, user_id: str) -> str:
    issued = issue_api_key()
    async with db_of(relay).transaction() as session:
        await users.create_api_key(
            session, user_id=user_id, name="", key_hash=issued.key_hash, prefix=issued.prefix
        )
    return issued.key


async def test_sign_out_everywhere_ends_every_session_of_the_account(
    relay_for: RelayFactory, database_url: str, tmp_path: Path
) -> None:
    async with (
        relay_for(database_url=database_url, data_dir=tmp_path) as relay,
        browser(relay) as laptop,
        browser(relay) as phone,
        browser(relay) as other_user,
    ):
        account = await register(laptop, "alice")
        assert (await login(phone, "alice")).status_code == 200
        # A thief's copy of the phone's cookie, used (and so remembered by the server) first.
        thief = browser(relay, cookies={COOKIE_NAME: phone.cookies[COOKIE_NAME]})
        assert await signed_in_as(thief) == "alice"
        await register(other_user, "bob")
        key = await key_for(relay, account["id"])
        assert await sessions_of(relay, account["id"]) == 2

        response = await laptop.post("/api/auth/logout-all")
        assert response.status_code == 204, response.text
        assert "Max-Age=0" in response.headers["set-cookie"]
        assert COOKIE_NAME not in laptop.cookies

        assert await sessions_of(relay, account["id"]) == 0
        for client in (laptop, phone, thief):
            assert await signed_in_as(client) is None
        await thief.aclose()
        # Another account is not touched, and API keys are not sessions.
        assert await signed_in_as(other_user) == "bob"
        by_key = await relay.client.get("/api/me", headers={"authorization": f"Bearer {key}"})
        assert by_key.json()["id"] == account["id"]


async def test_guests_and_strangers_cannot_sign_out_everywhere(
    relay_for: RelayFactory, tmp_path: Path
) -> None:
    async with relay_for(data_dir=tmp_path) as relay, browser(relay) as client:
        stranger = await client.post("/api/auth/logout-all")
        assert stranger.status_code == 401
        assert error_code(stranger) == "authentication_required"
        await me(client)  # now a guest
        guest = await client.post("/api/auth/logout-all")
        assert guest.status_code == 401
        password = await client.post(
            "/api/auth/password",
            json={"current_password": "whatever it is", "new_password": NEW_PASSWORD},
        )
        assert password.status_code == 401
        assert error_code(password) == "authentication_required"


async def test_changing_the_password_signs_out_every_other_session(
    relay_for: RelayFactory, database_url: str, tmp_path: Path
) -> None:
    async with (
        relay_for(database_url=database_url, data_dir=tmp_path) as relay,
        browser(relay) as laptop,
        browser(relay) as phone,
    ):
        account = await register(laptop, "carol")
        assert (await login(phone, "carol")).status_code == 200
        # The laptop's own cookie was stolen: its copy must stop working too.
        old_cookie = laptop.cookies[COOKIE_NAME]
        thief = browser(relay, cookies={COOKIE_NAME: old_cookie})
        assert await signed_in_as(thief) == "carol"

        response = await laptop.post(
            "/api/auth/password",
            json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        )
        assert response.status_code == 200, response.text
        assert response.json()["id"] == account["id"]
        # This browser stays signed in, with a new cookie.
        assert laptop.cookies[COOKIE_NAME] != old_cookie
        assert await signed_in_as(laptop) == "carol"
        assert await signed_in_as(phone) is None
        assert await signed_in_as(thief) is None
        await thief.aclose()
        assert await sessions_of(relay, account["id"]) == 1

        async with browser(relay) as again:
            assert (await login(again, "carol")).status_code == 401
            assert (await login(again, "carol", NEW_PASSWORD)).status_code == 200


async def test_a_password_change_says_what_is_wrong(
    relay_for: RelayFactory, tmp_path: Path
) -> None:
    async with (
        relay_for(data_dir=tmp_path, sign_in_max_failures=2, sign_in_window=600) as relay,
        browser(relay) as client,
        browser(relay) as phone,
    ):
        await register(client, "dave")
        assert (await login(phone, "dave")).status_code == 200

        def change(current: str, new: str) -> dict[str, str]:
            return {"current_password": current, "new_password": new}

        short = await client.post("/api/auth/password", json=change(PASSWORD, "short"))
        assert short.status_code == 422
        assert short.json()["error"]["code"] == "password_too_short"
        assert short.json()["error"]["param"] == "new_password"
        for _ in range(2):
            wrong = await client.post("/api/auth/password", json=change("not it!!", NEW_PASSWORD))
            assert wrong.status_code == 403
            assert wrong.json()["error"] == {
                "message": "The current password is wrong.",
                "type": "permission_error",
                "code": "wrong_password",
                "param": "current_password",
            }
        # A stolen cookie is no way around the sign-in throttle: even the right one waits now.
        throttled = await client.post("/api/auth/password", json=change(PASSWORD, NEW_PASSWORD))
        assert throttled.status_code == 429
        assert error_code(throttled) == "too_many_attempts"
        assert int(throttled.headers["retry-after"]) > 0
        # Nothing changed and nobody was signed out.
        assert await signed_in_as(phone) == "dave"
        async with db_of(relay).read() as session:
            stored = await users.get_user_by_username(session, username="dave")
        assert stored is not None and stored.password_hash is not None
        assert await verify_password(stored.password_hash, PASSWORD)


async def test_other_sites_cannot_sign_out_or_change_the_password(
    relay_for: RelayFactory, tmp_path: Path
) -> None:
    async with relay_for(data_dir=tmp_path) as relay, browser(relay) as client:
        account = await register(client, "erin")
        evil = {"origin": "https://evil.example"}
        for path, body in (
            ("/api/auth/logout-all", None),
            ("/api/auth/password", {"current_password": PASSWORD, "new_password": NEW_PASSWORD}),
        ):
            response = await client.post(path, json=body, headers=evil)
            assert response.status_code == 403, path
            assert error_code(response) == "csrf_rejected"
        assert await sessions_of(relay, account["id"]) == 1
        assert await signed_in_as(client) == "erin"
        assert (await login(client, "erin")).status_code == 200  # the old password still


async def test_an_api_key_can_change_the_password_and_ends_every_session(
    relay_for: RelayFactory, tmp_path: Path
) -> None:
    async with relay_for(data_dir=tmp_path) as relay, browser(relay) as client:
        account = await register(client, "frank")
        key = await key_for(relay, account["id"])
        response = await relay.client.post(
            "/api/auth/password",
            json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
            headers={"authorization": f"Bearer {key}"},
        )
        assert response.status_code == 200, response.text
        assert "set-cookie" not in response.headers  # a key's caller has no session to keep
        assert await signed_in_as(client) is None
        assert await sessions_of(relay, account["id"]) == 0


async def test_cli_set_password_and_sign_out_end_the_users_sessions(
    relay_for: RelayFactory, database_url: str, tmp_path: Path
) -> None:
    env = {"CHATRELAY_DATABASE_URL": database_url, "CHATRELAY_DATA_DIR": str(tmp_path)}
    # No memory of credentials: the CLI's sign-out must count at the very next request.
    async with (
        relay_for(database_url=database_url, data_dir=tmp_path, auth_cache_seconds=0) as relay,
        browser(relay) as first,
        browser(relay) as second,
        browser(relay) as bystander,
    ):
        await register(first, "grace")
        await register(bystander, "heidi")
        changed = await asyncio.to_thread(
            run, env, "users", "set-password", "grace", "--password", NEW_PASSWORD
        )
        assert changed.exit_code == 0, changed.output
        assert "Password of 'grace' changed; 1 session signed out." in changed.output
        assert await signed_in_as(first) is None
        assert (await login(second, "grace", NEW_PASSWORD)).status_code == 200

        signed_out = await asyncio.to_thread(run, env, "users", "sign-out", "GRACE")
        assert signed_out.exit_code == 0, signed_out.output
        assert "'grace': 1 session signed out." in signed_out.output
        assert await signed_in_as(second) is None
        assert await signed_in_as(bystander) == "heidi"
        unknown = await asyncio.to_thread(run, env, "users", "sign-out", "nobody")
        assert unknown.exit_code == 1
        assert "no user named 'nobody'" in unknown.output
