"""The sign-in and registration throttle (issue 21 item 3), on a real server, in process and
in Redis: a success clears only its own username's failures, registration is limited per
address and refuses a taken name before any hashing, and a parallel burst gets no more tries
than allowed."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from chatrelay.http.routes import auth as auth_routes
from chatrelay.store.models import User
from tests.limits_helpers import limits_backend

__all__ = ["limits_backend"]  # a fixture, imported to be used here

PASSWORD = "correct horse battery"


def browser(relay: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=relay.url, timeout=30)


async def login(client: httpx.AsyncClient, username: str, password: str) -> int:
    response = await client.post(
        "/api/auth/login", json={"username": username, "password": password}
    )
    return response.status_code


async def register(client: httpx.AsyncClient, username: str) -> httpx.Response:
    return await client.post(
        "/api/auth/register", json={"username": username, "password": PASSWORD}
    )


async def test_signing_in_to_ones_own_account_clears_no_address_failures(
    relay_for, limits_backend: dict[str, Any]
) -> None:
    """The review's spray: an attacker with an account signed in to it between guesses at
    other usernames, from one address, and never met a 429."""
    async with relay_for(sign_in_max_failures=3, **limits_backend) as relay:
        async with browser(relay) as own:
            assert (await register(own, "mallory")).status_code == 201
        async with browser(relay) as attacker:
            answers = []
            for victim in ("alice", "bob", "carol", "dave", "erin"):
                answers.append(await login(attacker, victim, "guess"))
                answers.append(await login(attacker, "mallory", PASSWORD))
            # Three failures from the address, whatever succeeded in between: then 429s.
            assert answers == [401, 200, 401, 200, 401] + [429] * 5


async def test_a_success_clears_its_own_usernames_failures(
    relay_for, limits_backend: dict[str, Any]
) -> None:
    async with relay_for(sign_in_max_failures=3, **limits_backend) as relay:
        async with browser(relay) as client:
            assert (await register(client, "frank")).status_code == 201
        async with browser(relay) as client:
            assert (await register(client, "grace")).status_code == 201

        async def from_address(address: str, password: str, username: str = "frank") -> int:
            # Loopback is a trusted proxy by default: X-Forwarded-For names the client.
            async with browser(relay) as client:
                client.headers["x-forwarded-for"] = address
                return await login(client, username, password)

        assert [await from_address("203.0.113.1", "typo") for _ in range(2)] == [401, 401]
        assert await from_address("203.0.113.2", PASSWORD) == 200
        # The username starts afresh: three more failures (from yet another address) before
        # its 429.
        assert [await from_address("203.0.113.3", "typo") for _ in range(3)] == [401] * 3
        assert await from_address("203.0.113.5", "typo") == 429
        # Successful sign-ins are not failures: any number of them from one address is fine.
        signed_in = {await from_address("203.0.113.4", PASSWORD, "grace") for _ in range(6)}
        assert signed_in == {200}


async def test_a_parallel_burst_gets_only_the_allowed_tries(
    relay_for, limits_backend: dict[str, Any]
) -> None:
    """With Redis, the check and the count were two round trips: a burst passed the check
    together before any of it was counted."""
    async with relay_for(sign_in_max_failures=5, **limits_backend) as relay:
        async with browser(relay) as client:
            answers = await asyncio.gather(*(login(client, "target", "guess") for _ in range(40)))
    assert sorted(answers) == [401] * 5 + [429] * 35


async def test_registration_is_throttled_per_address(
    relay_for, limits_backend: dict[str, Any]
) -> None:
    async with relay_for(register_limit="3/hour", **limits_backend) as relay:
        statuses = []
        for name in ("ann", "ben", "cat", "dan"):
            async with browser(relay) as client:
                statuses.append(await register(client, name))
        assert [r.status_code for r in statuses] == [201, 201, 201, 429]
        error = statuses[-1].json()["error"]
        assert error["code"] == "too_many_attempts"
        assert "CHATRELAY_REGISTER_LIMIT" in error["message"]
        assert 0 < int(statuses[-1].headers["retry-after"]) <= 3600
        async with relay.context.db.read() as session:
            assert await session.scalar(select(func.count()).select_from(User)) == 3


async def test_a_taken_name_is_refused_before_any_password_hashing(
    relay_for, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each registration hashed its password with argon2 (deliberately slow) before finding
    out whether the name was taken: cheap CPU for anyone probing names."""
    hashed: list[str] = []
    real_hash = auth_routes.hash_password

    async def counting_hash(password: str) -> str:
        hashed.append(password)
        return await real_hash(password)

    monkeypatch.setattr(auth_routes, "hash_password", counting_hash)
    async with relay_for(register_limit="") as relay:
        async with browser(relay) as client:
            assert (await register(client, "taken")).status_code == 201
        assert len(hashed) == 1
        for name in ("taken", "TAKEN", "Taken"):
            async with browser(relay) as client:
                refused = await register(client, name)
            assert refused.status_code == 409
            assert refused.json()["error"]["code"] == "username_taken"
        assert len(hashed) == 1  # no argon2 work for a name that is taken
