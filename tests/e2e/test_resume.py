"""Re-attaching to an answer (`GET /api/messages/{id}/stream`): every token once, in order."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tests.fake_upstream import FakeUpstream, livepeer_chunk, livepeer_events, paced
from tests.polling import wait_until
from tests.sse_client import DONE, content_of, events_with_ids, user

WORDS = [f" w{i}" for i in range(60)]
WHOLE = "".join(WORDS)


async def read_some(response: httpx.Response, tokens: int) -> tuple[str, str]:
    """Read until ``tokens`` content events came; the text and the last event id seen."""
    text, last_id, seen = "", "", 0
    async for event_id, event in events_with_ids(response):
        assert event_id is not None
        last_id = event_id
        if content := content_of(event):
            text += content
            seen += 1
            if seen == tokens:
                break
    return text, last_id


async def read_rest(response: httpx.Response) -> tuple[str, list[Any], list[str | None]]:
    text, events, ids = "", [], []
    async for event_id, event in events_with_ids(response):
        ids.append(event_id)
        events.append(event)
        text += content_of(event)
    return text, events, ids


async def test_every_event_carries_the_next_id(fake: FakeUpstream, relay_for) -> None:
    fake.script = livepeer_events(["a", "b", "c"])
    async with relay_for() as relay:
        async with relay.client.stream("POST", "/api/chat", json=user("x")) as response:
            _, events, ids = await read_rest(response)
    assert events[-1] == DONE
    assert ids == [str(n) for n in range(1, len(events) + 1)]


async def test_resume_after_a_dropped_connection_gets_every_token_once(
    fake: FakeUpstream, relay_for
) -> None:
    fake.script = paced(livepeer_events(WORDS), 0.01)
    async with relay_for() as relay:
        async with relay.client.stream("POST", "/api/chat", json=user("x")) as response:
            message_id = response.headers["x-message-id"]
            before, last_id = await read_some(response, 10)
        # The connection is gone; the answer goes on without it (a disconnect is not a stop).
        headers = {"Last-Event-ID": last_id}
        url = f"/api/messages/{message_id}/stream"
        async with relay.client.stream("GET", url, headers=headers) as resumed:
            assert resumed.status_code == 200
            assert resumed.headers["content-type"].startswith("text/event-stream")
            rest, events, ids = await read_rest(resumed)
    assert before + rest == WHOLE
    assert ids[0] == str(int(last_id) + 1)
    assert events[-1] == DONE and events[-2]["choices"][0]["finish_reason"] == "stop"


async def test_after_query_parameter_and_a_second_follower(fake: FakeUpstream, relay_for) -> None:
    fake.script = paced(livepeer_events(WORDS), 0.01)
    async with relay_for() as relay:
        async with relay.client.stream("POST", "/api/chat", json=user("x")) as response:
            message_id = response.headers["x-message-id"]
            # A second tab follows from the start while the first one still reads.
            url = f"/api/messages/{message_id}/stream?after=0"
            async with relay.client.stream("GET", url) as second:
                first_text, _, _ = await read_rest(response)
                second_text, _, _ = await read_rest(second)
    assert first_text == second_text == WHOLE


async def test_finished_answer_is_replayed_from_memory_with_its_ids(
    fake: FakeUpstream, relay_for
) -> None:
    fake.script = livepeer_events(["one", " two"])
    async with relay_for(finished_job_ttl=30) as relay:
        async with relay.client.stream("POST", "/api/chat", json=user("x")) as response:
            message_id = response.headers["x-message-id"]
            _, original, original_ids = await read_rest(response)
        url = f"/api/messages/{message_id}/stream"
        async with relay.client.stream("GET", url, headers={"Last-Event-ID": "2"}) as replay:
            text, events, ids = await read_rest(replay)
    assert ids == original_ids[2:]
    assert events == original[2:]
    assert text == "one two"[len(content_of(original[1])) :]


async def test_expired_answer_is_replayed_from_the_database(
    fake: FakeUpstream, relay_for, database_url: str
) -> None:
    fake.script = livepeer_events(["stored", " answer"])
    async with relay_for(database_url=database_url, finished_job_ttl=0) as relay:
        async with relay.client.stream("POST", "/api/chat", json=user("x")) as response:
            message_id = response.headers["x-message-id"]
            await read_rest(response)
        await wait_until(lambda: not relay.service.answers)
        url = f"/api/messages/{message_id}/stream"
        async with relay.client.stream("GET", url, headers={"Last-Event-ID": "3"}) as replay:
            text, events, _ = await read_rest(replay)
    # The events themselves are gone: the whole stored answer, from a role chunk (start over).
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    assert text == "stored answer"
    assert events[-1] == DONE and events[-2]["choices"][0]["finish_reason"] == "stop"


async def test_each_finished_answer_is_kept_for_the_ttl_from_its_own_end(
    fake: FakeUpstream, relay_for
) -> None:
    fake.script = livepeer_events(["kept"])
    async with relay_for(finished_job_ttl=1.0) as relay:
        finished_at: dict[str, float] = {}
        loop = asyncio.get_running_loop()
        for pause in (0.5, 0):
            async with relay.client.stream("POST", "/api/chat", json=user("x")) as response:
                await read_rest(response)
                finished_at[response.headers["x-message-id"]] = loop.time()
            await asyncio.sleep(pause)
        first, second = finished_at

        def kept_for_their_ttl() -> bool:
            """No answer let go before its own ttl from its own end (each ended just before it
            was timed); how much later is the machine's business."""
            now = loop.time()
            return all(
                message_id in relay.service.answers or now - ended > 0.9
                for message_id, ended in finished_at.items()
            )

        assert set(relay.service.answers) <= {first, second}
        assert kept_for_their_ttl()  # within the ttl: in memory
        while relay.service.answers:
            assert kept_for_their_ttl()
            await asyncio.sleep(0.01)
        assert kept_for_their_ttl()
        # Then a re-attach replays the stored answer (see the test above).
        async with relay.client.stream("GET", f"/api/messages/{first}/stream") as replay:
            text, events, _ = await read_rest(replay)
        assert events[0]["choices"][0]["delta"]["role"] == "assistant" and text == "kept"


