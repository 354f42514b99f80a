"""Guests, accounts, sessions, API keys and CSRF, through the real server on a real socket.

Each ``httpx.AsyncClient`` is one browser with its own cookie jar. Tests taking
``database_url`` run on SQLite and on a fresh PostgreSQL database.
"""

from __future__ import annotations

import asyncio
import os
import stat
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends
from sqlalchemy import select, update

from chatrelay.auth.api_keys import issue_api_key
from chatrelay.auth.identity import require_account
from chatrelay.auth.sessions import COOKIE_NAME, token_hash
from chatrelay.limits.sign_in import MemorySignInThrottle
from chatrelay.store import users
from chatrelay.store.database import Database
from chatrelay.store.models import ApiKey, Conversation, MessageRow, User, utcnow
from chatrelay.store.models import Session as SessionRow
from tests.conftest import RelayFactory, RunningRelay

PASSWORD = "correct horse battery"


def browser(relay: RunningRelay, **options: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=relay.url, timeout=10, **options)


def set_session_cookie(response: httpx.Response) -> str | None:
    """The raw ``Set-Cookie`` header for the session cookie, if the response has one."""
    found = [
        header
        for header in response.headers.get_list("set-cookie")
        if header.startswith(f"{COOKIE_NAME}=")
    ]
    assert len(found) <= 1, found
    return found[0] if found else None


def cookie_value(header: str) -> str:
    return header.split(";", 1)[0].split("=", 1)[1]


