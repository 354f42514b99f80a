"""Conversations are stored, continued from storage, listed, renamed, deleted, exported and
never shown to anyone else: on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
from functools import partial
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from tests.fake_upstream import FakeUpstream, livepeer_chunk, livepeer_events, paced
from tests.polling import wait_until
from tests.sse_client import events_of, read_answer, user


async def chat(client: httpx.AsyncClient, body: dict[str, Any]) -> tuple[str, str, str]:
    """Send one message and read the whole answer: (conversation id, message id, text)."""
    async with client.stream("POST", "/api/chat", json=body) as response:
        assert response.status_code == 200, await response.aread()
        answer = await read_answer(response)
        return (
            response.headers["x-conversation-id"],
            response.headers["x-message-id"],
            answer.text,
        )


async def test_a_chat_is_stored_with_everything(relay_for, fake, database_url) -> None:
    fake.script = livepeer_events(["Hello", " there"])
    async with relay_for(database_url=database_url) as relay:
        conversation_id, message_id, text = await chat(
            relay.client, user("Please greet me warmly today, my dear assistant friend")
        )
        stored = (await relay.client.get(f"/api/conversations/{conversation_id}")).json()

    assert text == "Hello there"
    assert stored["title"] == "Please greet me warmly today, my dear assistant…"
    question, answer = stored["messages"]
    assert question["role"] == "user" and question["status"] == "complete"
    assert question["content"] == "Please greet me warmly today, my dear assistant friend"
    assert answer["id"] == message_id
    assert answer["role"] == "assistant"
    assert answer["content"] == "Hello there"
    assert answer["status"] == "complete"
    assert answer["finish_reason"] == "stop"
    assert answer["model"] == "meta-llama/Meta-Llama-3.1-8B-Instruct"
    assert answer["upstream"] == "livepeer"
    assert (answer["prompt_tokens"], answer["completion_tokens"]) == (42, 2)
    assert answer["created_at"].endswith("Z") and question["created_at"] <= answer["created_at"]


async def test_continuing_sends_the_stored_history(relay_for, fake, database_url) -> None:
    fake.script = livepeer_events(["First answer"])
    async with relay_for(database_url=database_url, system_prompt="Be brief.") as relay:
        conversation_id, _, _ = await chat(relay.client, user("first question"))
        fake.script = livepeer_events(["Second answer"])
        body = {**user("second question"), "conversation_id": conversation_id}
        again_id, _, text = await chat(relay.client, body)
        stored = (await relay.client.get(f"/api/conversations/{conversation_id}")).json()

    assert again_id == conversation_id and text == "Second answer"
    assert fake.requests[-1].json["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "First answer"},
        {"role": "user", "content": "second question"},
    ]
    assert [m["content"] for m in stored["messages"]] == [
        "first question", "First answer", "second question", "Second answer",
    ]  # fmt: skip


async def test_list_rename_search_delete_export(relay_for, fake, database_url) -> None:
    fake.script = livepeer_events(["ok"])
    async with relay_for(database_url=database_url) as relay:
        ids = [(await chat(relay.client, user(f"topic number {i}")))[0] for i in range(3)]
        page = (await relay.client.get("/api/conversations", params={"limit": 2})).json()
        assert [c["id"] for c in page["data"]] == [ids[2], ids[1]]  # newest first
        assert page["has_more"] is True
        rest = (await relay.client.get("/api/conversations?limit=2&offset=2")).json()
        assert [c["id"] for c in rest["data"]] == [ids[0]] and rest["has_more"] is False

        renamed = await relay.client.patch(f"/api/conversations/{ids[0]}", json={"title": "Zebras"})
        assert renamed.status_code == 200 and renamed.json()["title"] == "Zebras"
        found = (await relay.client.get("/api/conversations", params={"q": "zebra"})).json()
        assert [c["id"] for c in found["data"]] == [ids[0]]
        found = (await relay.client.get("/api/conversations", params={"q": "NUMBER 1"})).json()
        assert [c["id"] for c in found["data"]] == [ids[1]]  # message text is searched too
        bad = await relay.client.patch(f"/api/conversations/{ids[0]}", json={"title": ""})
        assert bad.status_code == 422

        exported = await relay.client.get(f"/api/conversations/{ids[0]}/export?format=json")
        assert exported.headers["content-disposition"].endswith('.json"')
        assert [m["content"] for m in exported.json()["messages"]] == ["topic number 0", "ok"]
        markdown = await relay.client.get(f"/api/conversations/{ids[0]}/export?format=markdown")
        assert markdown.headers["content-type"].startswith("text/markdown")
        assert markdown.text.startswith("# Zebras\n")
        assert "## You\n\ntopic number 0\n" in markdown.text
        assert "## Assistant (meta-llama/Meta-Llama-3.1-8B-Instruct)\n\nok\n" in markdown.text

        assert (await relay.client.delete(f"/api/conversations/{ids[0]}")).status_code == 204
        gone = await relay.client.get(f"/api/conversations/{ids[0]}")
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "conversation_not_found"
        listing = (await relay.client.get("/api/conversations")).json()
        assert [c["id"] for c in listing["data"]] == [ids[2], ids[1]]


async def test_nobody_reaches_another_persons_conversation(relay_for, fake, database_url) -> None:
    gate = asyncio.Event()
    fake.script = [livepeer_chunk("secret"), gate, *livepeer_events([" stuff"])]
    async with relay_for(database_url=database_url, finished_job_ttl=30) as relay:
        async with relay.client.stream("POST", "/api/chat", json=user("mine")) as response:
            conversation_id = response.headers["x-conversation-id"]
            message_id = response.headers["x-message-id"]
            events = events_of(response)
            async for event in events:
                if event["choices"][0]["delta"].get("content"):
                    break
            async with httpx.AsyncClient(base_url=relay.url) as other:
                await other.post("/api/auth/guest")  # the other browser has an identity of its own
                absent = "conv_doesnotexist00"
                for method, path, body in [
                    ("GET", "/api/conversations/{}", None),
                    ("PATCH", "/api/conversations/{}", {"title": "hacked"}),
                    ("DELETE", "/api/conversations/{}", None),
                    ("GET", "/api/conversations/{}/export", None),
                ]:
                    theirs = await other.request(method, path.format(conversation_id), json=body)
                    nothing = await other.request(method, path.format(absent), json=body)
                    assert theirs.status_code == nothing.status_code == 404
                    assert theirs.json()["error"]["code"] == nothing.json()["error"]["code"]
                stop = await other.post(f"/api/messages/{message_id}/stop")
                assert stop.status_code == 404
                hijack = await other.post(
                    "/api/chat", json={**user("continue it"), "conversation_id": conversation_id}
                )
                assert hijack.status_code == 404
                assert hijack.json()["error"]["code"] == "conversation_not_found"
                assert (await other.get("/api/conversations")).json()["data"] == []
            gate.set()
            rest = [event async for event in events]
            assert rest[-1] == "[DONE]"
        mine = (await relay.client.get(f"/api/conversations/{conversation_id}")).json()
    assert mine["title"] == "mine"
    assert [m["content"] for m in mine["messages"]] == ["mine", "secret stuff"]
    assert len(fake.requests) == 1  # the hijack never reached the upstream


async def test_everything_survives_a_restart(relay_for, fake, database_url) -> None:
    fake.script = livepeer_events(["kept"])
    async with relay_for(database_url=database_url) as relay:
        conversation_id, _, _ = await chat(relay.client, user("remember me"))
        cookies = dict(relay.client.cookies)
    async with relay_for(database_url=database_url) as relay:
        relay.client.cookies.update(cookies)
        listing = (await relay.client.get("/api/conversations")).json()
        stored = (await relay.client.get(f"/api/conversations/{conversation_id}")).json()
    assert [c["id"] for c in listing["data"]] == [conversation_id]
    assert [m["content"] for m in stored["messages"]] == ["remember me", "kept"]


async def test_a_disconnected_answer_is_stored_whole(relay_for, fake, database_url) -> None:
    tokens = [f" t{i}" for i in range(20)]
    fake.script = paced(livepeer_events(tokens), 0.02)
    async with relay_for(database_url=database_url, flush_interval=0.05) as relay:
        async with relay.client.stream("POST", "/api/chat", json=user("x")) as response:
            conversation_id = response.headers["x-conversation-id"]
            async for event in events_of(response):
                if event["choices"][0]["delta"].get("content"):
                    break  # the reader leaves after the first token
        path = f"/api/conversations/{conversation_id}"

        async def answer() -> dict[str, Any]:
            return (await relay.client.get(path)).json()["messages"][-1]

        first = await answer()
        assert first["status"] == "streaming"
        for _ in range(300):
            stored = await answer()
            if stored["status"] != "streaming":
                break
            await asyncio.sleep(0.02)
    assert stored["status"] == "complete"
    assert stored["content"] == "".join(tokens)


async def test_stop_and_refusal_are_stored(relay_for, fake, database_url) -> None:
    fake.script = paced(livepeer_events([f" w{i}" for i in range(500)]), 0.02)
    async with relay_for(database_url=database_url) as relay:
        async with relay.client.stream("POST", "/api/chat", json=user("long")) as response:
            conversation_id = response.headers["x-conversation-id"]
            message_id = response.headers["x-message-id"]
            events = events_of(response)
            async for event in events:
                if " w2" in (event["choices"][0]["delta"].get("content") or ""):
                    break
            await relay.client.post(f"/api/messages/{message_id}/stop")
            rest = [event async for event in events]
            assert rest[-1] == "[DONE]"
        stopped = (await relay.client.get(f"/api/conversations/{conversation_id}")).json()

        fake.fail(503, {"error": {"message": "Service Unavailable Error"}})
        refused = await relay.client.post("/api/chat", json=user("are you there?"))
        assert refused.status_code == 502
        listing = (await relay.client.get("/api/conversations")).json()["data"]
        failed = (await relay.client.get(f"/api/conversations/{listing[0]['id']}")).json()

    answer = stopped["messages"][-1]
    assert answer["status"] == "stopped" and answer["content"].startswith(" w0 w1 w2")
    question, refusal = failed["messages"]
    assert question["content"] == "are you there?"  # accepted, so stored
    assert refusal["status"] == "error" and "Service Unavailable Error" in refusal["error"]


async def test_answers_are_flushed_on_a_timer_not_per_token(relay_for, fake: FakeUpstream) -> None:
    fake.script = paced(livepeer_events([f" w{i}" for i in range(100)]), 0.01)  # ~1 s
    async with relay_for(finished_job_ttl=30, flush_interval=0.25) as relay:
        async with relay.client.stream("POST", "/api/chat", json=user("x")) as response:
            answer = relay.service.answers[response.headers["x-message-id"]]
            recorder = answer.recorder  # a finished answer lets go of it
            await response.aread()
        await wait_until(lambda: answer.finished)
    assert recorder is not None and answer.recorder is None
    assert 1 <= recorder.writes <= 8  # a few flushes plus the final write, not 100


@pytest.mark.parametrize("concurrency", [50])
async def test_many_chats_at_once_lose_nothing(
    relay_for, fake, database_url, concurrency: int
) -> None:
    fake.script = paced(livepeer_events(["a", "b", "c"]), 0.01)
    async with relay_for(database_url=database_url) as relay:
        await relay.client.post("/api/auth/guest")  # one guest for all
        results = await asyncio.gather(
            *(chat(relay.client, user(f"question {i}")) for i in range(concurrency))
        )
        listing = (await relay.client.get("/api/conversations", params={"limit": 100})).json()
        ids = {conversation_id for conversation_id, _, _ in results}
        stored = [
            (await relay.client.get(f"/api/conversations/{cid}")).json()["messages"] for cid in ids
        ]
    assert all(text == "abc" for _, _, text in results)
    assert len(ids) == concurrency
    assert {c["id"] for c in listing["data"]} == ids
    assert all([m["status"] for m in messages] == ["complete", "complete"] for messages in stored)
    assert sorted(m[0]["content"] for m in stored) == sorted(
        f"question {i}" for i in range(concurrency)
    )


async def test_reads_do_not_wait_for_a_writer(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """On SQLite a read-only transaction runs while another transaction holds the write lock."""
    from sqlalchemy import text

    from chatrelay.store.database import Database

    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'locks.db'}")
    await db.upgrade()
    try:
        async with db.transaction() as writer:
            await writer.execute(text("UPDATE users SET is_admin = is_admin"))
            async with db.read() as reader:
                # A read that waited for the writer would wait out the busy timeout (30 s):
                # half of it is no margin a loaded machine can miss.
                count = await asyncio.wait_for(
                    reader.scalar(text("SELECT count(*) FROM users")), timeout=15
                )
        assert count == 0
    finally:
        await db.close()


async def content_once_flushed(relay: Any, message_id: str, *, tries: int) -> str | None:
    """The stored text of an answer once a flush has written any (within a few flush
    intervals), polled every 20 ms up to ``tries`` times; what is stored then, if none came."""
    content = None
    for _ in range(tries):
        async with relay.service.db.read() as session:  # a fresh snapshot each time
            content = await session.scalar(
                text("SELECT content FROM messages WHERE id = :id"), {"id": message_id}
            )
        if content:
            break
        await asyncio.sleep(0.02)
    return content


async def test_streaming_answer_text_is_flushed_while_it_grows(
    relay_for, fake, database_url
) -> None:
    gate = asyncio.Event()
    fake.script = [livepeer_chunk("partial"), gate, *livepeer_events([" rest"])]
    async with relay_for(database_url=database_url, flush_interval=0.05) as relay:
        async with relay.client.stream("POST", "/api/chat", json=user("x")) as response:
            message_id = response.headers["x-message-id"]
            await wait_until(lambda: relay.service.answers[message_id].text == "partial")
            content = await content_once_flushed(relay, message_id, tries=100)
            gate.set()
            await response.aread()
    assert content == "partial"


def record_flushes(relay: Any) -> list[tuple[int, bool]]:
    """Each flush's number of answers, and whether it was written on the event loop."""
    from chatrelay.store.answer_rows import save_answer_texts

    db = relay.service.answer_store.db
    write, flushes = db.write, []

    async def recorded(work: Any, *, small: bool = False) -> Any:
        if getattr(work, "func", None) is save_answer_texts:
            flushes.append((len(work.keywords["rows"]), small))
        return await write(work, small=small)

    db.write = recorded
    return flushes


