"""Every bad input and every upstream refusal answers with a clear JSON error and status."""

from __future__ import annotations

from typing import Any

import pytest

from chatrelay.config import LIVEPEER_MODELS
from tests.fake_upstream import FakeUpstream, livepeer_events
from tests.ports import free_port
from tests.sse_client import user


def assert_error(response: Any, status: int, code: str, *words: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "code"}
    assert error["code"] == code
    for word in words:
        assert word in error["message"]
    return error


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        ({}, 422, "invalid_field", "messages"),
        ({"messages": []}, 422, "invalid_field", "messages"),
        ({"messages": "hi"}, 422, "invalid_field", "messages"),
        (
            {"messages": [{"role": "wizard", "content": "x"}]},
            422,
            "invalid_field",
            "messages[0].role",
        ),
        (
            {"messages": [{"role": "user", "content": 42}]},
            422,
            "invalid_field",
            "messages[0].content",
        ),
        (
            {"messages": [{"role": "user", "content": ["x"]}]},
            422,
            "invalid_field",
            "messages[0].content",
        ),
        ({"messages": [{"role": "user"}]}, 422, "invalid_field", "messages[0].content"),
        ({**user("x"), "max_tokens": 0}, 422, "invalid_field", "max_tokens"),
        ({**user("x"), "max_tokens": "many"}, 422, "invalid_field", "max_tokens"),
        ({**user("x"), "temperature": 9}, 422, "invalid_field", "temperature"),
        ({**user("x"), "max_tokens": 100_000}, 400, "max_tokens_too_large", "max_tokens"),
        (
            {"messages": [{"role": "user", "content": "x"}] * 11},
            400,
            "too_many_messages",
            "messages",
        ),
        (
            {"messages": [{"role": "user", "content": "x" * 101}]},
            400,
            "message_too_long",
            "messages[0].content",
        ),
        (
            {"messages": [{"role": "user", "content": "x" * 90}] * 3},
            400,
            "conversation_too_long",
            "messages",
        ),
    ],
)
async def test_bad_chat_requests_name_the_field(
    relay_for, fake: FakeUpstream, body: dict[str, Any], status: int, code: str, field: str
) -> None:
    async with relay_for(max_messages=10, max_message_chars=100, max_total_chars=200) as relay:
        response = await relay.client.post("/api/chat", json=body)
    error = assert_error(response, status, code, field)
    assert error["param"] == field
    assert fake.requests == []  # nothing bad ever reaches (or costs) the upstream


async def test_malformed_json_is_400(relay_for) -> None:
    async with relay_for() as relay:
        response = await relay.client.post(
            "/api/chat", content=b'{"messages": [', headers={"content-type": "application/json"}
        )
    assert_error(response, 400, "invalid_json", "not valid JSON")


async def test_huge_body_is_413(relay_for) -> None:
    async with relay_for(max_body_bytes=4096) as relay:
        response = await relay.client.post("/api/chat", json=user("x" * 10_000))
    assert_error(response, 413, "body_too_large")


async def test_unknown_model_lists_the_available_ones(relay_for) -> None:
    async with relay_for() as relay:
        response = await relay.client.post("/api/chat", json={**user("x"), "model": "gpt-9"})
    error = assert_error(response, 404, "model_not_found", "gpt-9", *LIVEPEER_MODELS)
    assert error["param"] == "model"


async def test_unreachable_gateway_names_url_and_env_var(relay_for) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    async with relay_for(livepeer_gateway_urls=[dead]) as relay:
        response = await relay.client.post("/api/chat", json=user("x"))
    assert_error(response, 502, "upstream_unreachable", f"{dead}/llm", "LIVEPEER_GATEWAY_URL")


@pytest.mark.parametrize(
    ("status", "body", "words"),
    [
        (503, {"error": {"message": "Service Unavailable Error"}}, ["503", "Service Unavailable"]),
        (500, {"error": {"message": "Internal Server Error"}}, ["500", "Internal Server Error"]),
        (400, {"error": {"message": "missing required fields"}}, ["missing required fields"]),
        (401, {"detail": {"msg": "Invalid bearer token"}}, ["401", "Invalid bearer token"]),
        (
            422,
            {"detail": [{"loc": ["body", "model"], "msg": "field required"}]},
            ["field required"],
        ),
        (502, b"<html>bad gateway</html>", ["bad gateway"]),
    ],
)
async def test_upstream_error_status_carries_its_message(
    relay_for, fake: FakeUpstream, status: int, body: Any, words: list[str]
) -> None:
    fake.fail(status, body)
    async with relay_for() as relay:
        response = await relay.client.post("/api/chat", json=user("x"))
    assert_error(response, 502, "upstream_http_error", *words)


async def test_models_livepeer_defaults_and_overrides(relay_for) -> None:
    async with relay_for() as relay:
        listing = (await relay.client.get("/api/models")).json()
    assert listing["object"] == "list"
    assert listing["default"] == "meta-llama/Meta-Llama-3.1-8B-Instruct"
    assert [m["id"] for m in listing["data"]] == list(LIVEPEER_MODELS)
    assert {m["owned_by"] for m in listing["data"]} == {"livepeer"}

    async with relay_for(models=["a/one", "b/two"], default_model="b/two") as relay:
        listing = (await relay.client.get("/api/models")).json()
    assert listing["default"] == "b/two"
    assert [m["id"] for m in listing["data"]] == ["a/one", "b/two"]


async def test_request_without_model_uses_the_default(relay_for, fake: FakeUpstream) -> None:
    fake.script = livepeer_events(["ok"])
    async with relay_for(models=["a/one", "b/two"], default_model="b/two") as relay:
        async with relay.client.stream("POST", "/api/chat", json=user("x")) as response:
            await response.aread()
    assert fake.requests[-1].json["model"] == "b/two"


async def test_unknown_route_and_stop_of_unknown_message(relay_for) -> None:
    async with relay_for() as relay:
        assert_error(await relay.client.get("/api/nope"), 404, "not_found")
        assert_error(
            await relay.client.post("/api/messages/msg_nope/stop"), 404, "message_not_found"
        )
        assert (await relay.client.get("/healthz")).json() == {"status": "ok"}


async def test_huge_chunked_body_is_413(relay_for) -> None:
    async def body():  # type: ignore[no-untyped-def]
        yield b'{"messages": [{"role": "user", "content": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}]}'

    async with relay_for(max_body_bytes=4096) as relay:
        response = await relay.client.post(
            "/api/chat", content=body(), headers={"content-type": "application/json"}
        )
    assert_error(response, 413, "body_too_large", "4096")


async def test_a_bad_field_is_named_as_the_client_wrote_it(relay_for) -> None:
    """Never a validator's internals (``messages[0].content.function-after[storable(), str]``)."""
    async with relay_for() as relay:
        for content, param in ((5, "messages[0].content"), ("a\x00b", "messages[0].content")):
            body = {"messages": [{"role": "user", "content": content}]}
            response = await relay.client.post("/api/chat", json=body)
            assert response.status_code == 422
            assert response.json()["error"]["param"] == param
