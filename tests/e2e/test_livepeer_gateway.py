"""chatrelay as a Livepeer gateway: ``POST /llm`` answers as go-livepeer does (the chunks byte
for byte as tests/fake_upstream.py has them from a gateway, the whole body, the errors), with
chatrelay's keys, guests, budgets, storage and stop behind it. Two real clients: the Livepeer
docs' Next.js chatbot (its route handler and Chat.tsx loop, on Node: tests/js/) and chatrelay's
own ``livepeer`` dialect, pointed at a second chatrelay."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from chatrelay.config import Settings
from chatrelay.http.served import ServedEndpoints, ServedRoute
from tests.conftest import RunningRelay, serve
from tests.e2e.test_openai_api import api_key
from tests.fake_upstream import (
    MODEL,
    FakeResponse,
    FakeUpstream,
    livepeer_chunk,
    livepeer_events,
)
from tests.polling import wait_until
from tests.sse_client import read_answer

TUTORIAL = Path(__file__).parent.parent / "js" / "livepeer_tutorial.mjs"
QUESTION = [{"role": "user", "content": "What is Livepeer?"}]


def llm_body(**fields: Any) -> dict[str, Any]:
    """A gateway request; ``name=None`` leaves a field out."""
    body = {"model": MODEL, "messages": QUESTION, "max_tokens": 64, "stream": True, **fields}
    return {name: value for name, value in body.items() if value is not None}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def data_events(raw: bytes) -> list[Any]:
    """Each ``data:`` event of a body, parsed (comments and blank lines are not events)."""
    events = []
    for block in raw.split(b"\n\n"):
        for line in block.split(b"\n"):
            if line.startswith(b"data: "):
                events.append(orjson.loads(line[len(b"data: ") :]))
    return events


def as_fake_gateway(chunk: dict[str, Any]) -> bytes:
    """The chunk with the fake gateway's id and time, encoded as it would have been: equal
    bytes mean the same fields, values and key order."""
    return b"data: " + orjson.dumps({**chunk, "created": 1736800000, "id": FAKE_ID}) + b"\n\n"


FAKE_ID = orjson.loads(livepeer_chunk("x")[6:])["id"]


async def post_llm(
    relay: RunningRelay, body: dict[str, Any], *, path: str = "/llm", key: str | None = None
) -> httpx.Response:
    return await relay.client.post(path, json=body, headers=bearer(key) if key else {})


async def test_streams_every_chunk_as_a_gateway_does(relay_for, fake: FakeUpstream) -> None:
    fake.script = livepeer_events(["Hello", " from", " Livepeer"])
    async with relay_for() as relay:
        key, _ = await api_key(relay)
        response = await post_llm(relay, llm_body(), key=key)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    assert b"[DONE]" not in response.content
    chunks = data_events(response.content)
    # What the fake gateway sent is what a client of chatrelay's /llm gets: the same chunks,
    # running usage and all, to the byte (only the answer's own id and time differ).
    assert [as_fake_gateway(c) for c in chunks] == livepeer_events(["Hello", " from", " Livepeer"])
    assert chunks[0]["id"] == f"chatcmpl-{response.headers['x-message-id']}"
    assert len({(c["id"], c["created"], c["model"]) for c in chunks}) == 1


async def test_a_whole_answer_has_the_gateways_body(relay_for, fake: FakeUpstream) -> None:
    fake.script = livepeer_events(["All", " at", " once"])
    async with relay_for() as relay:
        key, _ = await api_key(relay)
        response = await post_llm(relay, llm_body(stream=False), key=key)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["choices", "created", "id", "model", "usage"]
    assert body["choices"] == [
        {
            "finish_reason": "stop",
            "index": 0,
            "message": {"content": "All at once", "role": "assistant"},
        }
    ]
    assert list(body["choices"][0]["message"]) == ["content", "role"]
    assert body["model"] == MODEL
    assert body["usage"] == {"completion_tokens": 3, "prompt_tokens": 42, "total_tokens": 45}


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"max_tokens": None}, id="max_tokens"),
        pytest.param({"stream": None}, id="stream"),
        pytest.param({"model": None}, id="model"),
        pytest.param({"messages": None}, id="messages"),
        pytest.param({"messages": []}, id="empty-messages"),
        pytest.param({"max_tokens": None, "stream": None}, id="both"),
    ],
)
async def test_missing_required_fields_is_the_gateways_400(
    relay_for, fake: FakeUpstream, fields: dict[str, Any]
) -> None:
    async with relay_for() as relay:
        key, _ = await api_key(relay)
        response = await post_llm(relay, llm_body(**fields), key=key)
        null = await post_llm(relay, {**llm_body(), **dict.fromkeys(fields)}, key=key)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["message"] == "missing required fields"
    assert error["code"] == "missing_required_fields"
    assert set(error["missing"]) == set(fields)
    assert null.status_code == 400  # null is absent, as a nil pointer is to the gateway
    assert null.json()["error"]["message"] == "missing required fields"
    assert fake.requests == []


@pytest.mark.parametrize(
    ("body", "code"),
    [
        pytest.param(b"{not json", "invalid_json", id="not-json"),
        pytest.param(b"", "invalid_json", id="no-body"),
        pytest.param(orjson.dumps(llm_body(temperature=7)), "invalid_field", id="temperature"),
        pytest.param(orjson.dumps(llm_body(top_k=0)), "invalid_field", id="top_k"),
        pytest.param(
            orjson.dumps(llm_body(messages=[{"role": "user", "content": 5}])),
            "invalid_field",
            id="content",
        ),
        pytest.param(orjson.dumps(llm_body(stream="yes")), "invalid_field", id="stream"),
    ],
)
async def test_a_bad_request_is_a_400(
    relay_for, fake: FakeUpstream, body: bytes, code: str
) -> None:
    async with relay_for() as relay:
        key, _ = await api_key(relay)
        headers = {**bearer(key), "Content-Type": "application/json"}
        response = await relay.client.post("/llm", content=body, headers=headers)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == code
    assert fake.requests == []


async def test_keyless_requests_are_refused_unless_guests_are_served(
    relay_for, fake: FakeUpstream
) -> None:
    fake.script = livepeer_events(["Welcome"])
    async with relay_for() as relay:
        refused = await post_llm(relay, llm_body())
        wrong_key = await post_llm(relay, llm_body(), key="cr_not_a_key")
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "authentication_required"
    assert "CHATRELAY_LLM_GUESTS" in refused.json()["error"]["message"]
    assert wrong_key.status_code == 401
    assert wrong_key.json()["error"]["code"] == "invalid_api_key"
    assert fake.requests == []

    async with relay_for(llm_guests=True) as relay:
        served = await post_llm(relay, llm_body())
        wrong_key = await post_llm(relay, llm_body(), key="cr_not_a_key")
        # The guest it was served as keeps the conversation (its session cookie names it).
        conversations = (await relay.client.get("/api/conversations")).json()["data"]
    assert served.status_code == 200
    assert "".join(c["choices"][0]["delta"]["content"] for c in data_events(served.content)) == (
        "Welcome"
    )
    assert wrong_key.status_code == 401  # a key that is wrong is never a guest
    assert [c["title"] for c in conversations] == ["What is Livepeer?"]


async def test_the_exchange_is_stored_under_the_keys_user(relay_for, fake: FakeUpstream) -> None:
    fake.script = livepeer_events(["Stored", " here"])
    async with relay_for() as relay:
        key, _ = await api_key(relay)
        response = await post_llm(relay, llm_body(), key=key)
        conversation_id = response.headers["x-conversation-id"]
        stored = (
            await relay.client.get(f"/api/conversations/{conversation_id}", headers=bearer(key))
        ).json()
        # The header continues it, as on /v1/chat/completions.
        fake.script = livepeer_events(["Again"])
        follow_up = {"messages": [{"role": "user", "content": "And?"}]}
        again = await relay.client.post(
            "/llm",
            json=llm_body(**follow_up),
            headers={**bearer(key), "X-Conversation-Id": conversation_id},
        )
    assert again.status_code == 200
    assert [(m["role"], m["content"], m["status"]) for m in stored["messages"]] == [
        ("user", "What is Livepeer?", "complete"),
        ("assistant", "Stored here", "complete"),
    ]
    assert fake.requests[-1].json["messages"] == [
        {"role": "user", "content": "What is Livepeer?"},
        {"role": "assistant", "content": "Stored here"},
        {"role": "user", "content": "And?"},
    ]


async def test_the_budget_refuses_before_the_upstream_is_paid(
    relay_for, fake: FakeUpstream
) -> None:
    fake.script = livepeer_events(["Too", " dear"])
    async with relay_for(user_token_budget=50) as relay:
        key, _ = await api_key(relay)
        response = await post_llm(relay, llm_body(max_tokens=1000), key=key)
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "budget_exceeded"
    assert int(response.headers["retry-after"]) > 0
    assert fake.requests == []


async def test_the_trailing_slash_and_the_sampling_fields_reach_the_upstream(
    relay_for, fake: FakeUpstream
) -> None:
    fake.script = livepeer_events(["Sampled"])
    async with relay_for() as relay:
        key, _ = await api_key(relay)
        body = llm_body(max_tokens=32, temperature=0.3, top_p=0.9, top_k=40, seed=7)
        response = await post_llm(relay, body, path="/llm/", key=key)
        wrong_method = await relay.client.get("/llm", headers=bearer(key))
    assert response.status_code == 200
    assert data_events(response.content)[-1]["choices"][0]["finish_reason"] == "stop"
    sent = fake.requests[-1]
    assert sent.path == "/llm"
    assert sent.json == {
        "model": MODEL,
        "messages": QUESTION,
        "max_tokens": 32,
        "stream": True,
        "temperature": 0.3,
        "top_p": 0.9,
        "top_k": 40,
    }  # seed is not a Livepeer field: ignored, as the gateway ignores it
    assert wrong_method.status_code == 405


async def test_upstream_failures_have_the_gateways_statuses(relay_for, fake: FakeUpstream) -> None:
    async with relay_for() as relay:
        key, _ = await api_key(relay)
        unknown_model = await post_llm(relay, llm_body(model="nobody/has-this"), key=key)
        fake.fail(400, {"detail": {"msg": "prompt too long"}})
        failing = await post_llm(relay, llm_body(), key=key)
        whole = await post_llm(relay, llm_body(stream=False), key=key)
    assert unknown_model.status_code == 503  # no orchestrator offers the model
    assert unknown_model.json()["error"]["code"] == "model_not_found"
    for response in (failing, whole):
        assert response.status_code == 500  # the gateway's answer to a failing orchestrator
        assert "prompt too long" in response.json()["error"]["message"]
        assert response.headers["x-message-id"]


async def test_a_failure_after_the_200_is_an_error_event(relay_for, fake: FakeUpstream) -> None:
    fake.script = [livepeer_chunk("Half"), b'data: {"error":"CUDA out of memory"}\n\n']
    async with relay_for() as relay:
        key, _ = await api_key(relay)
        response = await post_llm(relay, llm_body(), key=key)
    assert response.status_code == 200
    *chunks, last = data_events(response.content)
    assert [c["choices"][0]["delta"]["content"] for c in chunks] == ["Half"]
    assert chunks[0]["choices"][0]["finish_reason"] == ""
    assert set(last) == {"error", "code"}
    assert "CUDA out of memory" in last["error"]
    assert b"[DONE]" not in response.content


async def test_max_tokens_running_out_is_length(relay_for, fake: FakeUpstream) -> None:
    # The runner says "stop" even then; chatrelay's answer knows better, and says so.
    fake.script = livepeer_events(["one", " two", " three"])
    async with relay_for() as relay:
        key, _ = await api_key(relay)
        response = await post_llm(relay, llm_body(max_tokens=3), key=key)
    finish = [c["choices"][0]["finish_reason"] for c in data_events(response.content)]
    assert finish == ["", "", "", "length"]


async def test_stop_ends_the_stream_with_a_finish_chunk(relay_for, fake: FakeUpstream) -> None:
    gate = asyncio.Event()
    fake.script = [livepeer_chunk("Going"), gate, *livepeer_events([" on"])]
    async with relay_for() as relay:
        key, _ = await api_key(relay)
        async with relay.client.stream(
            "POST", "/llm", json=llm_body(), headers=bearer(key)
        ) as response:
            message_id = response.headers["x-message-id"]
            await wait_until(lambda: relay.service.answers[message_id].first_token_at is not None)
            stopped = await relay.client.post(
                f"/api/messages/{message_id}/stop", headers=bearer(key)
            )
            raw = await response.aread()
        gate.set()
    assert stopped.json()["status"] == "stopping"
    chunks = data_events(raw)
    assert [c["choices"][0]["delta"]["content"] for c in chunks] == ["Going", ""]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["x_chatrelay"] == {"status": "stopped"}


# The Livepeer tutorial's chatbot, on Node -------------------------------------------------


def node() -> str:
    path = shutil.which("node")
    version = subprocess.run([path, "--version"], capture_output=True, text=True) if path else None
    if path is None or version is None or int(version.stdout.strip("v\n").split(".")[0]) < 20:
        if os.environ.get("CI") == "true":
            pytest.fail("Node.js 20 or later is needed (the Livepeer tutorial's runtime)")
        pytest.skip("Node.js 20 or later is not installed")
    return path


async def run_tutorial(
    gateway_url: str,
    questions: list[str],
    *,
    key: str | None = None,
    verbatim: bool = False,
    on_line: Callable[[str], None] = lambda line: None,
) -> list[dict[str, Any]]:
    """Run the tutorial's app and chat with it; what its client saw, as reported events.
    ``on_line`` sees each line the client's loop takes, as it takes it."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "LIVEPEER_GATEWAY_URL": gateway_url,
        "LIVEPEER_LLM_MODEL": MODEL,
        "QUESTIONS": json.dumps(questions),
        "TUTORIAL_MAX_TOKENS": "64",
    }
    if key is not None:
        env["LIVEPEER_API_KEY"] = key
    if verbatim:
        env["TUTORIAL_VERBATIM"] = "1"
    process = await asyncio.create_subprocess_exec(
        node(), str(TUTORIAL), env=env, stdout=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    events = []
    try:
        async with asyncio.timeout(30):
            async for raw in process.stdout:
                event = json.loads(raw)
                events.append(event)
                if event["event"] == "line":
                    on_line(event["line"])
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert events[-1]["event"] == "done", events
    return events


async def test_the_livepeer_tutorial_streams_whole_answers_from_chatrelay(
    relay_for, fake: FakeUpstream
) -> None:
    # Keep-alive comments come in the middle of the first answer: the tutorial's loop must
    # skip them (the rest of the answer waits until the client has seen one).
    gate = asyncio.Event()

    def on_line(line: str) -> None:
        if line.startswith(":"):
            gate.set()

    first = livepeer_events(["Live", "peer", " is", " video."])
    fake.responses = [
        FakeResponse(script=[first[0], gate, *first[1:]]),
        FakeResponse(script=livepeer_events(["Yes", ", GPUs."])),
    ]
    async with relay_for(keepalive_interval=0.05, stall_timeout=30) as relay:
        key, _ = await api_key(relay)
        events = await run_tutorial(
            relay.url, ["What is Livepeer?", "Open?"], key=key, on_line=on_line
        )
        conversations = (await relay.client.get("/api/conversations", headers=bearer(key))).json()
    done = events[-1]
    assert done["messages"] == [
        {"role": "system", "content": "You are a helpful assistant. Keep responses concise."},
        {"role": "user", "content": "What is Livepeer?"},
        {"role": "assistant", "content": "Livepeer is video."},
        {"role": "user", "content": "Open?"},
        {"role": "assistant", "content": "Yes, GPUs."},
    ]
    assert done["stops"] == 2  # each answer ended with the finish chunk it waits for
    lines = [e["line"] for e in events if e["event"] == "line"]
    assert ": keep-alive" in lines
    # The second question went with the whole history, as the component's state has it.
    assert fake.requests[-1].json["messages"] == done["messages"][:4]
    # The key is chatrelay's: it is never passed on to the upstream.
    assert all(key not in value for value in fake.requests[-1].headers.values())
    assert len(conversations["data"]) == 2  # each request of a stateless client is its own


async def test_the_tutorial_as_printed_gets_the_gateways_400(relay_for, fake: FakeUpstream) -> None:
    """The tutorial's route handler forgets max_tokens: a gateway refuses that, so chatrelay
    does too, and the handler answers its own 502 (as it would with a real gateway)."""
    async with relay_for() as relay:
        key, _ = await api_key(relay)
        events = await run_tutorial(relay.url, ["Hello"], key=key, verbatim=True)
    assert events[0] == {"event": "refused", "status": 502, "body": "Gateway returned 400"}
    assert fake.requests == []


async def test_the_tutorial_as_printed_streams_when_the_operator_allows_it(
    relay_for, fake: FakeUpstream
) -> None:
    """Pointed at chatrelay by LIVEPEER_GATEWAY_URL alone (no key, no max_tokens), the
    tutorial's app streams whole answers once the operator turns on keyless guests and a
    default max_tokens for /llm."""
    fake.script = livepeer_events(["As", " printed"])
    async with relay_for(llm_guests=True, llm_default_max_tokens=100) as relay:
        events = await run_tutorial(relay.url, ["Hello"], verbatim=True)
    assert events[-1]["messages"][-1] == {"role": "assistant", "content": "As printed"}
    assert events[-1]["stops"] == 1
    assert fake.requests[-1].json["max_tokens"] == 100


async def test_the_keyless_tutorial_is_served_as_a_guest_when_allowed(
    relay_for, fake: FakeUpstream
) -> None:
    fake.script = livepeer_events(["Hi", " guest"])
    async with relay_for() as relay:
        refused = await run_tutorial(relay.url, ["Hello"])
    async with relay_for(llm_guests=True) as relay:
        served = await run_tutorial(relay.url, ["Hello"])
    assert refused[0] == {"event": "refused", "status": 502, "body": "Gateway returned 401"}
    assert served[-1]["messages"][-1] == {"role": "assistant", "content": "Hi guest"}


# chatrelay's livepeer dialect, with a second chatrelay as its gateway ----------------------


def front_settings(gateway: RunningRelay, key: str, tmp_path: Path) -> Settings:
    """A chatrelay whose LIVEPEER_GATEWAY_URL and LIVEPEER_API_KEY are another's /llm and key."""
    return Settings(
        embedded=False,
        livepeer_gateway_urls=[gateway.url],
        livepeer_api_key=key,
        data_dir=tmp_path / "front",
        retry_deadline=0,
        max_failovers=0,
        health_interval=0,
        warm_models=[],
        finished_job_ttl=0,
    )


async def test_a_chatrelay_is_a_gateway_for_another(
    relay_for, fake: FakeUpstream, tmp_path: Path
) -> None:
    fake.script = livepeer_events(["Relayed", " twice", "."])
    async with relay_for() as gateway:
        key, _ = await api_key(gateway)
        async with serve(front_settings(gateway, key, tmp_path)) as front:
            body = {"messages": QUESTION, "max_tokens": 20, "top_k": 5}
            async with front.client.stream("POST", "/api/chat", json=body) as response:
                assert response.status_code == 200
                answer = await read_answer(response)
            front_id = response.headers["x-conversation-id"]
            front_stored = (await front.client.get(f"/api/conversations/{front_id}")).json()
        gateway_stored = (
            await gateway.client.get("/api/conversations", headers=bearer(key))
        ).json()
    assert answer.text == "Relayed twice."
    assert answer.final["choices"][0]["finish_reason"] == "stop"
    assert answer.final["usage"] == {
        "prompt_tokens": 42,
        "completion_tokens": 3,
        "total_tokens": 45,
    }
    assert answer.events[-1] == "[DONE]"
    assert front_stored["messages"][-1]["content"] == "Relayed twice."
    assert front_stored["messages"][-1]["status"] == "complete"
    assert [c["title"] for c in gateway_stored["data"]] == ["What is Livepeer?"]
    # What the front sent reached the fake through the second chatrelay, top_k included.
    assert fake.requests[-1].json == {
        "model": MODEL,
        "messages": QUESTION,
        "max_tokens": 20,
        "stream": True,
        "top_k": 5,
    }


async def test_a_failure_behind_the_second_chatrelay_reaches_the_first(
    relay_for, fake: FakeUpstream, tmp_path: Path
) -> None:
    fake.script = [livepeer_chunk("Half"), b'data: {"error":"CUDA out of memory"}\n\n']
    async with relay_for() as gateway:
        key, _ = await api_key(gateway)
        async with serve(front_settings(gateway, key, tmp_path)) as front:
            async with front.client.stream(
                "POST", "/api/chat", json={"messages": QUESTION}
            ) as response:
                answer = await read_answer(response)
    assert answer.text == "Half"
    assert "CUDA out of memory" in answer.errors[0]["message"]


async def test_the_route_answers_as_the_served_endpoint(relay_for, fake: FakeUpstream) -> None:
    """POST /llm is served ahead of FastAPI's request handling (chatrelay/http/served.py); the
    plain route behind it answers the same where that layer is not installed."""
    fake.script = livepeer_events(["Same"])
    async with relay_for() as relay:
        key, _ = await api_key(relay)

        async def answers() -> list[tuple[int, Any]]:
            streamed = await post_llm(relay, llm_body(), key=key)
            missing = await post_llm(relay, llm_body(stream=None), key=key)
            keyless = await post_llm(relay, llm_body())
            texts = [c["choices"][0]["delta"]["content"] for c in data_events(streamed.content)]
            return [
                (streamed.status_code, texts),
                (missing.status_code, missing.json()),
                (keyless.status_code, keyless.json()),
            ]

        served = await answers()
        layer = relay.app.middleware_stack
        while not (
            isinstance(layer, ServedEndpoints) and ServedRoute("POST", "/llm") in layer.endpoints
        ):
            layer = layer.app
        layer.endpoints.clear()
        routed = await answers()
    assert served == routed
    assert served[0] == (200, ["Same", ""])


async def test_a_refused_request_keeps_nothing_of_itself_in_the_error(
    relay_for, fake: FakeUpstream
) -> None:
    """The answer keeps its error for re-attaching clients: never with the frames of the
    request that failed (the request, the user, the body) in its traceback."""
    fake.fail(400, {"error": {"message": "bad request upstream"}})
    async with relay_for(finished_job_ttl=30) as relay:
        key, _ = await api_key(relay)
        response = await post_llm(relay, llm_body(), key=key)
        assert response.status_code == 500
        (answer,) = relay.service.answers.values()
        assert answer.error is not None and answer.error.__traceback__ is None
        assert answer.error.status == 502  # chatrelay's own, for its own APIs


@pytest.mark.parametrize("keep_generating", [False, True])
async def test_a_client_that_leaves_stops_its_answer_unless_it_asked_not_to(
    relay_for, fake: FakeUpstream, keep_generating: bool
) -> None:
    """As a gateway cancels the orchestrator's request when its client goes (and no Livepeer
    client can come back for the rest), unless it says it will re-attach, as on /v1."""
    gate = asyncio.Event()
    fake.script = [livepeer_chunk("First"), gate, *livepeer_events(["First", " rest"])[1:]]
    async with relay_for(finished_job_ttl=30) as relay:
        key, _ = await api_key(relay)
        headers = bearer(key)
        if keep_generating:
            headers["X-Chatrelay-Keep-Generating"] = "1"
        async with relay.client.stream("POST", "/llm", json=llm_body(), headers=headers) as left:
            message_id = left.headers["x-message-id"]
            async for data in left.aiter_raw():
                if b'"content":"First"' in data:
                    break
        answer = relay.service.answers[message_id]
        if keep_generating:
            await wait_until(lambda: answer.buffer.followers == 0)  # the client is gone
            gate.set()
        await answer.wait()
        conversation = (await relay.client.get("/api/conversations", headers=bearer(key))).json()
        stored = (
            await relay.client.get(
                f"/api/conversations/{conversation['data'][0]['id']}", headers=bearer(key)
            )
        ).json()["messages"][-1]
    if keep_generating:
        assert (stored["status"], stored["content"]) == ("complete", "First rest")
        assert fake.finished_at is not None
    else:  # the upstream request was closed at once: nothing more is generated or paid for
        assert (stored["status"], stored["content"]) == ("stopped", "First")
        assert fake.disconnected_at is not None and fake.finished_at is None
