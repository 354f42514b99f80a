"""chatrelay as an OpenAI endpoint, driven by the official `openai` package (not hand-made
requests): streaming, whole answers, models, usage, stored conversations, errors."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest
from prometheus_client import REGISTRY

from chatrelay.auth.api_keys import issue_api_key
from chatrelay.http import served
from chatrelay.http.routes import openai as openai_api
from chatrelay.http.served import ServedEndpoints, ServedRoute
from chatrelay.store import users
from tests.conftest import RunningRelay
from tests.fake_upstream import FakeUpstream, livepeer_chunk, livepeer_events
from tests.polling import wait_until

MODEL = "meta-llama/Meta-Llama-3.1-8B-Instruct"


async def api_key(relay: RunningRelay, username: str = "sdk-user") -> tuple[str, str]:
    issued = issue_api_key()
    async with relay.context.db.transaction() as session:
        user = await users.create_user(session, username=username, password_hash="x")
        await users.create_api_key(
            session, user_id=user.id, name="tests", key_hash=issued.key_hash, prefix=issued.prefix
        )
    return issued.key, user.id


def client_for(relay: RunningRelay, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{relay.url}/v1", api_key=key, max_retries=0, timeout=10)


async def test_streaming_with_usage_and_storage(relay_for, fake: FakeUpstream) -> None:
    fake.script = livepeer_events(["Hello", " from", " Livepeer"])
    async with relay_for() as relay:
        key, _ = await api_key(relay)
        async with client_for(relay, key) as client:
            stream = await client.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": "hi"}],
                stream=True,
                stream_options={"include_usage": True},
                max_tokens=20,
            )
            chunks = [chunk async for chunk in stream]
        conversations = (
            await relay.client.get("/api/conversations", headers={"Authorization": f"Bearer {key}"})
        ).json()["data"]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from Livepeer"
    finish = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finish[-1] == "stop" and set(finish[:-1]) == {None}
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == []
    assert usage_chunk.usage is not None and usage_chunk.usage.completion_tokens == 3
    assert all(c.usage is None for c in chunks[:-1])  # usage only where OpenAI puts it
    assert len(conversations) == 1 and conversations[0]["title"] == "hi"
    assert fake.requests[-1].json["max_tokens"] == 20


async def test_streaming_without_include_usage_has_no_usage_chunk(
    relay_for, fake: FakeUpstream
) -> None:
    fake.script = livepeer_events(["ok"])
    async with relay_for() as relay:
        key, _ = await api_key(relay)
        async with client_for(relay, key) as client:
            stream = await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True
            )
            chunks = [chunk async for chunk in stream]
    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)


async def test_whole_answer_and_models(relay_for, fake: FakeUpstream) -> None:
    fake.script = livepeer_events(["All", " at", " once"])
    async with relay_for() as relay:
        key, _ = await api_key(relay)
        async with client_for(relay, key) as client:
            answer = await client.chat.completions.create(
                model=MODEL,
                messages=[
                    {"role": "developer", "content": "Be terse."},
                    {"role": "user", "content": [{"type": "text", "text": "Say it"}]},
                ],
            )
            models = await client.models.list()
            one = await client.models.retrieve(MODEL)  # the id holds a slash
            with pytest.raises(openai.NotFoundError) as absent:
                await client.models.retrieve("gpt-nonexistent")
    assert one.id == MODEL and one.object == "model" and one.owned_by == "livepeer"
    assert absent.value.code == "model_not_found"
    assert "GET /v1/models" in absent.value.message
    assert answer.object == "chat.completion"
    assert answer.choices[0].message.content == "All at once"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None and answer.usage.prompt_tokens == 42
    assert fake.requests[-1].json["messages"] == [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "Say it"},
    ]
    assert models.data[0].id == MODEL


async def test_conversation_header_continues_a_stored_conversation(
    relay_for, fake: FakeUpstream
) -> None:
    fake.script = livepeer_events(["First"])
    async with relay_for() as relay:
        key, _ = await api_key(relay)
        async with client_for(relay, key) as client:
            raw = await client.chat.completions.with_raw_response.create(
                model=MODEL, messages=[{"role": "user", "content": "one"}]
            )
            conversation_id = raw.headers["x-conversation-id"]
            fake.script = livepeer_events(["Second"])
            await client.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": "two"}],
                extra_headers={"X-Conversation-Id": conversation_id},
            )
    assert fake.requests[-1].json["messages"] == [
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "First"},
        {"role": "user", "content": "two"},
    ]


async def test_errors_have_openai_shapes(relay_for, fake: FakeUpstream) -> None:
    async with relay_for() as relay:
        key, _ = await api_key(relay)
        async with client_for(relay, "cr_not_a_key") as stranger:
            with pytest.raises(openai.AuthenticationError) as refused:
                await stranger.models.list()
        assert refused.value.code == "invalid_api_key"
        async with client_for(relay, key) as client:
            with pytest.raises(openai.NotFoundError) as missing:
                await client.chat.completions.create(
                    model="gpt-9", messages=[{"role": "user", "content": "x"}]
                )
            assert missing.value.code == "model_not_found"
            with pytest.raises(openai.BadRequestError) as bad:
                await client.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": "x"}], temperature=7
                )
            assert bad.value.status_code == 400 and "temperature" in bad.value.message
            with pytest.raises(openai.BadRequestError):
                await client.chat.completions.create(model=MODEL, messages=[])
            with pytest.raises(openai.BadRequestError):
                await client.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": "x"}], n=2
                )
            fake.fail(503, {"error": {"message": "Service Unavailable Error"}})
            with pytest.raises(openai.APIStatusError) as failing:
                await client.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": "x"}]
                )
            assert failing.value.status_code == 502
            assert "Service Unavailable Error" in failing.value.message

            fake.script = [livepeer_chunk("Half"), b'data: {"error":"CUDA out of memory"}\n\n']
            stream = await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "x"}], stream=True
            )
            received = []
            with pytest.raises(openai.APIError) as mid_stream:
                async for chunk in stream:
                    received.append(chunk)
            assert "CUDA out of memory" in mid_stream.value.message
            assert received[-1].choices[0].delta.content == "Half"

        # On the wire: the error alone, as OpenAI sends it (a chunk that carries an "error"
        # key is read as an ordinary chunk by the AI SDK, which drops the error), then [DONE].
        body = {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "stream": True}
        headers = {"Authorization": f"Bearer {key}"}
        async with relay.client.stream("POST", "/v1/chat/completions", json=body,
                                       headers=headers) as response:  # fmt: skip
            frames = (await response.aread()).split(b"\n\n")
        assert frames[-3:] == [
            b'data: {"error":{"message":"Upstream \'livepeer\' ('
            + fake.base_url.encode()
            + b'/llm) reported an error mid-answer: CUDA out of memory.","type":"upstream_error",'
            b'"param":null,"code":"upstream_stream_error"}}',
            b"data: [DONE]",
            b"",
        ]


PATH = "/v1/chat/completions"
GOOD = b'{"messages": [{"role": "user", "content": "x"}]}'


def counted(status: str) -> float:
    """Requests to PATH with ``status`` in the metrics (the request log's route label)."""
    value = REGISTRY.get_sample_value(
        "chatrelay_http_requests_total", {"route": PATH, "status": status}
    )
    return value or 0.0


JSON = "application/json"
BAD_REQUESTS = [  # body, content type, with a key, answered by the served endpoint itself
    pytest.param(b"not json", JSON, True, False, id="not-json"),
    pytest.param(b"", JSON, True, False, id="no-body"),
    pytest.param(b"[]", JSON, True, False, id="not-an-object"),
    pytest.param(b'{"messages": "hi"}', JSON, True, False, id="messages-not-a-list"),
    pytest.param(b'{"messages": [{"role": "robot", "content": "x"}]}', JSON, True, True, id="role"),
    pytest.param(
        b'{"messages": [{"role": "user", "content": "x"}], "n": 2}', JSON, True, False, id="n-2"
    ),
    pytest.param(
        b'{"messages": [{"role": "user", "content": 5}]}', JSON, True, True, id="content-5"
    ),
    pytest.param(
        b'{"messages": [{"role": "user", "content": "\\ud800"}]}', JSON, True, False, id="lone"
    ),
    pytest.param(
        b'{"messages": [{"role": "user", "content": "\xff"}]}', JSON, True, False, id="not-utf8"
    ),
    pytest.param(b'{"messages": "hi"}', JSON, False, False, id="bad-field-and-no-key"),
    pytest.param(b"", JSON, False, False, id="no-body-and-no-key"),
    pytest.param(b"not json", JSON, False, False, id="not-json-and-no-key"),
    pytest.param(GOOD, JSON, False, True, id="no-key"),
    pytest.param(GOOD, None, True, False, id="no-content-type"),
    pytest.param(GOOD, "text/plain", True, False, id="text-plain"),
    pytest.param(GOOD, "application/x-www-form-urlencoded", True, False, id="form"),
    # Well-formed, refused by the endpoint (the app's error handlers answer); messages are
    # checked by the endpoint itself (answers/request_messages.py), naming the field as written.
    pytest.param(
        GOOD.replace(b'"messages"', b'"model": "nope", "messages"'), JSON, True, True, id="model"
    ),
    pytest.param(
        GOOD.replace(b'"messages"', b'"max_tokens": 9999999, "messages"'),
        JSON,
        True,
        True,
        id="max",
    ),
]


async def post_well_formed(relay: RunningRelay, key: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": JSON}
    return await relay.client.post(PATH, content=GOOD, headers=headers)


def served_endpoints(app: object) -> ServedEndpoints:
    layer = app.middleware_stack  # type: ignore[attr-defined]
    while not isinstance(layer, ServedEndpoints):
        layer = layer.app
    return layer


@pytest.mark.parametrize(("body", "content_type", "with_key", "served_itself"), BAD_REQUESTS)
async def test_the_served_endpoint_refuses_what_the_documented_route_refuses(
    relay_for,
    monkeypatch: pytest.MonkeyPatch,
    body: bytes,
    content_type: str | None,
    with_key: bool,
    served_itself: bool,
) -> None:
    """POST /v1/chat/completions is served without FastAPI's request handling (http/served.py);
    the FastAPI route it shadows documents it and answers what it declines. A bad request
    gets the same answer either way, and counts under the same route."""
    async with relay_for() as relay:
        key, _ = await api_key(relay)
        headers = {"Content-Type": content_type} if content_type else {}
        if with_key:
            headers["Authorization"] = f"Bearer {key}"

        async def refusal() -> tuple[int, dict[str, object], float]:
            before = counted("400")
            response = await relay.client.post(PATH, content=body, headers=headers)
            return response.status_code, response.json()["error"], counted("400") - before

        declined: list[object] = []
        real_decline = served.decline

        async def spied_decline(*args: object) -> None:
            declined.append(args)
            await real_decline(*args)  # type: ignore[arg-type]

        monkeypatch.setattr(openai_api, "decline", spied_decline)
        answer = await refusal()
        # Well-formed requests are the served endpoint's own to refuse; the rest the route's.
        assert bool(declined) != served_itself
        del served_endpoints(relay.app).endpoints[ServedRoute("POST", PATH)]
        documented = await refusal()
    assert answer == documented
    assert answer[0] in (400, 401, 404)
    assert answer[2] == (1 if answer[0] == 400 else 0)


async def test_a_well_formed_request_is_counted_under_its_route(
    relay_for, fake: FakeUpstream
) -> None:
    fake.script = livepeer_events(["ok"])
    async with relay_for() as relay:
        key, _ = await api_key(relay)
        before = counted("200")
        response = await post_well_formed(relay, key)
        assert response.status_code == 200
        assert response.json()["choices"][0]["message"]["content"] == "ok"
        assert counted("200") == before + 1


async def test_a_refused_request_keeps_nothing_of_itself_in_the_error(
    relay_for, fake: FakeUpstream
) -> None:
    """The answer keeps its error for re-attaching clients: its traceback, with the frames of
    the request that failed (the request, the user, the body), is dropped once answered."""
    fake.fail(400, {"error": {"message": "bad request upstream"}})
    async with relay_for(finished_job_ttl=30) as relay:
        key, _ = await api_key(relay)
        response = await post_well_formed(relay, key)
        assert response.status_code == 502
        assert "bad request upstream" in response.json()["error"]["message"]
        (answer,) = relay.service.answers.values()
        assert answer.error is not None and answer.error.__traceback__ is None


@pytest.mark.parametrize("keep_generating", [False, True])
async def test_a_client_that_leaves_stops_its_answer_unless_it_asked_not_to(
    relay_for, fake: FakeUpstream, keep_generating: bool
) -> None:
    gate = asyncio.Event()
    fake.script = [livepeer_chunk("First"), gate, *livepeer_events(["First", " rest"])[1:]]
    headers = {"X-Chatrelay-Keep-Generating": "1"} if keep_generating else {}
    async with relay_for(finished_job_ttl=30) as relay:
        key, _ = await api_key(relay)
        async with client_for(relay, key) as client:
            stream = await client.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": "x"}],
                stream=True,
                extra_headers=headers,
            )
            message_id = stream.response.headers["x-message-id"]
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    break
            await stream.close()  # what stream.controller.abort() and abortSignal do
            answer = relay.service.answers[message_id]
            if keep_generating:
                await wait_until(lambda: answer.buffer.followers == 0)  # the client is gone
                gate.set()
            await answer.wait()
        conversations = await relay.client.get(
            "/api/conversations", headers={"Authorization": f"Bearer {key}"}
        )
        conversation = conversations.json()["data"][0]["id"]
        stored = (
            await relay.client.get(
                f"/api/conversations/{conversation}", headers={"Authorization": f"Bearer {key}"}
            )
        ).json()["messages"][-1]
    if keep_generating:
        assert stored["status"] == "complete" and stored["content"] == "First rest"
        assert fake.finished_at is not None
    else:  # the upstream request was closed at once: nothing more is generated or paid for
        assert stored["status"] == "stopped" and stored["content"] == "First"
        assert fake.disconnected_at is not None and fake.finished_at is None
