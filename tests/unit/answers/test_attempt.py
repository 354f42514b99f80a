"""An attempt takes whatever an upstream sends (answers/attempt.py): no JSON of any shape,
through any dialect's parse, raises out of the parser or the answer."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import chatrelay.upstreams.llama_server  # noqa: F401  # registers the embedded server's dialect
from chatrelay.answers.answer import Answer
from chatrelay.answers.attempt import Attempt
from chatrelay.upstreams.chunk import UpstreamChunk, Usage
from chatrelay.upstreams.client import Upstream, UpstreamConfig
from chatrelay.upstreams.dialects import DIALECTS, GenerationParams
from chatrelay.upstreams.health import ModelHealth
from chatrelay.upstreams.stream import Timeouts, UpstreamStream

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)  # what JSON libraries encode
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=12,
)


def either(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A field as a chunk has it, or any JSON at all in its place."""
    return good | JSON


# Chunks as upstreams send them, where any field (at any depth) may be of any other shape.
CALL = st.fixed_dictionaries(
    {"index": st.integers(0, 3)},
    optional={
        "id": st.text(),
        "type": st.just("function"),
        "function": st.fixed_dictionaries({}, optional={"name": st.text(), "arguments": st.text()}),
    },
)


DELTA = st.fixed_dictionaries(
    {},
    optional={
        "role": either(st.just("assistant")),
        "content": either(st.text() | st.none()),
        "tool_calls": either(st.lists(either(CALL), max_size=2)),
        "function_call": either(st.fixed_dictionaries({"name": st.text(), "arguments": st.text()})),
        "reasoning_content": either(st.text()),
        "refusal": either(st.text()),
    },
)


CHOICE = st.fixed_dictionaries(
    {"index": st.just(0)},
    optional={
        "delta": either(DELTA),
        "message": either(DELTA),
        "finish_reason": either(st.sampled_from([None, "", "stop", "length", "tool_calls"])),
        "logprobs": either(st.none()),
    },
)


CHUNKS = st.fixed_dictionaries(
    {},
    optional={
        "choices": either(st.lists(either(CHOICE), max_size=2)),
        "usage": either(
            st.fixed_dictionaries(
                {},
                optional={
                    "prompt_tokens": either(st.integers(0, 10**6)),
                    "completion_tokens": either(st.integers(0, 10**6)),
                },
            )
        ),
        # Livepeer's pre-2025 format.
        "chunk": either(st.text()),
        "done": either(st.booleans()),
        "tokens_used": either(st.integers(0, 100)),
    },
)


async def test_no_json_of_any_shape_raises_out_of_the_parser_or_the_answer() -> None:
    answer = Answer(
        answer_id="msg_property",
        registry=None,  # type: ignore[arg-type]  # no attempt is made
        model="m",
        messages=[{"role": "user", "content": "x"}],
        params=GenerationParams(max_tokens=1_000_000),
        owner_id="usr_property",
        conversation_id="conv_property",
    )
    attempt = Attempt(answer, "fake", ModelHealth())
    # Each dialect (the embedded server's too) as the relay reads an event: the stream's parse.
    streams = {
        name: UpstreamStream(
            None,  # type: ignore[arg-type]  # no exchange: events are handed in directly
            Upstream(
                UpstreamConfig(name, name, "http://127.0.0.1:9", ("m",)),
                timeouts=Timeouts(1, 1, 1),
            ),
            Timeouts(1, 1, 1),
        )
        for name in DIALECTS
    }

    @settings(max_examples=1000, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
    @given(obj=JSON | CHUNKS, dialect=st.sampled_from(sorted(DIALECTS)))
    def check(obj: Any, dialect: str) -> None:
        stream = streams[dialect]
        stream.malformed = 0  # past MAX_MALFORMED_EVENTS in one answer the upstream fails
        chunk = stream._parse(orjson.dumps(obj).decode())  # never raises
        if chunk is None:  # skipped as malformed
            assert stream.malformed == 1
            return
        assert isinstance(chunk, UpstreamChunk)
        assert isinstance(chunk.content, str)
        assert chunk.finish_reason is None or isinstance(chunk.finish_reason, str)
        assert chunk.usage is None or isinstance(chunk.usage, Usage)
        delta = chunk.delta
        if delta is not None:  # relayed whole: of the shape clients' SDKs read
            assert isinstance(delta, dict)
            assert delta.get("content") is None or isinstance(delta["content"], str)
            calls = delta.get("tool_calls")
            assert calls is None or all(isinstance(call, dict) for call in calls)
            assert delta.get("function_call") is None or isinstance(delta["function_call"], dict)
        if chunk.error is None:
            attempt.take(chunk)  # and the answer takes what the parser gave: never raises
            answer.text  # noqa: B018  # its text still reads

    check()