async def me(client: httpx.AsyncClient, **options: Any) -> dict[str, Any]:
    response = await client.get("/api/me", **options)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def become_guest(client: httpx.AsyncClient) -> dict[str, Any]:
    """A guest and its cookie now (a page's first chat makes one otherwise)."""
    response = await client.post("/api/auth/guest")
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def register(
    client: httpx.AsyncClient, username: str, password: str = PASSWORD
) -> dict[str, Any]:
    response = await client.post(
        "/api/auth/register", json={"username": username, "password": password}
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def login(
    client: httpx.AsyncClient, username: str, password: str = PASSWORD
) -> httpx.Response:
    return await client.post("/api/auth/login", json={"username": username, "password": password})


def db_of(relay: RunningRelay) -> Database:
    database: Database = relay.context.db
    return database


def error_code(response: httpx.Response) -> str:
    code: str = response.json()["error"]["code"]
    return code


# Guests


async def test_a_guest_cookie_survives_a_restart(
    relay_for: RelayFactory, database_url: str, tmp_path: Path
) -> None:
    settings = {"database_url": database_url, "data_dir": tmp_path}
    async with relay_for(**settings) as relay, browser(relay) as client:
        page = await client.get("/")
        assert page.status_code == 200
        assert set_session_cookie(page) is None  # a page load creates nobody
        made = await client.post("/api/auth/guest")
        assert made.status_code == 201
        header = set_session_cookie(made)
        assert header is not None
        attributes = [part.strip() for part in header.split(";")]
        assert "HttpOnly" in attributes
        assert "SameSite=Lax" in attributes
        assert "Path=/" in attributes
        assert "Secure" not in attributes  # plain http here
        assert f"Max-Age={365 * 24 * 3600}" in attributes
        cookie = cookie_value(header)

        who = await me(client)
        assert who == made.json()
        assert who["is_guest"] is True
        assert who["username"] is None
        assert who["is_admin"] is False
        # A known session is not re-sent on every request.
        again = await client.get("/api/me")
        assert again.json()["id"] == who["id"]
        assert set_session_cookie(again) is None

    key_file = tmp_path / "secret_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = key_file.read_text().strip()
    assert len(key) >= 60

    async with relay_for(**settings) as relay:
        async with browser(relay, cookies={COOKIE_NAME: cookie}) as client:
            assert (await me(client))["id"] == who["id"]
    assert key_file.read_text().strip() == key


async def test_secret_key_from_the_environment_setting_is_used(
    relay_for: RelayFactory, tmp_path: Path
) -> None:
    async with relay_for(data_dir=tmp_path, secret_key="k" * 40) as relay:
        async with browser(relay) as client:
            guest = await become_guest(client)
            cookie = client.cookies[COOKIE_NAME]
    assert not (tmp_path / "secret_key").exists()
    # Another key cannot read the cookie: the browser becomes a new guest.
    async with relay_for(data_dir=tmp_path, secret_key="j" * 40) as relay:
        async with browser(relay, cookies={COOKIE_NAME: cookie}) as client:
            assert (await become_guest(client))["id"] != guest["id"]


async def test_a_tampered_cookie_makes_a_new_guest_not_an_error(
    relay_for: RelayFactory, tmp_path: Path
) -> None:
    async with relay_for(data_dir=tmp_path) as relay:
        async with browser(relay) as client:
            first = await become_guest(client)
            cookie = client.cookies[COOKIE_NAME]
        token, _, signature = cookie.rpartition(".")
        for forged in (
            token[:-1] + ("A" if token[-1] != "A" else "B") + "." + signature,
            cookie + "x",
            "garbage",
            "",
        ):
            async with browser(relay, cookies={COOKIE_NAME: forged}) as client:
                assert (await me(client))["id"] is None  # nobody, and nobody is made
                response = await client.post("/api/auth/guest")
                assert response.status_code == 201
                assert response.json()["id"] != first["id"]
                assert response.json()["is_guest"] is True
                assert set_session_cookie(response) is not None


async def test_read_only_requests_create_no_guest(relay_for: RelayFactory, tmp_path: Path) -> None:
    async with relay_for(data_dir=tmp_path) as relay, browser(relay) as client:
        response = await client.get("/healthz")
        assert set_session_cookie(response) is None
        response = await client.get("/api/models")
        assert set_session_cookie(response) is None
        async with db_of(relay).transaction() as session:
            assert (await session.scalars(select(User))).all() == []


async def test_an_expired_session_is_no_session(
    relay_for: RelayFactory, database_url: str, tmp_path: Path
) -> None:
    async with relay_for(database_url=database_url, data_dir=tmp_path) as relay:
        async with browser(relay) as client:
            guest = await become_guest(client)
            async with db_of(relay).transaction() as session:
                await session.execute(
                    update(SessionRow)
                    .where(SessionRow.user_id == guest["id"])
                    .values(expires_at=utcnow() - timedelta(seconds=1))
                )
            assert (await me(client))["id"] is None


async def test_a_session_slides_forward_at_most_daily(
    relay_for: RelayFactory, database_url: str, tmp_path: Path
) -> None:
    async with relay_for(database_url=database_url, data_dir=tmp_path) as relay:
        async with browser(relay) as client:
            account = await register(client, "slider")
            soon = utcnow() + timedelta(days=3)
            async with db_of(relay).transaction() as session:
                await session.execute(
                    update(SessionRow)
                    .where(SessionRow.user_id == account["id"])
                    .values(expires_at=soon)
                )
            response = await client.get("/api/me")
            assert response.json()["id"] == account["id"]
            header = set_session_cookie(response)
            assert header is not None
            assert f"Max-Age={30 * 24 * 3600}" in header
            async with db_of(relay).transaction() as session:
                row = await session.scalar(
                    select(SessionRow).where(SessionRow.user_id == account["id"])
                )
            assert row is not None
            assert row.expires_at > utcnow() + timedelta(days=29)
            # Just extended: the next request neither writes nor re-sends the cookie.
            assert set_session_cookie(await client.get("/api/me")) is None


async def test_the_cookie_is_secure_over_https(relay_for: RelayFactory, tmp_path: Path) -> None:
    async with relay_for(data_dir=tmp_path) as relay, browser(relay) as client:
        # uvicorn trusts X-Forwarded-Proto from loopback, as from a TLS-terminating proxy.
        response = await client.post("/api/auth/guest", headers={"x-forwarded-proto": "https"})
        header = set_session_cookie(response)
        assert header is not None
        assert "Secure" in [part.strip() for part in header.split(";")]


# Accounts


async def test_register_turns_the_guest_into_the_account_in_place(
    relay_for: RelayFactory, database_url: str, tmp_path: Path
) -> None:
    async with relay_for(database_url=database_url, data_dir=tmp_path) as relay:
        async with browser(relay) as client:
            guest = await become_guest(client)
            guest_cookie = client.cookies[COOKIE_NAME]
            response = await client.post(
                "/api/auth/register", json={"username": "Alice", "password": PASSWORD}
            )
            assert response.status_code == 201, response.text
            assert response.json() == {
                "id": guest["id"],
                "username": "alice",
                "is_guest": False,
                "is_admin": False,
            }
            # A fresh session token on sign-up, sent as a 30-day cookie.
            header = set_session_cookie(response)
            assert header is not None
            assert cookie_value(header) != guest_cookie
            assert f"Max-Age={30 * 24 * 3600}" in header
            assert (await me(client))["username"] == "alice"

        # The guest's old cookie signs nobody in any more.
        async with browser(relay, cookies={COOKIE_NAME: guest_cookie}) as stale:
            assert (await me(stale))["id"] != guest["id"]

        async with db_of(relay).transaction() as session:
            user = await session.get(User, guest["id"])
        assert user is not None
        assert user.password_hash is not None
        assert user.password_hash.startswith("$argon2id$")
        assert PASSWORD not in user.password_hash


async def test_register_without_a_guest_creates_a_user(
    relay_for: RelayFactory, tmp_path: Path
) -> None:
    async with relay_for(data_dir=tmp_path) as relay, browser(relay) as client:
        account = await register(client, "bob")
        assert account["is_guest"] is False
        assert (await me(client))["id"] == account["id"]


async def test_register_refuses_taken_names_and_bad_input(
    relay_for: RelayFactory, database_url: str, tmp_path: Path
) -> None:
    async with relay_for(database_url=database_url, data_dir=tmp_path) as relay:
        async with browser(relay) as first:
            await register(first, "carol")
            again = await first.post(
                "/api/auth/register", json={"username": "other", "password": PASSWORD}
            )
            assert again.status_code == 409
            assert error_code(again) == "already_signed_in"
        async with browser(relay) as second:
            guest = await become_guest(second)
            for name in ("carol", "CAROL", "Carol"):
                taken = await second.post(
                    "/api/auth/register", json={"username": name, "password": PASSWORD}
                )
                assert taken.status_code == 409
                assert taken.json()["error"] == {
                    "message": "The username 'carol' is taken.",
                    "type": "invalid_request_error",
                    "code": "username_taken",
                    "param": "username",
                }
            # Still the same guest, unchanged.
            assert await me(second) == guest

            short = await second.post(
                "/api/auth/register", json={"username": "dave", "password": "1234567"}
            )
            assert short.status_code == 422
            assert error_code(short) == "password_too_short"
            for bad_name in ("ab", "x" * 33, "white space", "émile", "semi;colon"):
                bad = await second.post(
                    "/api/auth/register", json={"username": bad_name, "password": PASSWORD}
                )
                assert bad.status_code == 422, bad_name
                assert error_code(bad) == "invalid_username"
            missing = await second.post("/api/auth/register", json={"username": "dave"})
            assert missing.status_code == 422
            assert error_code(missing) == "invalid_field"
            assert (await me(second))["is_guest"] is True


async def test_login_with_right_and_wrong_passwords(
    relay_for: RelayFactory, database_url: str, tmp_path: Path
) -> None:
    async with relay_for(database_url=database_url, data_dir=tmp_path) as relay:
        async with browser(relay) as first:
            account = await register(first, "erin")
        async with browser(relay) as second:
            wrong = await login(second, "erin", "not the password")
            unknown = await login(second, "nobody", PASSWORD)
            for response in (wrong, unknown):
                assert response.status_code == 401
                assert response.json()["error"] == {
                    "message": "Wrong username or password.",
                    "type": "authentication_error",
                    "code": "invalid_credentials",
                }
            # Over-long input is refused before anything is hashed or looked up.
            for username, password in (("x" * 65, PASSWORD), ("erin", "p" * 1025)):
                too_long = await login(second, username, password)
                assert too_long.status_code == 422
                assert error_code(too_long) == "invalid_field"
            right = await login(second, "ERIN")
            assert right.status_code == 200, right.text
            assert right.json()["id"] == account["id"]
            header = set_session_cookie(right)
            assert header is not None
            assert "HttpOnly" in header
            assert (await me(second))["username"] == "erin"


async def test_the_sixth_failed_sign_in_is_throttled(
    relay_for: RelayFactory, tmp_path: Path
) -> None:
    async with relay_for(data_dir=tmp_path) as relay:
        async with browser(relay) as client:
            await register(client, "frank")
        async with browser(relay) as attacker:
            for _ in range(5):
                assert (await login(attacker, "frank", "guess guess")).status_code == 401
            throttled = await login(attacker, "frank", "guess guess")
            assert throttled.status_code == 429
            assert error_code(throttled) == "too_many_attempts"
            assert 0 < int(throttled.headers["retry-after"]) <= 900
            # Even the right password waits now: the answer must not tell guesses apart.
            assert (await login(attacker, "frank")).status_code == 429


async def test_failures_from_one_address_are_throttled_across_usernames(
    relay_for: RelayFactory, tmp_path: Path
) -> None:
    async with relay_for(data_dir=tmp_path, sign_in_max_failures=3) as relay:
        async with browser(relay) as client:
            for name in ("u1", "u2", "u3"):
                assert (await login(client, f"{name}-spray")).status_code == 401
            response = await login(client, "u4-spray")
            assert response.status_code == 429
            assert "retry-after" in response.headers


async def test_memory_throttle_window_slides() -> None:
    now = [1000.0]
    throttle = MemorySignInThrottle(max_failures=2, window=60, clock=lambda: now[0])
    keys = ["user:a", "ip:1"]
    assert await throttle.attempt(keys, attempt_id="1") is None
    now[0] += 10
    assert await throttle.attempt(keys, attempt_id="2") is None
    # Refused, and not counted: the wait is until the first failure leaves the window.
    assert await throttle.attempt(keys, attempt_id="3") == pytest.approx(50)
    assert await throttle.attempt(["ip:2"], attempt_id="4") is None
    now[0] += 50
    assert await throttle.attempt(keys, attempt_id="5") is None  # the first left the window
    await throttle.forgive("ip:1", attempt_id="5")  # it succeeded: ip:1 keeps attempt 2 only
    await throttle.reset("user:a")
    assert await throttle.attempt(["user:a"], attempt_id="6") is None
    assert await throttle.attempt(["ip:1"], attempt_id="7") is None  # attempts 2 and 7
    assert await throttle.attempt(["ip:1"], attempt_id="8") == pytest.approx(10)


async def _guest_with_a_conversation(relay: RunningRelay, guest_id: str) -> tuple[str, str]:
    async with db_of(relay).transaction() as session:
        conversation = Conversation(user_id=guest_id, title="guest chat")
        session.add(conversation)
        await session.flush()
        message = MessageRow(
            conversation_id=conversation.id, user_id=guest_id, seq=0, role="user", content="hi"
        )
        session.add(message)
        await session.flush()
        return conversation.id, message.id


async def test_login_moves_a_guests_conversations_to_the_account(
    relay_for: RelayFactory, database_url: str, tmp_path: Path
) -> None:
    async with relay_for(database_url=database_url, data_dir=tmp_path) as relay:
        async with browser(relay) as first:
            account = await register(first, "grace")
        async with browser(relay) as second:
            guest = await become_guest(second)
            conversation_id, message_id = await _guest_with_a_conversation(relay, guest["id"])
            response = await login(second, "grace")
            assert response.status_code == 200, response.text
            assert (await me(second))["id"] == account["id"]
        async with db_of(relay).transaction() as session:
            conversation = await session.get(Conversation, conversation_id)
            message = await session.get(MessageRow, message_id)
            assert conversation is not None and message is not None
            assert conversation.user_id == account["id"]
            assert message.user_id == account["id"]
            assert await session.get(User, guest["id"]) is None
            sessions = (
                await session.scalars(select(SessionRow).where(SessionRow.user_id == guest["id"]))
            ).all()
            assert sessions == []


async def test_login_from_an_empty_guest_moves_nothing(
    relay_for: RelayFactory, database_url: str, tmp_path: Path
) -> None:
    async with relay_for(database_url=database_url, data_dir=tmp_path) as relay:
        async with browser(relay) as first:
            account = await register(first, "heidi")
            await _guest_with_a_conversation(relay, account["id"])
        async with browser(relay) as second:
            guest = await become_guest(second)
            assert (await login(second, "heidi")).status_code == 200
        async with db_of(relay).transaction() as session:
            owners = (await session.scalars(select(Conversation.user_id))).all()
            assert owners == [account["id"]]
            assert await session.get(User, guest["id"]) is None


async def test_signing_in_again_replaces_the_session(
    relay_for: RelayFactory, tmp_path: Path
) -> None:
    async with relay_for(data_dir=tmp_path) as relay, browser(relay) as client:
        account = await register(client, "ivan")
        before = client.cookies[COOKIE_NAME]
        assert (await login(client, "ivan")).status_code == 200
        after = client.cookies[COOKIE_NAME]
        assert after != before
        async with browser(relay, cookies={COOKIE_NAME: before}) as stale:
            assert (await me(stale))["id"] != account["id"]
        # The account survives: signing in from a signed-in browser adopts nothing.
        assert (await me(client))["id"] == account["id"]


async def test_logout_deletes_the_session_and_clears_the_cookie(
    relay_for: RelayFactory, database_url: str, tmp_path: Path
) -> None:
    async with relay_for(database_url=database_url, data_dir=tmp_path) as relay:
        async with browser(relay) as client:
            account = await register(client, "judy")
            cookie = client.cookies[COOKIE_NAME]
            response = await client.post("/api/auth/logout")
            assert response.status_code == 204
            header = set_session_cookie(response)
            assert header is not None
            assert "Max-Age=0" in header
            assert COOKIE_NAME not in client.cookies
            after = await me(client)
            assert after["is_guest"] is True
            assert after["id"] != account["id"]
        async with db_of(relay).transaction() as session:
            assert await session.get(SessionRow, token_hash(cookie.rpartition(".")[0])) is None
        async with browser(relay, cookies={COOKIE_NAME: cookie}) as stale:
            assert (await me(stale))["id"] != account["id"]


async def test_require_account_refuses_guests(relay_for: RelayFactory, tmp_path: Path) -> None:
    async def account_only(user: Annotated[User, Depends(require_account)]) -> dict[str, Any]:
        return {"id": user.id}

    async with relay_for(data_dir=tmp_path) as relay:
        relay.app.add_api_route("/test/account-only", account_only)
        async with browser(relay) as client:
            refused = await client.get("/test/account-only")
            assert refused.status_code == 401
            assert error_code(refused) == "authentication_required"
            await become_guest(client)  # now a guest: still refused
            assert (await client.get("/test/account-only")).status_code == 401
            account = await register(client, "kate")
            allowed = await client.get("/test/account-only")
            assert allowed.json() == {"id": account["id"]}


# API keys


async def _key_for(relay: RunningRelay, user_id: str, name: str = "") -> tuple[str, str]:
    issued = issue_api_key()
    async with db_of(relay).transaction() as session:
        row = await users.create_api_key(
            session, user_id=user_id, name=name, key_hash=issued.key_hash, prefix=issued.prefix
        )
    return issued.key, row.id


async def test_api_keys_authenticate_and_revoked_or_garbage_keys_do_not(
    relay_for: RelayFactory, database_url: str, tmp_path: Path
) -> None:
    cache = {"auth_cache_seconds": 0.5}
    async with relay_for(database_url=database_url, data_dir=tmp_path, **cache) as relay:
        async with browser(relay) as client:
            account = await register(client, "leo")
        key, key_id = await _key_for(relay, account["id"], "laptop")
        assert key.startswith("cr_")
        assert len(key) == 3 + 43

        async with browser(relay) as api:
            bearer = {"authorization": f"Bearer {key}"}
            response = await api.get("/api/me", headers=bearer)
            assert response.status_code == 200
            assert response.json()["id"] == account["id"]
            assert set_session_cookie(response) is None  # a key needs no cookie
            async with db_of(relay).transaction() as session:
                row = await session.get(ApiKey, key_id)
            assert row is not None and row.last_used_at is not None
            first_use = row.last_used_at
            await api.get("/api/me", headers=bearer)
            async with db_of(relay).transaction() as session:
                row = await session.get(ApiKey, key_id)
            assert row is not None and row.last_used_at == first_use  # not written per request

            for garbage in ("Bearer nonsense", "bearer cr_" + "x" * 43, "Bearer"):
                response = await api.get("/api/me", headers={"authorization": garbage})
                assert response.status_code == 401, garbage
                assert response.json()["error"]["code"] == "invalid_api_key"
                assert response.json()["error"]["type"] == "authentication_error"

            async with db_of(relay).transaction() as session:
                assert await users.revoke_api_key(session, key_id=key_id) is not None
            # Revoked elsewhere (the CLI): refused once this process's memory of it is gone.
            await asyncio.sleep(0.6)
            revoked = await api.get("/api/me", headers=bearer)
            assert revoked.status_code == 401
            assert error_code(revoked) == "invalid_api_key"


async def test_only_hashes_of_keys_and_session_tokens_are_stored(
    relay_for: RelayFactory, database_url: str, tmp_path: Path
) -> None:
    async with relay_for(database_url=database_url, data_dir=tmp_path) as relay:
        async with browser(relay) as client:
            account = await register(client, "mallory")
            cookie = client.cookies[COOKIE_NAME]
        key, _ = await _key_for(relay, account["id"])
        session_token = cookie.rpartition(".")[0]
        async with db_of(relay).transaction() as session:
            rows = [
                *(await session.scalars(select(ApiKey))).all(),
                *(await session.scalars(select(SessionRow))).all(),
                *(await session.scalars(select(User))).all(),
            ]
        stored = [
            str(getattr(row, column.key))
            for row in rows
            for column in type(row).__table__.columns  # type: ignore[attr-defined]
        ]
        for secret in (key, key[10:], session_token, cookie, PASSWORD):
            assert not any(secret in value for value in stored), secret
        assert any(value == token_hash(session_token) for value in stored)


# CSRF


async def test_cookie_writes_from_another_origin_are_refused(
    relay_for: RelayFactory, tmp_path: Path
) -> None:
    async with relay_for(data_dir=tmp_path) as relay, browser(relay) as client:
        account = await register(client, "nina")
        foreign = await client.post("/api/auth/logout", headers={"origin": "https://evil.test"})
        assert foreign.status_code == 403
        assert foreign.json()["error"]["code"] == "csrf_rejected"
        assert (await me(client))["id"] == account["id"]  # still signed in
        for origin in ("null", f"{relay.url}.evil.test", relay.url.replace("http:", "https:")):
            refused = await client.post("/api/auth/logout", headers={"origin": origin})
            assert refused.status_code == 403, origin

        key, _ = await _key_for(relay, account["id"])
        with_key = await client.post(
            "/api/auth/login",
            json={"username": "nina", "password": "wrong password"},
            headers={"origin": "https://evil.test", "authorization": f"Bearer {key}"},
        )
        assert with_key.status_code == 401  # past the CSRF check, to the password check
        assert error_code(with_key) == "invalid_credentials"

        same = await client.post("/api/auth/logout", headers={"origin": relay.url})
        assert same.status_code == 204
        # Reads are never refused, whatever the origin.
        assert (await client.get("/api/me", headers={"origin": "https://evil.test"})).is_success


def test_secret_key_file_is_private_and_reused(tmp_path: Path) -> None:
    from chatrelay.auth.secret import load_secret_key
    from chatrelay.config import Settings

    settings = Settings(data_dir=tmp_path / "fresh")
    key = load_secret_key(settings)
    path = tmp_path / "fresh" / "secret_key"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_secret_key(settings) == key
    assert [p.name for p in path.parent.iterdir()] == ["secret_key"]  # no temporary left
