"""The terminal client (cli/terminal_client.py) against scripted responses: what it sends, how it
reads an answer's stream, re-attaches after a cut, and shows errors. httpx's mock transport
stands in for the network; tests/e2e/test_terminal_client.py runs it against a real server."""

from __future__ import annotations

import io
from collections.abc import Callable

import httpx
import orjson
import pytest
from rich.console import Console

from chatrelay.cli import terminal_client
from chatrelay.cli.terminal_client import TerminalClient, error_message


def token(text: str, finish_reason: str | None = None) -> dict[str, object]:
    return {"choices": [{"delta": {"content": text}, "finish_reason": finish_reason}]}


def stream(*events: object, first_id: int = 1, done: bool = True) -> bytes:
    frames = [
        f"id: {n}\ndata: {orjson.dumps(event).decode()}\n\n"
        for n, event in enumerate(events, start=first_id)
    ]
    return ("".join(frames) + ("data: [DONE]\n\n" if done else "")).encode()


def sse(body: bytes, **headers: str) -> httpx.Response:
    # From an iterator, as from a socket: bytes given whole would count as read already.
    return httpx.Response(
        200, content=iter([body]), headers={"content-type": "text/event-stream", **headers}
    )


Handler = Callable[[httpx.Request], httpx.Response]


def client_for(handler: Handler) -> tuple[TerminalClient, httpx.Client, io.StringIO]:
    screen = io.StringIO()
    client = TerminalClient(base_url="http://relay", model="m", console=Console(file=screen))
    http = httpx.Client(base_url="http://relay", transport=httpx.MockTransport(handler))
    return client, http, screen


def test_an_answer_streams_and_the_conversation_is_remembered(
    capsys: pytest.CaptureFixture[str],
) -> None:
    bodies: list[dict[str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(orjson.loads(request.content))
        role = {"choices": [{"delta": {"role": "assistant"}}]}
        body = stream(role, token("Hel"), token("lo", "stop"))
        return sse(body, **{"x-conversation-id": "conv_1", "x-message-id": "msg_1"})

    client, http, _ = client_for(handler)
    first = client._ask(http, "hi")
    second = client._ask(http, "again")
    assert (first.text, first.finish_reason, first.done, first.error) == (
        "Hello",
        "stop",
        True,
        None,
    )
    assert first.last_event_id == "3"
    assert second.text == "Hello"
    assert bodies == [
        {"messages": [{"role": "user", "content": "hi"}], "model": "m"},
        {
            "messages": [{"role": "user", "content": "again"}],
            "model": "m",
            "conversation_id": "conv_1",
        },
    ]
    assert capsys.readouterr().out == "Hello\nHello\n"


def test_a_cut_stream_is_followed_again_from_its_last_event(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(terminal_client, "RECONNECT_BACKOFF", (0.0, 0.0))
    asked: list[tuple[str, str | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append((request.url.path, request.headers.get("last-event-id")))
        if request.method == "POST":  # the stream ends before [DONE]
            return sse(stream(token("one"), token(" two"), done=False), **{"x-message-id": "msg_1"})
        return sse(stream(token(" three", "stop"), first_id=3))

    client, http, screen = client_for(handler)
    answer = client._ask(http, "count")
    assert answer.text == "one two three" and answer.done
    assert asked == [("/api/chat", None), ("/api/messages/msg_1/stream", "2")]
    assert "reconnecting" in screen.getvalue()
    assert capsys.readouterr().out == "one two three\n"


def test_a_replay_from_the_start_replaces_what_was_shown() -> None:
    role = {"choices": [{"delta": {"role": "assistant"}}]}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return sse(stream(role, token("part"), done=False), **{"x-message-id": "msg_1"})
        # The live events are gone: the stored answer is replayed from its start.
        return sse(stream(role, token("part and the rest", "stop")))

    client, http, _ = client_for(handler)
    assert client._ask(http, "q").text == "part and the rest"


def test_errors_are_shown_in_the_servers_words() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, json={"error": {"message": "Too many requests", "code": "x"}})

    client, http, screen = client_for(handler)
    assert client._ask(http, "q").error == "Too many requests"
    assert "Too many requests" in screen.getvalue()


def test_an_error_event_and_a_cut_at_the_token_limit_are_said(
    capsys: pytest.CaptureFixture[str],
) -> None:
    events = [
        stream(token("a"), {"error": {"message": "upstream failed"}}),
        stream(token("b", "length")),
    ]
    client, http, screen = client_for(lambda request: sse(events.pop(0)))
    assert client._ask(http, "q").error == "upstream failed"
    assert client._ask(http, "q").finish_reason == "length"
    shown = screen.getvalue()
    assert "Error: upstream failed" in shown and "(cut at the token limit)" in shown


def test_an_error_message_is_the_json_errors_or_the_status_and_body() -> None:
    json_error = httpx.Response(400, json={"error": {"message": "bad model"}})
    assert error_message(json_error) == "bad model"
    assert error_message(httpx.Response(502, text="Bad Gateway")) == "HTTP 502: Bad Gateway"
    assert error_message(httpx.Response(500, json={"detail": "x"})).startswith("HTTP 500: ")
    assert error_message(httpx.Response(500, text="x" * 1000)) == "HTTP 500: " + "x" * 300
