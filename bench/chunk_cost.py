"""CPU per chunk on the relay's own path, in process: from an upstream event's text to the
bytes a follower sends (the dialect's parse, the answer's take, the follower's frame).

Issue 20 asks that plain text cost no more than before and that a tool-call or logprobs
chunk cost no more than a text chunk of the same size. This measures each kind of event
with the real objects (OpenAIDialect, GenerationJob and its attempt, EventBuffer), the best
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

from chatrelay.chat.job import GenerationJob, _Attempt
from chatrelay.upstreams.dialects import GenerationParams, OpenAIDialect
from chatrelay.upstreams.health import ModelHealth

EVENTS = 20_000
REPEATS = 7


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


async def per_chunk_us(data: str) -> float:
    """Best of REPEATS: µs of CPU per event, parse + take + the follower's frame."""
    dialect = OpenAIDialect()
    best = float("inf")
    for _ in range(REPEATS):
        job = GenerationJob(
            message_id="msg_bench",
            pool=None,  # type: ignore[arg-type]  # only stored; no attempt is made here
            model="gpt-test",
            messages=[{"role": "user", "content": "x"}],
            params=GenerationParams(max_tokens=EVENTS + 1),
            owner_id="usr_bench",
            conversation_id="conv_bench",
        )
        attempt = _Attempt(job, "bench", ModelHealth())
        frame, take, parse = job.buffer.frame, attempt.take, dialect.parse_event
        began = time.process_time()
        for index in range(EVENTS):
            take(parse(data))
            frame(index)
        best = min(best, (time.process_time() - began) / EVENTS * 1e6)
    return best


async def main() -> None:
    rich = hasattr(GenerationJob, "relay_rich")
    print(f"{'event':45} {'bytes':>6} {'µs of CPU per chunk':>20}")
    for name, data in kinds().items():
        if not rich and "text" not in name:
            print(f"{name:45} {len(data):>6} {'(dropped by this tree)':>20}")
            continue
        print(f"{name:45} {len(data):>6} {await per_chunk_us(data):>20.2f}")


if __name__ == "__main__":
    asyncio.run(main())
