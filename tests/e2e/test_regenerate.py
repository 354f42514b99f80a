"""Regenerate the last answer, and edit the last question and resend (`action` of /api/chat)."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.fake_upstream import FakeUpstream, livepeer_events
from tests.sse_client import read_answer, user


async def ask(relay: Any, body: dict[str, Any]) -> tuple[str, str]:
    async with relay.client.stream("POST", "/api/chat", json=body) as response:
        assert response.status_code == 200, await response.aread()
        answer = await read_answer(response)
    return response.headers["x-conversation-id"], answer.text


async def stored(relay: Any, conversation_id: str) -> list[tuple[str, str, str]]:
    body = (await relay.client.get(f"/api/conversations/{conversation_id}")).json()
    return [(m["role"], m["content"], m["status"]) for m in body["messages"]]


async def test_regenerate_replaces_the_last_answer(
    fake: FakeUpstream, relay_for, database_url: str
) -> None:
    async with relay_for(database_url=database_url) as relay:
        fake.script = livepeer_events(["first", " answer"])
        conversation_id, _ = await ask(relay, user("hello"))
        fake.script = livepeer_events(["second", " answer"])
        await ask(relay, {"conversation_id": conversation_id, **user("more")})
        fake.script = livepeer_events(["another", " take"])
        _, text = await ask(relay, {"conversation_id": conversation_id, "action": "regenerate"})
        messages = await stored(relay, conversation_id)
    assert text == "another take"
    assert messages == [
        ("user", "hello", "complete"),
        ("assistant", "first answer", "complete"),
        ("user", "more", "complete"),
        ("assistant", "another take", "complete"),
    ]
    # The upstream saw the history up to the question, without the answer being replaced.
    assert fake.requests[-1].json["messages"] == [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "more"},
    ]


async def test_edit_replaces_the_last_question_and_answers_it(
    fake: FakeUpstream, relay_for, database_url: str
) -> None:
    async with relay_for(database_url=database_url) as relay:
        fake.script = livepeer_events(["a cat"])
        conversation_id, _ = await ask(relay, user("name an animal"))
        fake.script = livepeer_events(["a rose"])
        body = {"conversation_id": conversation_id, "action": "edit", **user("name a flower")}
        _, text = await ask(relay, body)
        messages = await stored(relay, conversation_id)
    assert text == "a rose"
    assert messages == [("user", "name a flower", "complete"), ("assistant", "a rose", "complete")]
    assert fake.requests[-1].json["messages"] == [{"role": "user", "content": "name a flower"}]


async def test_regenerate_while_the_answer_streams_is_refused(
    fake: FakeUpstream, relay_for
) -> None:
    never = asyncio.Event()
    fake.script = [*livepeer_events(["slow"])[:1], never]
    async with relay_for() as relay:
        async with relay.client.stream("POST", "/api/chat", json=user("x")) as response:
            conversation_id = response.headers["x-conversation-id"]
            body = {"conversation_id": conversation_id, "action": "regenerate"}
            refused = await relay.client.post("/api/chat", json=body)
            await relay.client.post(f"/api/messages/{response.headers['x-message-id']}/stop")
    assert refused.status_code == 409
    error = refused.json()["error"]
    assert error["code"] == "answer_in_progress" and "stop it" in error["message"]


async def test_bad_actions_are_explained(fake: FakeUpstream, relay_for) -> None:
    async with relay_for() as relay:
        no_conversation = await relay.client.post("/api/chat", json={"action": "regenerate"})
        edit_without_text = await relay.client.post(
            "/api/chat", json={"action": "edit", "conversation_id": "conv_x", "messages": []}
        )
        nothing = await relay.client.post("/api/chat", json={"messages": []})
        unknown = await relay.client.post(
            "/api/chat", json={"action": "regenerate", "conversation_id": "conv_nope"}
        )
    assert no_conversation.status_code == 422
    assert "needs the conversation_id" in no_conversation.text
    assert edit_without_text.status_code == 422
    assert "exactly one user message" in edit_without_text.text
    assert nothing.status_code == 422 and "at least one message" in nothing.text
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "conversation_not_found"
