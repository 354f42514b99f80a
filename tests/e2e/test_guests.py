"""Guests are created only when a request needs one and is admitted, at most so many per
address, share their address's budget when asked to, and are pruned when abandoned
(issue 21 item 2). Real server, real sockets, real databases; rows counted in the database."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import func, select, update

from chatrelay.auth.sessions import COOKIE_NAME
from chatrelay.store import users
from chatrelay.store.database import Database
from chatrelay.store.models import Conversation, MessageRow, User, utcnow
from chatrelay.store.models import Session as SessionRow
from tests.fake_upstream import FakeUpstream, livepeer_chunk, livepeer_events
from tests.limits_helpers import ask, limits_backend, needed
from tests.polling import wait_until
from tests.sse_client import read_answer

__all__ = ["limits_backend"]  # a fixture, imported to be used here

QUESTION = "Who pays for this?"


def db_of(relay: Any) -> Database:
    database: Database = relay.context.db
    return database


async def rows(db: Database) -> tuple[int, int]:
    """(users, sessions) stored."""
    async with db.read() as session:
        n_users = await session.scalar(select(func.count()).select_from(User))
        n_sessions = await session.scalar(select(func.count()).select_from(SessionRow))
    return int(n_users or 0), int(n_sessions or 0)


async def _without_cookie(request: httpx.Request) -> None:
    request.headers.pop("cookie", None)


def stranger(relay: Any) -> httpx.AsyncClient:
    """A client that drops its cookie: every request of it comes without one."""
    return httpx.AsyncClient(
        base_url=relay.url, timeout=10, event_hooks={"request": [_without_cookie]}
    )


async def cookieless(relay: Any, method: str, path: str, **options: Any) -> httpx.Response:
    async with stranger(relay) as client:
        return await client.request(method, path, **options)


async def test_cookieless_requests_create_nobody_until_a_chat_is_admitted(
    relay_for, fake: FakeUpstream, database_url: str
) -> None:
    fake.script = livepeer_events(["hello"])
    settings = {"database_url": database_url, "rate_limit": "5/minute"}
    async with relay_for(**settings) as relay:
        db = db_of(relay)
        # 300 visits and identity checks without a cookie made 300 guests and 300 sessions.
        answers: list[httpx.Response] = []
        async with stranger(relay) as client:
            for _ in range(10):
                answers += await asyncio.gather(
                    *(client.get("/api/me") for _ in range(15)),
                    *(client.get("/") for _ in range(15)),
                )
        assert {a.status_code for a in answers} == {200}
        assert answers[0].json() == {
            "id": None,
            "username": None,
            "is_guest": True,
            "is_admin": False,
        }
        assert all("set-cookie" not in a.headers for a in answers)
        assert (await cookieless(relay, "GET", "/api/usage")).status_code == 200
        assert await rows(db) == (0, 0)

        # Refused for its body, its model, its max_tokens or its conversation: nothing written
        # (the last three were counted by the rate limit, which comes first).
        refused = [
            await cookieless(relay, "POST", "/api/chat", json={"messages": []}),
            await cookieless(relay, "POST", "/api/chat", json={**ask("x", 5), "model": "nope"}),
            await cookieless(relay, "POST", "/api/chat", json=ask("x", 10**6)),
            await cookieless(
                relay, "POST", "/api/chat", json={**ask("x", 5), "conversation_id": "conv_x"}
            ),
        ]
        assert [r.status_code for r in refused] == [422, 404, 400, 404]
        assert all("set-cookie" not in r.headers for r in refused)
        assert await rows(db) == (0, 0)

        # Admitted: a guest, its session and its cookie, with the answer.
        admitted = await cookieless(relay, "POST", "/api/chat", json=ask(QUESTION, 16))
        assert admitted.status_code == 200 and "hello" in admitted.text
        assert COOKIE_NAME in admitted.cookies
        assert await rows(db) == (1, 1)
        again = await cookieless(relay, "POST", "/api/chat", json=ask(QUESTION, 16))
        assert again.status_code == 200
        assert await rows(db) == (2, 2)
        # Over the rate limit (5 a minute): refused, and nothing new.
        limited = await cookieless(relay, "POST", "/api/chat", json=ask(QUESTION, 16))
        assert limited.status_code == 429 and limited.json()["error"]["code"] == "rate_limited"
        assert "set-cookie" not in limited.headers
        assert await rows(db) == (2, 2)


async def test_new_guests_per_address_are_capped(
    relay_for, fake: FakeUpstream, limits_backend: dict[str, Any]
) -> None:
    fake.script = livepeer_events(["hi"])
    async with relay_for(guest_create_limit="3/hour", **limits_backend) as relay:
        kept = httpx.AsyncClient(base_url=relay.url, timeout=10)  # a browser: keeps its cookie
        async with kept:
            assert (await kept.post("/api/chat", json=ask(QUESTION, 8))).status_code == 200
            answers = [
                await cookieless(relay, "POST", "/api/chat", json=ask(QUESTION, 8))
                for _ in range(4)
            ]
            assert [a.status_code for a in answers] == [200, 200, 429, 429]
            error = answers[-1].json()["error"]
            assert error["code"] == "too_many_guests"
            assert "CHATRELAY_GUEST_CREATE_LIMIT" in error["message"]
            assert 0 < int(answers[-1].headers["retry-after"]) <= 3600
            explicit = await cookieless(relay, "POST", "/api/auth/guest")
            assert explicit.status_code == 429
            assert len(fake.requests) == 3  # the refused ones never reached the upstream
            assert await rows(db_of(relay)) == (3, 3)
            # The guests that exist go on: the cap is on making new ones.
            assert (await kept.post("/api/chat", json=ask(QUESTION, 8))).status_code == 200


async def test_dropping_the_cookie_buys_no_budget(
    relay_for, fake: FakeUpstream, limits_backend: dict[str, Any]
) -> None:
    """The review's run: 60 cookieless requests of max_tokens=4000 against a 5,000-token guest
    budget were all admitted, each a fresh guest with a fresh budget."""
    gate = asyncio.Event()
    fake.script = [livepeer_chunk("Hi"), gate, *livepeer_events([" there"])]
    settings = {
        "guest_token_budget": 5000,
        "guest_address_token_budget": 5000,
        "guest_create_limit": "1000/hour",  # the budget alone, here
        **limits_backend,
    }
    async with relay_for(**settings) as relay:
        async with stranger(relay) as client:
            streams = [
                client.stream("POST", "/api/chat", json=ask(QUESTION, 4000)) for _ in range(60)
            ]
            responses = await asyncio.gather(*(s.__aenter__() for s in streams))
            admitted = [r for r in responses if r.status_code == 200]
            refused = [r for r in responses if r.status_code != 200]
            assert len(admitted) == 1
            for response in refused:
                await response.aread()
                assert response.status_code == 429
                error = response.json()["error"]
                assert error["code"] == "budget_exceeded"
                assert "CHATRELAY_GUEST_ADDRESS_TOKEN_BUDGET" in error["message"]
                assert error["limit"] == 5000 and error["needed"] == needed(QUESTION, 4000)
            assert await rows(db_of(relay)) == (1, 1)  # only the admitted one is a guest
            gate.set()
            assert (await read_answer(admitted[0])).text == "Hi there"
            for stream in streams:
                await stream.__aexit__(None, None, None)
        await wait_until(lambda: not relay.service.answers)
        # Settled (43 tokens): the address's guests have the rest, whoever asks.
        again = await cookieless(relay, "POST", "/api/chat", json=ask(QUESTION, 4000))
        assert again.status_code == 200


async def test_expired_sessions_and_abandoned_guests_are_pruned(
    relay_for, database_url: str
) -> None:
    async with relay_for(database_url=database_url, prune_interval=0.1) as relay:
        db = db_of(relay)
        now = utcnow()
        old = now - timedelta(hours=2)
        future, past = now + timedelta(days=30), now - timedelta(seconds=1)
        async with db.transaction() as session:
            account = await users.create_user(session, username="kept", password_hash="x")
            await users.create_session(
                session, user_id=account.id, token_hash="a1", expires_at=past
            )
            await users.create_session(
                session, user_id=account.id, token_hash="a2", expires_at=future
            )
            empty = await users.create_guest(session)  # no conversation: pruned
            await users.create_session(session, user_id=empty.id, token_hash="e", expires_at=future)
            chatted = await users.create_guest(session)  # a conversation and a session: kept
            await users.create_session(
                session, user_id=chatted.id, token_hash="c", expires_at=future
            )
            gone = await users.create_guest(session)  # its only session expired: pruned, all
            await users.create_session(session, user_id=gone.id, token_hash="g", expires_at=past)
            for guest in (chatted, gone):
                conversation = Conversation(user_id=guest.id, title="t")
                session.add(conversation)
                await session.flush()
                session.add(
                    MessageRow(
                        conversation_id=conversation.id,
                        user_id=guest.id,
                        seq=0,
                        role="user",
                        content="hi",
                    )
                )
            await session.execute(
                update(User)
                .where(User.id.in_([empty.id, chatted.id, gone.id]))
                .values(created_at=old)
            )
            young = await users.create_guest(session)  # an hour's grace: kept
            await users.create_session(session, user_id=young.id, token_hash="y", expires_at=future)

        async def remaining() -> tuple[set[str], set[str], set[str]]:
            async with db.read() as session:
                return (
                    set(await session.scalars(select(User.id))),
                    set(await session.scalars(select(SessionRow.token_hash))),
                    set(await session.scalars(select(Conversation.user_id))),
                )

        expected = (
            {account.id, chatted.id, young.id},
            {"a2", "c", "y"},
            {chatted.id},
        )
        for _ in range(200):  # rounds come every 0.1 s: at most 10 s
            if await remaining() == expected:
                break
            await asyncio.sleep(0.05)
        assert await remaining() == expected