async def test_reattach_is_only_for_the_owner(fake: FakeUpstream, relay_for) -> None:
    fake.script = livepeer_events(["mine"])
    async with relay_for(finished_job_ttl=30) as relay:
        async with relay.client.stream("POST", "/api/chat", json=user("x")) as response:
            message_id = response.headers["x-message-id"]
            conversation_id = response.headers["x-conversation-id"]
            await read_rest(response)
        async with httpx.AsyncClient(base_url=relay.url) as stranger:
            await stranger.post("/api/auth/guest")  # becomes a guest of its own
            theirs = await stranger.get(f"/api/messages/{message_id}/stream")
            stop = await stranger.post(f"/api/messages/{message_id}/stop")
        unknown = await relay.client.get("/api/messages/msg_nope/stream")
        stored = (await relay.client.get(f"/api/conversations/{conversation_id}")).json()
        question_id = stored["messages"][0]["id"]
        not_an_answer = await relay.client.get(f"/api/messages/{question_id}/stream")
    for response in (theirs, stop, unknown, not_an_answer):
        assert response.status_code == 404, response.text
        assert response.json()["error"]["code"] in ("message_not_found", "answer_not_found")


async def test_a_dropped_connection_is_not_a_stop(
    fake: FakeUpstream, relay_for, database_url: str
) -> None:
    fake.script = paced(livepeer_events(WORDS), 0.005)
    async with relay_for(database_url=database_url) as relay:
        async with relay.client.stream("POST", "/api/chat", json=user("x")) as response:
            conversation_id = response.headers["x-conversation-id"]
            await read_some(response, 3)
        await wait_until(lambda: not relay.service.answers)
        stored = (await relay.client.get(f"/api/conversations/{conversation_id}")).json()
    answer = stored["messages"][-1]
    assert answer["status"] == "complete" and answer["content"] == WHOLE


