"""Several instances on one database and one Redis: shared answer events, stops and deletes
across instances, and the heartbeat that settles the answers of a dead instance."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from functools import partial
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from chatrelay.store.database import Database
from chatrelay.store.instances import InstanceHeartbeat, settle_dead_instances
from chatrelay.store.models import Conversation, Instance, MessageRow, User, utcnow
from tests.conftest import REDIS_URL
from tests.e2e.test_resume import read_rest, read_some
from tests.fake_upstream import FakeUpstream, livepeer_events, paced
from tests.polling import wait_until
from tests.sse_client import DONE, user

WORDS = [f" w{i}" for i in range(80)]
SECRET = "one-secret-for-every-instance"


async def test_follow_and_stop_an_answer_running_on_another_instance(
    fake: FakeUpstream, relay_for, database_url: str, redis_limits: dict[str, str]
) -> None:
    fake.script = paced(livepeer_events(WORDS), 0.01)
    # The answers stopped below are held after a few words until then (no stall timer runs
    # out meanwhile): a stop that took its time still finds them running.
    held = [*livepeer_events(WORDS[:5], stop_chunk=False), asyncio.Event()]
    shared = {
        "database_url": database_url, "secret_key": SECRET, "stall_timeout": 3600, **redis_limits
    }  # fmt: skip
    async with relay_for(**shared) as a, relay_for(**shared) as b:
        async with a.client.stream("POST", "/api/chat", json=user("x")) as response:
            message_id = response.headers["x-message-id"]
            before, last_id = await read_some(response, 5)
        b.client.cookies.update(a.client.cookies)
        assert message_id not in b.service.answers  # B only knows it through Redis
        url = f"/api/messages/{message_id}/stream"
        async with b.client.stream("GET", url, headers={"Last-Event-ID": last_id}) as resumed:
            rest, events, _ = await read_rest(resumed)
        assert before + rest == "".join(WORDS) and events[-1] == DONE

        fake.script = held
        async with a.client.stream("POST", "/api/chat", json=user("y")) as response:
            second = response.headers["x-message-id"]
            await read_some(response, 2)
            stop = await b.client.post(f"/api/messages/{second}/stop")
            assert stop.json()["status"] == "stopping"
            _, events, _ = await read_rest(response)
        assert events[-2]["x_chatrelay"] == {"status": "stopped"}

        # Deleting a conversation through B stops its answer running on A.
        fake.script = held
        async with a.client.stream("POST", "/api/chat", json=user("z")) as response:
            conversation_id = response.headers["x-conversation-id"]
            third = response.headers["x-message-id"]
            await read_some(response, 2)
            deleted = await b.client.delete(f"/api/conversations/{conversation_id}")
            assert deleted.status_code == 204
            await wait_until(
                lambda: third not in a.service.answers or a.service.answers[third].finished
            )


async def test_answer_events_in_redis_are_bounded_and_expire(
    fake: FakeUpstream, relay_for, redis_limits: dict[str, str]
) -> None:
    fake.script = livepeer_events(["a", "b", "c"])
    async with relay_for(finished_job_ttl=7, **redis_limits) as relay:
        async with relay.client.stream("POST", "/api/chat", json=user("x")) as response:
            message_id = response.headers["x-message-id"]
            _, events, _ = await read_rest(response)
        key = f"{redis_limits['redis_prefix']}answer:{message_id}"
        client = aioredis.Redis.from_url(REDIS_URL)
        try:
            await wait_until(lambda: message_id not in relay.service.mirror._mirrors)  # type: ignore[union-attr]
            entries = await client.xrange(key)
            ttl = await client.ttl(key)
        finally:
            await client.aclose()
    # Every event, then the end marker; gone 7 s after the answer ended.
    assert len(entries) == len(events) + 1 and b"end" in entries[-1][1]
    assert [e[0] for e in entries] == [f"0-{n}".encode() for n in range(1, len(entries) + 1)]
    assert 0 < ttl <= 7


async def add_streaming_answer(db: Database, instance_id: str | None) -> str:
    async with db.transaction() as session:
        owner = User()
        session.add(owner)
        await session.flush()
        conversation = Conversation(user_id=owner.id)
        session.add(conversation)
        await session.flush()
        answer = MessageRow(
            conversation_id=conversation.id, user_id=owner.id, seq=1, role="assistant",
            content="half an answer", status="streaming", instance_id=instance_id,
        )  # fmt: skip
        session.add(answer)
        await session.flush()
        return answer.id


async def status_of(db: Database, message_id: str) -> tuple[str, str]:
    async with db.read() as session:
        message = await session.get(MessageRow, message_id)
        assert message is not None
        return message.status, message.content


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
async def test_dead_instances_are_settled(database_url: str, tmp_path: Path) -> None:
    db = Database(database_url)
    await db.upgrade()
    try:
        old = utcnow() - timedelta(seconds=60)
        async with db.transaction() as session:
            session.add_all(
                [
                    # Silent for a minute, on another host: dead by its heartbeat.
                    Instance(id="far:1:a", host="far-away", pid=1, heartbeat_at=old),
                    # On another host and beating: alive, whatever its pid.
                    Instance(id="near:1:b", host="elsewhere", pid=999_999_999),
                ]
            )
        dead = await add_streaming_answer(db, "far:1:a")
        alive = await add_streaming_answer(db, "near:1:b")
        unknown = await add_streaming_answer(db, "never-registered")
        # Rows of a version before instances: interrupted once they stop growing.
        stopped_growing = await add_streaming_answer(db, None)
        growing = await add_streaming_answer(db, None)
        async with db.transaction() as session:
            (await session.get(MessageRow, stopped_growing)).updated_at = old  # type: ignore[union-attr]
        settled = await db.write(partial(settle_dead_instances, own_id="me", dead_after=15))
        assert settled == 3
        assert await status_of(db, dead) == ("interrupted", "half an answer")
        assert await status_of(db, unknown) == ("interrupted", "half an answer")
        assert await status_of(db, stopped_growing) == ("interrupted", "half an answer")
        assert (await status_of(db, alive))[0] == "streaming"
        assert (await status_of(db, growing))[0] == "streaming"
        async with db.read() as session:
            assert await session.get(Instance, "far:1:a") is None
    finally:
        await db.close()


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
async def test_an_instance_taken_for_dead_rejoins_with_its_answers(database_url: str) -> None:
    db = Database(database_url)
    await db.upgrade()
    running: list[str] = []
    heartbeat = InstanceHeartbeat(db, interval=5, running=lambda: running)
    try:
        await heartbeat.beat()  # joins
        answer = await add_streaming_answer(db, heartbeat.id)
        running.append(answer)
        # Another instance took it for dead (a long pause): its row is gone, its answer settled.
        async with db.transaction() as session:
            await session.delete(await session.get(Instance, heartbeat.id))
            (await session.get(MessageRow, answer)).status = "interrupted"  # type: ignore[union-attr]
        await heartbeat.beat()
        assert await status_of(db, answer) == ("streaming", "half an answer")
        async with db.read() as session:
            assert await session.get(Instance, heartbeat.id) is not None
    finally:
        await db.close()


async def test_a_restart_on_the_same_host_settles_at_once(
    fake: FakeUpstream, relay_for, tmp_path: Path
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'chatrelay.db'}"
    async with relay_for(database_url=url):
        pass  # migrates the database
    db = Database(url)
    try:
        async with db.transaction() as session:
            # A process of this host that is gone (kill -9), its heartbeat still fresh.
            from chatrelay.store.instances import HOST

            session.add(Instance(id="gone", host=HOST, pid=999_999_999))
        answer = await add_streaming_answer(db, "gone")
        async with relay_for(database_url=url):
            assert (await status_of(db, answer))[0] == "interrupted"
    finally:
        await db.close()
