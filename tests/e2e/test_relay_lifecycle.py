"""A disconnect is not a stop; a stop closes the upstream request; nothing outlives an answer."""

from __future__ import annotations

import asyncio

from chatrelay.upstreams.client import Upstream, UpstreamConfig
from chatrelay.upstreams.dialects import GenerationParams
from chatrelay.upstreams.stream import Timeouts
from tests.fake_upstream import FakeUpstream, livepeer_chunk, livepeer_events, paced
from tests.polling import wait_until
from tests.sse_client import DONE, events_of, read_answer, user


def generation_tasks() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("generation-")]


async def test_disconnect_is_not_a_stop(fake: FakeUpstream, relay_for) -> None:
    tokens = [f" t{i}" for i in range(30)]
    # The rest of the answer waits until the reader is seen gone: "not finished yet" is then
    # so by construction, not by how fast the machine noticed the reader leave.
    rest = asyncio.Event()
    first, *others = paced(livepeer_events(tokens), 0.01)
    fake.script = [first, rest, *others]
    async with relay_for() as relay:
        async with relay.client.stream("POST", "/api/chat", json=user("x")) as response:
            message_id = response.headers["x-message-id"]
            answer = relay.service.answers[message_id]
            async for event in events_of(response):
                if event["choices"][0]["delta"].get("content"):
                    break  # the reader goes away after the first token
        # The server stops following for it at once (nothing sent to nobody)...
        await wait_until(lambda: answer.buffer.followers == 0)
        assert not answer.finished
        rest.set()
        # ...while the answer keeps going to the end of the answer, and keeps the whole of it.
        await wait_until(lambda: answer.finished)
        assert answer.status == "complete"
        assert answer.text == "".join(tokens)
        assert answer.usage is not None and answer.usage.completion_tokens == 30
        assert fake.finished_at is not None and fake.disconnected_at is None
        # ...then releases everything: no answer, no task, no request left open upstream.
        await wait_until(lambda: not relay.service.answers)
        await wait_until(lambda: not generation_tasks())
        assert fake.active == 0


async def test_stop_closes_the_upstream_request(fake: FakeUpstream, relay_for) -> None:
    # The upstream would go on for ever, and no timer of the relay's would end it: the request
    # is closed by the stop, or not at all (then the wait below fails).
    never = asyncio.Event()
    fake.script = [*livepeer_events([f" w{i}" for i in range(5)], stop_chunk=False), never]
    async with relay_for(
        finished_job_ttl=30, stall_timeout=3600, first_token_timeout=3600
    ) as relay:
        async with relay.client.stream("POST", "/api/chat", json=user("x")) as response:
            message_id = response.headers["x-message-id"]
            events = events_of(response)
            received = 0
            async for event in events:
                if event["choices"][0]["delta"].get("content"):
                    received += 1
                    if received == 3:
                        break
            assert fake.disconnected_at is None
            stop = await relay.client.post(f"/api/messages/{message_id}/stop")
            assert stop.status_code == 200
            assert stop.json() == {"id": message_id, "status": "stopping"}
            rest = [event async for event in events]

        await wait_until(lambda: fake.disconnected_at is not None)
        assert fake.finished_at is None  # cut by the stop, not ended
        assert rest[-1] == DONE
        final = rest[-2]
        assert final["choices"][0]["finish_reason"] == "stop"
        assert final["x_chatrelay"] == {"status": "stopped"}
        answer = relay.service.answers[message_id]
        assert answer.status == "stopped"
        assert answer.text.startswith(" w0 w1 w2")  # the partial answer is kept
        # Stopping again is harmless and says what happened.
        again = await relay.client.post(f"/api/messages/{message_id}/stop")
        assert again.json()["status"] == "stopped"
    assert not generation_tasks()


