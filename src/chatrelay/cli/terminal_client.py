"""The terminal client that `chatrelay chat` (cli/chat.py) runs: talk to a chatrelay server.

Answers stream in as they are generated; Ctrl-C stops the current answer (the server stops
the upstream) and returns to the prompt; Ctrl-D or /exit leaves; /new starts over. A dropped
connection is not a stop: the client re-attaches to the answer (``Last-Event-ID``) with
back-off, as a browser's EventSource would, and the answer goes on where it was.
"""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass, field

import httpx
import orjson
from rich.console import Console

from chatrelay.sse import SSEDecoder

# Re-attach after a dropped connection: waits between tries, then give up.
RECONNECT_BACKOFF = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0)


@dataclass
class ShownAnswer:
    """One answer as the terminal sees it, gathered from its stream (and its re-attaches)."""

    text: str = ""
    finish_reason: str | None = None
    error: str | None = None
    stopped: bool = False
    # The id of the last event received: where a re-attach resumes; done once [DONE] came.
    last_event_id: str | None = None
    done: bool = False


@dataclass
class TerminalClient:
    """A prompt loop: each line is a question in the current conversation, its answer streamed
    to the terminal."""

    base_url: str
    model: str | None = None
    console: Console = field(default_factory=Console)
    # The server keeps the conversation; the client only remembers which one it is.
    conversation_id: str | None = None

    def run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=httpx.Timeout(10.0, read=None)) as http:
            self._greet(http)
            while True:
                try:
                    prompt = self.console.input("[bold cyan]you>[/] ")
                except (EOFError, KeyboardInterrupt):
                    self.console.print()
                    return
                command = prompt.strip()
                if not command:
                    continue
                if command in ("/exit", "/quit"):
                    return
                if command == "/new":
                    self.conversation_id = None
                    self.console.print("[dim]New conversation.[/]")
                    continue
                self._ask(http, prompt)

    def _greet(self, http: httpx.Client) -> None:
        try:
            listing = http.get("/api/models").json()
        except httpx.HTTPError as exc:
            self.console.print(f"[red]Cannot reach chatrelay at {self.base_url}: {exc}[/]")
            self.console.print("Start the server with `make run` or `chatrelay serve`.")
            raise SystemExit(1) from None
        self.model = self.model or listing.get("default")
        self.console.print(
            f"[dim]chatrelay at {self.base_url}, model {self.model}. "
            "Ctrl-C stops an answer, Ctrl-D leaves, /new starts over.[/]"
        )

    def _ask(self, http: httpx.Client, prompt: str) -> ShownAnswer:
        answer = ShownAnswer()
        body: dict[str, object] = {"messages": [{"role": "user", "content": prompt}]}
        if self.model:
            body["model"] = self.model
        if self.conversation_id:
            body["conversation_id"] = self.conversation_id
        message_id: str | None = None
        parts: list[str] = []
        try:
            with http.stream("POST", "/api/chat", json=body) as response:
                self.conversation_id = response.headers.get(
                    "x-conversation-id", self.conversation_id
                )
                if response.status_code != 200:
                    response.read()
                    answer.error = error_message(response)
                    self.console.print(f"[red]{answer.error}[/]", soft_wrap=True)
                    return answer
                message_id = response.headers.get("x-message-id")
                try:
                    self._stream_into(response, parts, answer)
                except httpx.TransportError:
                    if message_id is None:
                        raise
            if not answer.done and message_id is not None:
                self._reattach(http, message_id, parts, answer)
            self._finish(answer)
        except KeyboardInterrupt:
            answer.stopped = True
            if message_id is not None:
                with contextlib.suppress(httpx.HTTPError):
                    http.post(f"/api/messages/{message_id}/stop")
            self.console.print("\n[yellow](stopped)[/]")
        except httpx.HTTPError as exc:
            answer.error = f"Connection to {self.base_url} failed: {exc}"
            self.console.print(f"\n[red]{answer.error}[/]", soft_wrap=True)
        answer.text = "".join(parts)
        return answer

    def _reattach(
        self, http: httpx.Client, message_id: str, parts: list[str], answer: ShownAnswer
    ) -> None:
        """The stream broke before its end: follow the answer again from the last event."""
        for pause in RECONNECT_BACKOFF:
            self.console.print("\n[dim](connection lost, reconnecting…)[/]")
            time.sleep(pause)
            headers = {"Last-Event-ID": answer.last_event_id or "0"}
            try:
                url = f"/api/messages/{message_id}/stream"
                with http.stream("GET", url, headers=headers) as response:
                    if response.status_code != 200:
                        response.read()
                        answer.error = error_message(response)
                        return
                    self._stream_into(response, parts, answer)
            except httpx.TransportError:
                pass
            if answer.done:
                return
        raise httpx.ConnectError(f"gave up re-attaching to answer {message_id}")

    def _stream_into(self, response: httpx.Response, parts: list[str], answer: ShownAnswer) -> None:
        decoder = SSEDecoder()
        out = sys.stdout
        status = self.console.status("[dim]waiting for the model…[/]")
        status.start()
        waiting = True
        try:
            for data in response.iter_raw():
                for event in decoder.feed(data):
                    answer.last_event_id = decoder.last_event_id
                    if event.data == "[DONE]":
                        answer.done = True
                        continue
                    chunk = orjson.loads(event.data)
                    if "error" in chunk:
                        answer.error = chunk["error"].get("message", "unknown error")
                        continue
                    for choice in chunk.get("choices", ()):
                        delta = choice.get("delta", {})
                        if delta.get("role") and parts:
                            # A replay of the stored answer from its start: show it afresh.
                            parts.clear()
                            out.write("\n")
                        text = delta.get("content")
                        if text:
                            if waiting:
                                status.stop()
                                waiting = False
                            parts.append(text)
                            out.write(text)
                            out.flush()
                        answer.finish_reason = choice.get("finish_reason") or answer.finish_reason
        finally:
            if waiting:
                status.stop()

    def _finish(self, answer: ShownAnswer) -> None:
        sys.stdout.write("\n")
        if answer.error:
            self.console.print(f"[red]Error: {answer.error}[/]", soft_wrap=True)
        elif answer.finish_reason == "length":
            self.console.print("[dim](cut at the token limit)[/]")


def error_message(response: httpx.Response) -> str:
    """What a refused request says: the JSON error's message, else the status and the body."""
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}: {response.text[:300]}"