@pytest.mark.parametrize("flush", ["many answers", "a long answer"])
async def test_a_big_flush_is_written_whole_on_the_writer_thread(
    relay_for, fake, flush: str
) -> None:
    """More answers, or more text, than the event loop writes itself (SQLite): the writer
    thread writes it, all of it."""
    from chatrelay.answers.recorder import SMALL_FLUSH_CHARS, SMALL_FLUSH_ROWS

    gate = asyncio.Event()
    count, partial_text = SMALL_FLUSH_ROWS + 4, "partial"
    if flush == "a long answer":
        count, partial_text = 1, "x" * (SMALL_FLUSH_CHARS + 100)
    fake.script = [livepeer_chunk(partial_text), gate, *livepeer_events([" rest"])]
    # The timer's flushes never come: the one flush is the test's, once every text is there.
    async with relay_for(flush_interval=60) as relay:
        flushes = record_flushes(relay)
        async with contextlib.AsyncExitStack() as streams:
            responses = [
                await streams.enter_async_context(
                    relay.client.stream("POST", "/api/chat", json=user(f"q{i}"))
                )
                for i in range(count)
            ]
            ids = [response.headers["x-message-id"] for response in responses]
            answers = [relay.service.answers[i] for i in ids]
            await wait_until(lambda: all(answer.text == partial_text for answer in answers))
            await relay.service.answer_store.flush()
            async with relay.service.db.read() as session:
                rows = await session.execute(
                    text("SELECT id, content FROM messages WHERE role = 'assistant'")
                )
                stored = {row[0]: row[1] for row in rows}
            gate.set()
            for response in responses:
                await response.aread()
    assert [stored.get(i) == partial_text for i in ids] == [True] * count
    assert flushes == [(count, False)]  # all at once, off the event loop


