"""A guest signing in while its answers finish: every answer keeps its ending (issue 21, 1).

Signing in gives the guest's rows to the account in one transaction. An answer that ended
meanwhile wrote its final state filtered on the guest, matched no row once the transaction
had moved it, and took that for a success: its row stayed ``streaming`` with the text last
flushed, and a re-attach to it never ended.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from chatrelay.store import users as user_store
from chatrelay.store.models import MessageRow
from tests.e2e.test_resume import read_rest
from tests.fake_upstream import FakeUpstream, livepeer_chunk, livepeer_events
from tests.polling import wait_until
from tests.sse_client import DONE, read_answer, user

ANSWERS = 24
PASSWORD = "a long enough password"
SECRET = "one-secret-for-every-instance"


async def register(url: str, username: str) -> None:
    async with httpx.AsyncClient(base_url=url) as other:
        created = await other.post(
            "/api/auth/register", json={"username": username, "password": PASSWORD}
        )
        assert created.status_code == 201, created.text


async def start_answers(client: httpx.AsyncClient, count: int) -> list[httpx.Response]:
    """``count`` answers of one guest, streaming at once (each held by the upstream)."""

    def ask(n: int) -> httpx.Request:
        return client.build_request("POST", "/api/chat", json=user(f"q{n}"))

    # The first one makes the guest (its cookie): the others are its answers too.
    first = await client.send(ask(0), stream=True)
    rest = await asyncio.gather(*(client.send(ask(n), stream=True) for n in range(1, count)))
    responses = [first, *rest]
    assert [r.status_code for r in responses] == [200] * count
    return responses


async def stored_answers(client: httpx.AsyncClient, responses: list[httpx.Response]) -> list[Any]:
    """The stored answers, as the account that signed in reads them."""
    answers = []
    for response in responses:
        conversation = response.headers["x-conversation-id"]
        found = await client.get(f"/api/conversations/{conversation}")
        assert found.status_code == 200, found.text
        answers.append(found.json()["messages"][-1])
    return answers


async def test_answers_ending_while_the_guest_signs_in_keep_their_ending(
    fake: FakeUpstream, relay_for, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every answer ends inside the sign-in's transaction: the race, made certain."""
    gate = asyncio.Event()
    fake.script = [livepeer_chunk("Hi"), gate, *livepeer_events([" there"])]
    inside, go_on = asyncio.Event(), asyncio.Event()
    adopt = user_store.adopt_guest

    async def adopt_and_hold(session: Any, **names: str) -> int:
        # The real adoption, its transaction then held open (as a busy database would) until
        # every answer has ended and is storing its end.
        moved = await adopt(session, **names)
        inside.set()
        await go_on.wait()
        return moved

    monkeypatch.setattr(user_store, "adopt_guest", adopt_and_hold)
    async with relay_for(database_url=database_url) as relay:
        await register(relay.url, "ann")
        responses = await start_answers(relay.client, ANSWERS)
        login = asyncio.create_task(
            relay.client.post("/api/auth/login", json={"username": "ann", "password": PASSWORD})
        )
        await asyncio.wait_for(inside.wait(), 10)
        gate.set()
        await wait_until(lambda: not relay.service.answer_store.active)
        go_on.set()
        signed_in = await login
        assert signed_in.status_code == 200, signed_in.text
        streamed = [await read_answer(r) for r in responses]
        await wait_until(lambda: not relay.service.answers)
        stored = await stored_answers(relay.client, responses)
        assert all(a.text == "Hi there" and a.events[-1] == DONE for a in streamed)
        assert [(a["status"], a["content"]) for a in stored] == [("complete", "Hi there")] * ANSWERS
        # A re-attach to one of them ends, with its ending.
        url = f"/api/messages/{responses[0].headers['x-message-id']}/stream"
        async with relay.client.stream("GET", url) as resumed:
            text, events, _ = await read_rest(resumed)
    assert text == "Hi there" and events[-1] == DONE


async def test_answers_on_another_instance_keep_their_ending(
    fake: FakeUpstream, relay_for, database_url: str, redis_limits: dict[str, str]
) -> None:
    """The guest's answers run on instance A; it signs in through instance B. A never hears
    of the adoption: its answers' writes must find their rows all the same."""
    gate = asyncio.Event()
    fake.script = [livepeer_chunk("Hi"), gate, *livepeer_events([" there"])]
    shared = {"database_url": database_url, "secret_key": SECRET, **redis_limits}
    async with relay_for(**shared) as a, relay_for(**shared) as b:
        await register(a.url, "bob")
        responses = await start_answers(a.client, ANSWERS)
        b.client.cookies.update(a.client.cookies)
        signed_in = await b.client.post(
            "/api/auth/login", json={"username": "bob", "password": PASSWORD}
        )
        assert signed_in.status_code == 200, signed_in.text
        gate.set()
        streamed = [await read_answer(r) for r in responses]
        await wait_until(lambda: not a.service.answers)
        stored = await stored_answers(b.client, responses)
        assert all(s.text == "Hi there" and s.events[-1] == DONE for s in streamed)
        assert [(a["status"], a["content"]) for a in stored] == [("complete", "Hi there")] * ANSWERS
        # The account follows one of them through either instance: it ends.
        a.client.cookies.clear()
        a.client.cookies.update(b.client.cookies)
        url = f"/api/messages/{responses[-1].headers['x-message-id']}/stream"
        for instance in (a, b):
            async with instance.client.stream("GET", url) as resumed:
                assert resumed.status_code == 200
                _, events, _ = await read_rest(resumed)
            assert events[-1] == DONE
            assert events[-2]["choices"][0]["finish_reason"] == "stop"


async def test_a_reattach_to_an_answer_its_live_instance_lost_ends(
    fake: FakeUpstream, relay_for, database_url: str
) -> None:
    """An answer stored ``streaming`` by an instance that is alive but runs no such answer
    (its final write was lost) is settled by that instance, and a client following it gets
    its ending instead of waiting for ever."""
    fake.script = livepeer_events(["kept", " text"])
    async with relay_for(database_url=database_url, instance_heartbeat=0.2) as relay:
        async with relay.client.stream("POST", "/api/chat", json=user("x")) as response:
            message_id = response.headers["x-message-id"]
            await read_rest(response)
        await wait_until(lambda: not relay.service.answers)
        # Its end lost, as a sign-in used to make it: streaming, claimed by this instance.
        async with relay.context.db.transaction() as session:
            row = await session.get(MessageRow, message_id)
            assert row is not None and row.instance_id == relay.service.instance_id
            row.status = "streaming"
        # Bounded only so that a stream that never ends fails the test instead of hanging it.
        async with asyncio.timeout(60):
            url = f"/api/messages/{message_id}/stream"
            async with relay.client.stream("GET", url) as resumed:
                text, events, _ = await read_rest(resumed)
    assert text == "kept text"
    assert events[-1] == DONE and events[-2]["x_chatrelay"] == {"status": "interrupted"}