async def test_stop_while_waiting_for_first_token(fake: FakeUpstream, relay_for) -> None:
    never = asyncio.Event()
    fake.script = [b": loading\n\n", never]
    # No first-token timer to end the request instead: only the stop can.
    async with relay_for(first_token_timeout=3600) as relay:
        async with relay.client.stream("POST", "/api/chat", json=user("x")) as response:
            message_id = response.headers["x-message-id"]
            await relay.client.post(f"/api/messages/{message_id}/stop")
            answer = await read_answer(response)
    assert answer.text == ""
    assert answer.final["x_chatrelay"] == {"status": "stopped"}
    await wait_until(lambda: fake.disconnected_at is not None)


async def test_two_listeners_do_not_disturb_each_other(fake: FakeUpstream, relay_for) -> None:
    """A listener that goes away (a closed tab) leaves the answer and other listeners alone."""
    gate = asyncio.Event()
    fake.script = [livepeer_chunk("one"), gate, *livepeer_events([" two"])]
    async with relay_for(finished_job_ttl=30) as relay:
        async with relay.client.stream("POST", "/api/chat", json=user("x")) as response:
            live = relay.service.answers[response.headers["x-message-id"]]
            quitter = asyncio.create_task(_first_event(live.buffer.follow()))
            await quitter
            gate.set()
            answer = await read_answer(response)
    assert answer.text == "one two"


async def _first_event(follower) -> bytes:  # type: ignore[no-untyped-def]
    async for data in follower:
        return bytes(data)
    return b""


async def test_slow_upstream_starts_the_stream_so_it_can_be_stopped(
    fake: FakeUpstream, relay_for
) -> None:
    """A cold model that holds its answer: the client gets the message id and can stop."""
    fake.script = livepeer_events(["late"])
    fake.responses[-1].hold_headers = asyncio.Event()  # never set: held until the stop
    async with relay_for(stream_start_wait=0.2, first_token_timeout=3600) as relay:
        async with relay.client.stream("POST", "/api/chat", json=user("x")) as response:
            assert response.status_code == 200
            message_id = response.headers["x-message-id"]
            assert fake.disconnected_at is None
            await relay.client.post(f"/api/messages/{message_id}/stop")
            answer = await read_answer(response)
        assert answer.final["x_chatrelay"] == {"status": "stopped"}
        # Closed by the stop: the headers were held, no timer of the relay's was running out.
        await wait_until(lambda: fake.disconnected_at is not None)


async def test_refusal_after_the_stream_started_is_an_error_event(
    fake: FakeUpstream, relay_for
) -> None:
    gate = asyncio.Event()
    fake.fail(503, {"error": {"message": "Service Unavailable Error"}})
    fake.responses[-1].hold_headers = gate
    async with relay_for(stream_start_wait=0.1) as relay:
        async with relay.client.stream("POST", "/api/chat", json=user("x")) as response:
            assert response.status_code == 200
            asyncio.get_running_loop().call_later(0.2, gate.set)
            answer = await read_answer(response)
    [error] = answer.errors
    assert error["code"] == "upstream_http_error"
    assert "Service Unavailable Error" in error["message"]
    assert answer.events[-1] == DONE


async def test_a_stream_left_midway_leaves_no_timer_behind(fake: FakeUpstream) -> None:
    """A reader that has had enough at the first token (the warm-up does) leaves the upstream
    still sending: the stream's stall timer must be disarmed when the reader leaves, or it
    goes off later and breaks whatever the task does next."""
    fake.script = [livepeer_chunk("Hel"), asyncio.Event()]
    config = UpstreamConfig(name="u", dialect="livepeer", base_url=fake.base_url, models=("m",))
    upstream = Upstream(config, timeouts=Timeouts(connect=2, first_token=0.2, stall=0.2))
    seen: list[str] = []
    try:
        async with upstream.stream(
            "m", [{"role": "user", "content": "x"}], GenerationParams(8)
        ) as s:
            await s.relay(lambda chunk: seen.append(chunk.content) is None)
            assert seen == ["Hel"]
            await asyncio.sleep(0.6)  # three stall timeouts, the connection still open
        assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
        assert seen == ["Hel"]  # nothing handed over after "enough"
    finally:
        await upstream.close()