async def test_an_idle_server_does_not_wake_to_flush(relay_for, fake) -> None:
    """The flusher sleeps while no answer streams, and wakes for the next one, whose flush
    (one answer, a few bytes) is written on the event loop itself."""
    fake.script = livepeer_events(["Hello"])
    async with relay_for(flush_interval=0.02) as relay:
        answers = relay.service.answer_store
        flushes = record_flushes(relay)
        await chat(relay.client, user("hi"))
        await wait_until(lambda: not answers.streaming.is_set())  # the flusher went to sleep
        idle_from = len(flushes)
        await asyncio.sleep(0.3)  # fifteen intervals
        assert len(flushes) == idle_from

        gate = asyncio.Event()
        fake.script = [livepeer_chunk("partial"), gate, *livepeer_events([" rest"])]
        async with relay.client.stream("POST", "/api/chat", json=user("x")) as response:
            message_id = response.headers["x-message-id"]
            await wait_until(lambda: relay.service.answers[message_id].text == "partial")
            content = await content_once_flushed(relay, message_id, tries=200)
            gate.set()
            await response.aread()
    assert content == "partial"
    assert (1, True) in flushes[idle_from:], flushes


async def test_a_late_flush_never_overwrites_the_final_text(database_url: str) -> None:
    """A periodic flush that waited for the lock while the answer was finished is a no-op."""
    from chatrelay.store import answer_rows, users
    from chatrelay.store import conversations as store
    from chatrelay.store.database import Database

    db = Database(database_url)
    await db.upgrade()
    try:
        async with db.transaction() as session:
            guest = await users.create_guest(session)
            conversation = await store.create_conversation(session, owner_id=guest.id, title="t")
            answer = await store.add_message(
                session, owner_id=guest.id, conversation=conversation, role="assistant",
                content="", status="streaming",
            )  # fmt: skip
        await db.write(
            partial(
                answer_rows.finish_answer, answer_id=answer.id,
                content="the whole answer", status="complete", finish_reason="stop", error=None,
                prompt_tokens=1, completion_tokens=3, upstream="livepeer",
            )
        )  # fmt: skip
        stale = [{"b_id": answer.id, "b_content": "the who"}]
        await db.write(partial(answer_rows.save_answer_texts, rows=stale))
        async with db.read() as session:
            [stored] = await store.messages_of(
                session, owner_id=guest.id, conversation_id=conversation.id
            )
        assert (stored.content, stored.status) == ("the whole answer", "complete")
    finally:
        await db.close()