async def test_stop_an_answer_that_has_ended_says_how_it_ended(
    fake: FakeUpstream, relay_for
) -> None:
    fake.script = livepeer_events(["done"])
    async with relay_for() as relay:
        async with relay.client.stream("POST", "/api/chat", json=user("x")) as response:
            message_id = response.headers["x-message-id"]
            await read_rest(response)
        await wait_until(lambda: not relay.service.answers)
        stop = await relay.client.post(f"/api/messages/{message_id}/stop")
    assert stop.status_code == 200
    assert stop.json() == {"id": message_id, "status": "complete"}


async def test_reattach_while_waiting_for_the_first_token(fake: FakeUpstream, relay_for) -> None:
    release = asyncio.Event()
    fake.script = [release, *livepeer_events(["late", " answer"])]
    async with relay_for(stream_start_wait=0.1) as relay:
        async with relay.client.stream("POST", "/api/chat", json=user("x")) as response:
            message_id = response.headers["x-message-id"]
        url = f"/api/messages/{message_id}/stream"
        async with relay.client.stream("GET", url, headers={"Last-Event-ID": "0"}) as resumed:
            release.set()
            text, events, _ = await read_rest(resumed)
    assert text == "late answer" and events[-1] == DONE


async def test_signing_in_while_an_answer_streams_keeps_it(
    fake: FakeUpstream, relay_for, database_url: str
) -> None:
    """The guest's conversations go to the account it signs in to, with the answer still
    being generated: stored complete at its end, and the account can follow it."""
    fake.script = paced(livepeer_events(WORDS), 0.01)
    password = "a long enough password"
    async with relay_for(database_url=database_url) as relay:
        async with httpx.AsyncClient(base_url=relay.url) as other:
            await other.get("/")
            created = await other.post(
                "/api/auth/register", json={"username": "ann", "password": password}
            )
            assert created.status_code == 201, created.text
        async with relay.client.stream("POST", "/api/chat", json=user("x")) as response:
            message_id = response.headers["x-message-id"]
            conversation_id = response.headers["x-conversation-id"]
            before, last_id = await read_some(response, 5)
        signed_in = await relay.client.post(
            "/api/auth/login", json={"username": "ann", "password": password}
        )
        assert signed_in.status_code == 200, signed_in.text
        url = f"/api/messages/{message_id}/stream"
        async with relay.client.stream("GET", url, headers={"Last-Event-ID": last_id}) as resumed:
            rest, _, _ = await read_rest(resumed)
        await wait_until(lambda: not relay.service.answers)
        stored = (await relay.client.get(f"/api/conversations/{conversation_id}")).json()
    assert before + rest == WHOLE
    assert stored["messages"][-1]["status"] == "complete"
    assert stored["messages"][-1]["content"] == WHOLE


# ---- resume positions (issue 21, item 10) ---------------------------------------------------


async def test_a_position_at_or_past_the_end_of_a_finished_answer_gives_its_ending(
    fake: FakeUpstream, relay_for
) -> None:
    """A client that waits for an ending gets one, whatever position it says it saw."""
    fake.script = livepeer_events(["one", " two"])
    async with relay_for(finished_job_ttl=30) as relay:
        async with relay.client.stream("POST", "/api/chat", json=user("x")) as response:
            message_id = response.headers["x-message-id"]
            _, original, original_ids = await read_rest(response)
        end = len(original)
        url = f"/api/messages/{message_id}/stream"
        for headers, query in (
            ({"Last-Event-ID": str(end)}, ""),
            ({"Last-Event-ID": str(end + 1000)}, ""),
            ({"Last-Event-ID": str(2**31)}, ""),
            ({}, f"?after={end + 5}"),
        ):
            async with relay.client.stream("GET", url + query, headers=headers) as resumed:
                assert resumed.status_code == 200
                _, events, ids = await read_rest(resumed)
            # Its final chunk and [DONE], again, with their own ids.
            assert events == original[-2:] and ids == original_ids[-2:], (headers, query)
    assert events[-1] == DONE and events[-2]["choices"][0]["finish_reason"] == "stop"


