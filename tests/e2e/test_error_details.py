"""CHATRELAY_DETAILED_ERRORS (chatrelay/error_details.py): with details off (a server facing
others), an anonymous client learns what failed and what to do, never the upstream's URL, the
OS error or the upstream's own words; those are in the log under the request id."""

from __future__ import annotations

import logging

import pytest

from tests.conftest import RelayFactory
from tests.fake_upstream import FakeUpstream, livepeer_chunk
from tests.ports import free_port
from tests.sse_client import read_answer, user

SECRET = "sk-live-0123456789abcdef"


def logged_details(caplog: pytest.LogCaptureFixture, request_id: str) -> str:
    return "\n".join(
        record.getMessage()
        for record in caplog.records
        if getattr(record, "request_id", None) == request_id
    )


async def test_an_unreachable_upstream_is_told_without_its_address(
    relay_for: RelayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    caplog.set_level(logging.WARNING)
    async with relay_for(livepeer_gateway_urls=[nowhere], detailed_errors=False) as relay:
        response = await relay.client.post("/api/chat", json=user("hi"))
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "upstream_unreachable"
    port = nowhere.rsplit(":", 1)[1]
    # Before: "Upstream 'livepeer' at http://127.0.0.1:PORT/llm is unreachable ([Errno 111]
    # Connect call failed ...). Check LIVEPEER_GATEWAY_URL."
    for internal in ["127.0.0.1", port, "Errno", "Connect call", "LIVEPEER_GATEWAY_URL"]:
        assert internal not in error["message"]
    assert "could not be reached" in error["message"]
    request_id = response.headers["x-request-id"]
    assert request_id in error["message"]
    # The operator finds the whole story in the log, by that id.
    assert nowhere in logged_details(caplog, request_id)


async def test_an_upstream_error_text_is_not_relayed(
    relay_for: RelayFactory, fake: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    """Its own words may echo what it was sent: a key reached the client once."""
    caplog.set_level(logging.WARNING)
    fake.fail(401, {"error": {"message": f"Incorrect API key provided: {SECRET}"}})
    async with relay_for(detailed_errors=False) as relay:
        response = await relay.client.post("/api/chat", json=user("hi"))
    assert response.status_code == 502
    error = response.json()["error"]
    assert SECRET not in response.text and fake.base_url not in response.text
    assert error["code"] == "upstream_http_error"
    assert "answered 401" in error["message"] and "operator" in error["message"]
    assert SECRET in logged_details(caplog, response.headers["x-request-id"])


async def test_an_error_mid_answer_is_told_without_the_upstreams_words(
    relay_for: RelayFactory, fake: FakeUpstream
) -> None:
    fake.script = [livepeer_chunk("Half"), b'data: {"error":"gpu-7.internal: OOM, key=%s"}\n\n']
    fake.script[1] = fake.script[1].replace(b"%s", SECRET.encode())
    async with relay_for(detailed_errors=False) as relay:
        async with relay.client.stream("POST", "/api/chat", json=user("x")) as response:
            answer = await read_answer(response)
        conversation = response.headers["x-conversation-id"]
        stored = (await relay.client.get(f"/api/conversations/{conversation}")).json()
    assert answer.text == "Half"
    [error] = answer.errors
    assert error["code"] == "upstream_stream_error"
    assert "gpu-7" not in error["message"] and SECRET not in error["message"]
    assert "mid-answer" in error["message"]
    # The stored answer (what a reload shows) says the same.
    [_, answered] = stored["messages"]
    assert answered["content"] == "Half"
    assert answered["error"] == error["message"]


async def test_on_loopback_the_details_are_shown(
    relay_for: RelayFactory, fake: FakeUpstream
) -> None:
    """A developer's own machine (the default bind): the whole message, as before."""
    fake.fail(401, {"error": {"message": f"Incorrect API key provided: {SECRET}"}})
    async with relay_for() as relay:
        response = await relay.client.post("/api/chat", json=user("hi"))
    assert SECRET in response.json()["error"]["message"]


async def test_readiness_does_not_name_the_upstreams(relay_for: RelayFactory) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    async with relay_for(livepeer_gateway_urls=[nowhere], detailed_errors=False) as relay:
        response = await relay.client.get("/readyz")
    assert response.status_code == 503
    assert nowhere.rsplit(":", 1)[1] not in response.text
