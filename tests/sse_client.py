"""Reading the relay's answer streams in tests, as a client would."""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from chatrelay.sse import SSEDecoder

DONE = "[DONE]"


@dataclass
class StreamedAnswer:
    events: list[Any] = field(default_factory=list)  # parsed JSON objects, then "[DONE]"

    @property
    def text(self) -> str:
        return "".join(
            choice["delta"].get("content") or ""
            for event in self.chunks
            for choice in event.get("choices", ())
        )

    @property
    def chunks(self) -> list[dict[str, Any]]:
        return [e for e in self.events if isinstance(e, dict) and "error" not in e]

    @property
    def errors(self) -> list[dict[str, Any]]:
        return [e["error"] for e in self.events if isinstance(e, dict) and "error" in e]

    @property
    def final(self) -> dict[str, Any]:
        return self.chunks[-1]


async def events_of(response: httpx.Response) -> AsyncIterator[Any]:
    decoder = SSEDecoder()
    async for data in response.aiter_raw():
        for event in decoder.feed(data):
            yield DONE if event.data == DONE else orjson.loads(event.data)


_readers: weakref.WeakKeyDictionary[httpx.Response, AsyncIterator[tuple[str | None, Any]]] = (
    weakref.WeakKeyDictionary()
)


def events_with_ids(response: httpx.Response) -> AsyncIterator[tuple[str | None, Any]]:
    """Each event with the id it carries (None if it has none), as a resuming client sees.
    One reader per response: reading can stop after some events and go on later."""
    reader = _readers.get(response)
    if reader is None:
        reader = _readers[response] = _events_with_ids(response)
    return reader


async def _events_with_ids(response: httpx.Response) -> AsyncIterator[tuple[str | None, Any]]:
    decoder = SSEDecoder()
    async for data in response.aiter_raw():
        for event in decoder.feed(data):
            yield event.id, DONE if event.data == DONE else orjson.loads(event.data)


def content_of(event: Any) -> str:
    if not isinstance(event, dict):
        return ""
    return "".join(c["delta"].get("content") or "" for c in event.get("choices", ()))


async def read_answer(response: httpx.Response) -> StreamedAnswer:
    answer = StreamedAnswer()
    async for event in events_of(response):
        answer.events.append(event)
    return answer


def user(text: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}]}