async def test_a_position_past_a_running_answer_follows_it_to_its_end(
    fake: FakeUpstream, relay_for
) -> None:
    gate = asyncio.Event()
    fake.script = [livepeer_chunk("a"), gate, *livepeer_events([" b"])]
    async with relay_for() as relay:
        async with relay.client.stream("POST", "/api/chat", json=user("x")) as response:
            message_id = response.headers["x-message-id"]
            url = f"/api/messages/{message_id}/stream"
            async with relay.client.stream("GET", url, headers={"Last-Event-ID": "1000"}) as later:
                gate.set()
                _, events, _ = await read_rest(later)
            await read_rest(response)
    assert events[-1] == DONE and events[-2]["choices"][0]["finish_reason"] == "stop"


async def test_an_invalid_last_event_id_is_refused(fake: FakeUpstream, relay_for) -> None:
    fake.script = livepeer_events(["x"])
    async with relay_for(finished_job_ttl=30) as relay:
        async with relay.client.stream("POST", "/api/chat", json=user("x")) as response:
            message_id = response.headers["x-message-id"]
            await read_rest(response)
        url = f"/api/messages/{message_id}/stream"
        invalid = ("abc", "-1", "+3", "1_0", "3 4", "1.5", str(2**31 + 1), str(2**64))
        headers = [await relay.client.get(url, headers={"Last-Event-ID": v}) for v in invalid]
        # ?after alike.
        queries = [await relay.client.get(url, params={"after": v}) for v in invalid]
    for responses, name in ((headers, "Last-Event-ID"), (queries, "after")):
        for response in responses:
            assert response.status_code == 400, response.text
            error = response.json()["error"]
            assert (error["code"], error["param"]) == ("invalid_position", name)


async def test_positions_of_an_answer_followed_through_redis(
    fake: FakeUpstream, relay_for, database_url: str, redis_limits: dict[str, str]
) -> None:
    """On another instance (events from Redis): the end gives the ending at once, a running
    answer is followed to its end, a position no stream id can hold is a 400."""
    gate = asyncio.Event()
    fake.script = [livepeer_chunk("a"), gate, *livepeer_events([" b"])]
    shared = {
        "database_url": database_url,
        "secret_key": "one-secret-for-every-instance",
        "finished_job_ttl": 30,
        **redis_limits,
    }
    async with relay_for(**shared) as a, relay_for(**shared) as b:
        async with a.client.stream("POST", "/api/chat", json=user("x")) as response:
            message_id = response.headers["x-message-id"]
            await read_some(response, 1)
            b.client.cookies.update(a.client.cookies)
            url = f"/api/messages/{message_id}/stream"
            async with b.client.stream("GET", url, headers={"Last-Event-ID": "1000"}) as later:
                gate.set()
                _, running, _ = await read_rest(later)
            _, original, original_ids = await read_rest(response)
        await wait_until(lambda: message_id not in a.service.mirror._mirrors)  # type: ignore[union-attr]
        end = len(original)
        for position in (str(end), str(end + 1000)):
            async with b.client.stream("GET", url, headers={"Last-Event-ID": position}) as again:
                _, events, ids = await read_rest(again)
            assert events == original[-2:] and ids == original_ids[-2:], position
        huge = await b.client.get(url, headers={"Last-Event-ID": str(2**64)})
    assert running[-1] == DONE and running[-2]["choices"][0]["finish_reason"] == "stop"
    assert huge.status_code == 400 and huge.json()["error"]["code"] == "invalid_position"
