"""CPU per chunk on the relay's own path, in process: from an upstream event's text to the
bytes a follower sends (the dialect's parse, the answer's take, the follower's frame).

Issue 20 asks that plain text cost no more than before and that a tool-call or logprobs
chunk cost no more than a text chunk of the same size. This measures each kind of event
with the real objects (OpenAIDialect, Answer and its attempt, EventBuffer), the best
of several repeats of many events each, so that the numbers compare code, not load:

    .venv/bin/python bench/chunk_cost.py                         # this tree
    PYTHONPATH=/tmp/prev/src .venv/bin/python bench/chunk_cost.py  # another tree (text only
                                                                   # where it has no rich path)
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson

from chatrelay.answers.answer import Answer
from chatrelay.answers.attempt import Attempt
from chatrelay.upstreams.dialects import GenerationParams, OpenAIDialect
from chatrelay.upstreams.health import ModelHealth

EVENTS = 20_000
REPEATS = 15


def event(delta: dict[str, Any], logprobs: Any = None) -> str:
    return orjson.dumps(
        {
            "id": "chatcmpl-vllm-7f3a",
            "object": "chat.completion.chunk",
            "created": 1736800000,
            "model": "gpt-test",
            "choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": None}],
        }
    ).decode()


def same_size_text(other: str) -> str:
    """A text event exactly as long as ``other``."""
    text = event({"content": ""})
    return event({"content": "x" * (len(other) - len(text))})


def kinds() -> dict[str, str]:
    tool = event({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": "Pa'}}]})
    logprob = {
        "content": [{"token": " Pa", "logprob": -0.25, "bytes": [32, 80, 97], "top_logprobs": []}]
    }
    logprobs = event({"content": " Pa"}, logprob)
    return {
        "text (one token)": event({"content": " Pa"}),
        "tool-call fragment": tool,
        "text, same size as the tool-call fragment": same_size_text(tool),
        "text with logprobs": logprobs,
        "text, same size as the logprobs one": same_size_text(logprobs),
    }


async def one_run_us(data: str) -> float:
    """µs of CPU per event, parse + take + the follower's frame, over EVENTS events."""
    answer = Answer(
        answer_id="msg_bench",
        registry=None,  # type: ignore[arg-type]  # only stored; no attempt is made here
        model="gpt-test",
        messages=[{"role": "user", "content": "x"}],
        params=GenerationParams(max_tokens=EVENTS + 1),
        owner_id="usr_bench",
        conversation_id="conv_bench",
    )
    attempt = Attempt(answer, "bench", ModelHealth())
    frame, take, parse = answer.buffer.frame, attempt.take, OpenAIDialect().parse_event
    began = time.process_time()
    for index in range(EVENTS):
        take(parse(data))
        frame(index)
    return (time.process_time() - began) / EVENTS * 1e6


async def main() -> None:
    rich = hasattr(Answer, "relay_rich")
    measured = {name: data for name, data in kinds().items() if rich or "text" in name}
    best = dict.fromkeys(measured, float("inf"))
    # Round after round, each kind in turn: this VM's speed drifts by tens of per cent from
    # one second to the next, so the kinds are compared within the same stretch of time.
    for _ in range(REPEATS):
        for name, data in measured.items():
            best[name] = min(best[name], await one_run_us(data))
    print(f"{'event':45} {'bytes':>6} {'µs of CPU per chunk':>20}")
    for name, data in kinds().items():
        figure = f"{best[name]:.2f}" if name in best else "(dropped by this tree)"
        print(f"{name:45} {len(data):>6} {figure:>20}")


if __name__ == "__main__":
    asyncio.run(main())
