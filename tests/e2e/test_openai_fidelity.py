"""The whole Chat Completions API carried faithfully, driven by the official `openai` package:
every request field and message shape reaches an OpenAI-dialect upstream as sent, every delta
comes back as the upstream sent it, and what an upstream cannot carry is refused by name."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import RunningRelay
from tests.e2e.test_openai_api import api_key, client_for
from tests.fake_upstream import (
    DROP,
    MODEL,
    FakeResponse,
    FakeUpstream,
    livepeer_events,
    openai_events,
    vllm_chunk,
    vllm_tool_call_events,
)
from tests.polling import wait_until

GPT = "gpt-test"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
TWO_CALLS = [
    ("call_a1", "get_weather", ['{"ci', 'ty": "Par', 'is"}']),
    ("call_b2", "get_weather", ['{"city": ', '"Oslo"}']),
]
IMAGE = {
    "type": "image_url",
    "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"},
}


def raw_frames(body: bytes) -> list[Any]:
    out: list[Any] = []
    for unit in body.split(b"\n\n"):
        if unit.startswith(b"data: "):
            data = unit[len(b"data: ") :]
            out.append("[DONE]" if data == b"[DONE]" else json.loads(data))
    return out


def deltas(body: bytes) -> list[dict[str, Any]]:
    """The delta of every chunk of an SSE body (chunks with choices), in order."""
    return [
        f["choices"][0]["delta"]
        for f in raw_frames(body)
        if isinstance(f, dict) and f.get("choices")
    ]


async def stream_raw(relay: RunningRelay, key: str, body: dict[str, Any]) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"}
    response = await relay.client.post("/v1/chat/completions", json=body, headers=headers)
    return response


# ------------------------------------------------------------------ requests carried whole


async def test_every_field_and_message_shape_reaches_the_upstream(
    relay_for, fake: FakeUpstream
) -> None:
    fake.script = openai_events(["ok"])
    messages: list[dict[str, Any]] = [
        {"role": "developer", "content": "Be terse."},
        {"role": "user", "content": [{"type": "text", "text": "Weather?"}, IMAGE]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "22C"},
    ]
    fields: dict[str, Any] = {
        "tools": [WEATHER_TOOL],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": False,
        "response_format": {"type": "json_object"},
        "stop": ["\n\n"],
        "seed": 7,
        "logprobs": True,
        "top_logprobs": 2,
        "presence_penalty": 0.5,
        "frequency_penalty": 0.25,
        "logit_bias": {"50256": -100},
        "user": "u-42",
        "reasoning_effort": "low",
        "metadata": {"k": "v"},
    }
    async with relay_for("openai") as relay:
        key, _ = await api_key(relay)
        async with client_for(relay, key) as client:
            await client.chat.completions.create(
                model=GPT,
                messages=messages,  # type: ignore[arg-type]
                max_completion_tokens=64,
                extra_body={"guided_choice": ["a", "b"]},  # a field chatrelay does not know
                **fields,
            )
    sent = fake.requests[-1].json
    assert sent["messages"] == messages
    for name, value in fields.items():
        assert sent[name] == value, name
    assert sent["guided_choice"] == ["a", "b"]
    assert sent["max_completion_tokens"] == 64 and "max_tokens" not in sent
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert sent["model"] == GPT


async def test_what_livepeer_cannot_carry_is_refused_by_name(relay_for, fake: FakeUpstream) -> None:
    fake.script = livepeer_events(["ok"])
    async with relay_for() as relay:
        key, _ = await api_key(relay)
        async with client_for(relay, key) as client:
            cases: list[tuple[dict[str, Any], str]] = [
                ({"tools": [WEATHER_TOOL]}, "tools"),
                ({"response_format": {"type": "json_object"}}, "response_format"),
                ({"seed": 3}, "seed"),
                (
                    {
                        "messages": [
                            {"role": "user", "content": [{"type": "text", "text": "x"}, IMAGE]}
                        ]
                    },
                    "messages[0].content[1]",
                ),
                (
                    {"messages": [{"role": "tool", "tool_call_id": "c", "content": "22C"}]},
                    "messages[0]",
                ),
            ]
            for extra, param in cases:
                body = {"model": MODEL, "messages": [{"role": "user", "content": "x"}], **extra}
                with pytest.raises(openai.BadRequestError) as refused:
                    await client.chat.completions.create(**body)
                error = refused.value
                assert error.code == "unsupported_parameter", param
                assert error.param == param
                assert "'livepeer'" in error.message  # the upstream, and what it takes
                assert "takes only" in error.message or "takes system, user" in error.message
            # Fields that change nothing are not refused: SDKs send them by default.
            answer = await client.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
                n=1,
                user="u",
                metadata={"a": "b"},
                store=False,
                tool_choice="none",
                stream=False,
            )
    assert answer.choices[0].message.content == "ok"
    assert len(fake.requests) == 1  # nothing refused was sent (or paid for)
    assert fake.requests[0].json["messages"] == [{"role": "user", "content": "hi"}]


async def test_drop_params_and_text_only_upstreams(relay_for, fake: FakeUpstream) -> None:
    fake.script = livepeer_events(["ok"])
    upstreams = [
        {
            "name": "lp",
            "dialect": "livepeer",
            "base_url": fake.base_url,
            "models": [MODEL],
            "drop_params": ["seed", "logit_bias"],
        },
    ]
    async with relay_for(livepeer_gateway_urls=[], upstreams=upstreams) as relay:
        key, _ = await api_key(relay)
        response = await stream_raw(
            relay,
            key,
            {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "seed": 4},
        )
    assert response.status_code == 200, response.text
    assert response.headers["x-chatrelay-dropped-params"] == "seed"
    assert "seed" not in fake.requests[-1].json

    fake.script = openai_events(["ok"])
    upstreams = [
        {
            "name": "text",
            "dialect": "openai",
            "base_url": fake.base_url,
            "models": [GPT],
            "text_only": True,
        },
    ]
    async with relay_for(livepeer_gateway_urls=[], upstreams=upstreams) as relay:
        key, _ = await api_key(relay, "text-only-user")
        image = {"role": "user", "content": [{"type": "text", "text": "what?"}, IMAGE]}
        refused = await stream_raw(relay, key, {"model": GPT, "messages": [image]})
        plain = await stream_raw(
            relay, key, {"model": GPT, "messages": [{"role": "user", "content": "x"}]}
        )
    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == "messages[0].content[1]"
    assert "text only" in refused.json()["error"]["message"]
    assert plain.status_code == 200


async def test_bad_messages_are_named_as_the_client_wrote_them(
    relay_for, fake: FakeUpstream
) -> None:
    async with relay_for("openai") as relay:
        key, _ = await api_key(relay)
        cases = [
            ([{"role": "user", "content": [{"type": "text"}]}], "messages[0].content[0].text"),
            ([{"role": "user", "content": None}], "messages[0].content"),
            ([{"role": "tool", "content": "x"}], "messages[0].tool_call_id"),
            (
                [{"role": "user", "content": "ok"}, {"role": "robot", "content": "x"}],
                "messages[1].role",
            ),
        ]
        for messages, param in cases:
            response = await stream_raw(relay, key, {"model": GPT, "messages": messages})
            assert response.status_code == 400
            assert response.json()["error"]["param"] == param
    assert fake.requests == []


# ------------------------------------------------------------------ responses carried whole


async def test_streamed_parallel_tool_calls_come_back_as_sent(
    relay_for, fake: FakeUpstream
) -> None:
    upstream_script = vllm_tool_call_events(TWO_CALLS)
    fake.script = upstream_script
    async with relay_for("openai") as relay:
        key, _ = await api_key(relay)
        raw = await stream_raw(
            relay,
            key,
            {
                "model": GPT,
                "messages": [{"role": "user", "content": "Paris and Oslo?"}],
                "tools": [WEATHER_TOOL],
                "stream": True,
            },
        )
        fake.script = vllm_tool_call_events(TWO_CALLS)
        async with client_for(relay, key) as client:
            async with client.chat.completions.stream(
                model=GPT,
                messages=[{"role": "user", "content": "Paris and Oslo?"}],
                tools=[WEATHER_TOOL],  # type: ignore[list-item]
            ) as stream:
                final = await stream.get_final_completion()
    # Same deltas, same order, same splits: each upstream delta is one relayed chunk.
    upstream_body = b"".join(s for s in upstream_script if isinstance(s, bytes))
    sent = [d for d in deltas(upstream_body) if "tool_calls" in d]
    relayed = [d for d in deltas(raw.content) if "tool_calls" in d]
    assert relayed == sent
    frames = raw_frames(raw.content)
    assert frames[-1] == "[DONE]"
    finish = [f["choices"][0]["finish_reason"] for f in frames[:-1] if f.get("choices")]
    assert finish[-1] == "tool_calls"
    calls = final.choices[0].message.tool_calls
    assert calls is not None
    assert [(c.id, c.function.name, c.function.arguments) for c in calls] == [
        ("call_a1", "get_weather", '{"city": "Paris"}'),
        ("call_b2", "get_weather", '{"city": "Oslo"}'),
    ]
    assert final.choices[0].finish_reason == "tool_calls"


async def ask_for_two_calls(
    client: openai.AsyncOpenAI,
) -> tuple[dict[str, Any], str, list[dict[str, Any]], list[dict[str, Any]]]:
    """Ask what makes the model call two tools (whole, not streamed), as an agent does; the
    question, the conversation's id, the history with the calls' results, and the results."""
    question = {"role": "user", "content": "Paris and Oslo?"}
    first = await client.chat.completions.with_raw_response.create(
        model=GPT,
        messages=[question],  # type: ignore[list-item]
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
    )
    answer = first.parse()
    message = answer.choices[0].message
    assert message.content is None and answer.choices[0].finish_reason == "tool_calls"
    assert message.tool_calls is not None and len(message.tool_calls) == 2
    results: list[dict[str, Any]] = [
        {"role": "tool", "tool_call_id": call.id, "content": f"result {call.id}"}
        for call in message.tool_calls
    ]
    history = [question, message.model_dump(exclude_none=True), *results]
    return question, first.headers["x-conversation-id"], history, results


async def test_whole_tool_calls_and_the_tool_result_round_trip(
    relay_for, fake: FakeUpstream
) -> None:
    fake.responses = [
        FakeResponse(script=vllm_tool_call_events(TWO_CALLS)),
        FakeResponse(script=openai_events(["Paris 22C, Oslo 8C."])),
        FakeResponse(script=openai_events(["Same as before."])),
    ]
    async with relay_for("openai") as relay:
        key, _ = await api_key(relay)
        async with client_for(relay, key) as client:
            question, conversation, history, results = await ask_for_two_calls(client)
            second = await client.chat.completions.create(
                model=GPT,
                messages=history,
                tools=[WEATHER_TOOL],  # type: ignore[arg-type,list-item]
            )
            # Continuing the stored conversation sends the stored tool calls back intact.
            third = await client.chat.completions.create(
                model=GPT,
                messages=[{"role": "user", "content": "And now?"}],
                extra_headers={"X-Conversation-Id": conversation},
            )
    assert second.choices[0].message.content == "Paris 22C, Oslo 8C."
    assert third.choices[0].message.content == "Same as before."
    assert (
        fake.requests[1].json["messages"][1]
        == history[1]
        == {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": "call_a1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                },
                {
                    "id": "call_b2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                },
            ],
        }
    )
    assert fake.requests[1].json["messages"][2:] == results
    stored = fake.requests[2].json["messages"]
    assert stored[0] == question
    assert stored[1]["tool_calls"] == fake.requests[1].json["messages"][1]["tool_calls"]
    assert stored[1]["content"] is None
    assert stored[-1] == {"role": "user", "content": "And now?"}


async def test_reasoning_refusal_and_logprobs_are_relayed(relay_for, fake: FakeUpstream) -> None:
    logprob = {
        "content": [{"token": "Hi", "logprob": -0.25, "bytes": [72, 105], "top_logprobs": []}],
        "refusal": None,
    }
    script = [
        vllm_chunk({"role": "assistant", "content": ""}),
        vllm_chunk({"reasoning_content": "Think"}),
        vllm_chunk({"reasoning_content": "ing."}),
        vllm_chunk({"content": "Hi"}, logprobs=logprob),
        vllm_chunk({"content": " there"}),
        vllm_chunk({}, "stop"),
        b"data: [DONE]\n\n",
    ]
    fake.script = script
    async with relay_for("openai") as relay:
        key, _ = await api_key(relay)
        body = {"model": GPT, "messages": [{"role": "user", "content": "x"}], "stream": True}
        raw = await stream_raw(relay, key, body)
        fake.script = script
        async with client_for(relay, key) as client:
            whole = await client.chat.completions.create(
                model=GPT, messages=[{"role": "user", "content": "x"}], logprobs=True
            )
        fake.script = [
            vllm_chunk({"role": "assistant", "content": None, "refusal": ""}),
            vllm_chunk({"refusal": "I can't"}),
            vllm_chunk({"refusal": " help."}),
            vllm_chunk({}, "stop"),
            b"data: [DONE]\n\n",
        ]
        async with client_for(relay, key) as client:
            refusal = await client.chat.completions.create(
                model=GPT, messages=[{"role": "user", "content": "x"}]
            )
    frames = [f for f in raw_frames(raw.content) if isinstance(f, dict) and f.get("choices")]
    relayed = deltas(raw.content)
    assert {"reasoning_content": "Think"} in relayed and {"reasoning_content": "ing."} in relayed
    with_logprobs = next(f for f in frames if f["choices"][0].get("logprobs"))
    assert with_logprobs["choices"][0] == {
        "index": 0,
        "delta": {"content": "Hi"},
        "logprobs": logprob,
        "finish_reason": None,
    }
    assert whole.choices[0].message.content == "Hi there"
    assert whole.choices[0].message.model_extra["reasoning_content"] == "Thinking."  # type: ignore[index]
    assert whole.choices[0].logprobs is not None
    assert whole.choices[0].logprobs.content is not None
    assert whole.choices[0].logprobs.content[0].token == "Hi"
    assert refusal.choices[0].message.refusal == "I can't help."
    assert refusal.choices[0].message.content is None


# ------------------------------------------------------------------ failover


@pytest.mark.parametrize("kind", ["tool_call", "json"])
async def test_a_cut_tool_call_or_json_answer_is_not_continued(
    relay_for, fake: FakeUpstream, kind: str
) -> None:
    if kind == "tool_call":
        start = vllm_tool_call_events([("call_x", "get_weather", ['{"ci', "ty"])])[:3]
        extra: dict[str, Any] = {"tools": [WEATHER_TOOL]}
    else:
        start = [
            vllm_chunk({"role": "assistant", "content": ""}),
            vllm_chunk({"content": '{"a": '}),
        ]
        extra = {"response_format": {"type": "json_object"}}
    fake.responses = [
        FakeResponse(script=[*start, DROP]),
        FakeResponse(script=openai_events(["1}"])),
    ]
    async with relay_for("openai", max_failovers=2, retry_deadline=10) as relay:
        key, _ = await api_key(relay)
        body = {"model": GPT, "messages": [{"role": "user", "content": "x"}], "stream": True}
        raw = await stream_raw(relay, key, {**body, **extra})
    frames = raw_frames(raw.content)
    assert frames[-1] == "[DONE]"
    assert frames[-2]["error"]["code"] == "upstream_disconnect"
    assert len(fake.requests) == 1  # no continuation spliced into the call or the JSON


async def test_a_stored_tool_call_is_replayed_to_a_late_re_attach(
    relay_for, fake: FakeUpstream
) -> None:
    fake.script = vllm_tool_call_events(TWO_CALLS)
    async with relay_for("openai") as relay:  # finished answers are not kept: replayed
        key, _ = await api_key(relay)
        first = await stream_raw(
            relay,
            key,
            {
                "model": GPT,
                "messages": [{"role": "user", "content": "x"}],
                "tools": [WEATHER_TOOL],
            },
        )
        message_id = first.headers["x-message-id"]
        replay = await relay.client.get(
            f"/api/messages/{message_id}/stream", headers={"Authorization": f"Bearer {key}"}
        )
    [calls] = [d["tool_calls"] for d in deltas(replay.content) if "tool_calls" in d]
    assert [(c["index"], c["id"], c["function"]["arguments"]) for c in calls] == [
        (0, "call_a1", '{"city": "Paris"}'),
        (1, "call_b2", '{"city": "Oslo"}'),
    ]
    assert raw_frames(replay.content)[-1] == "[DONE]"


async def test_reasoning_counts_as_progress_for_the_timers(relay_for, fake: FakeUpstream) -> None:
    """A model that thinks longer than the first-token timeout is not cut while its reasoning
    streams; the stall timer watches it instead."""
    thinking = asyncio.Event()
    fake.script = [
        vllm_chunk({"role": "assistant", "content": ""}),
        vllm_chunk({"reasoning_content": "hm"}),
        thinking,  # still thinking, past the first-token timeout: held until the test says
        vllm_chunk({"reasoning_content": "m."}),
        vllm_chunk({"content": "Yes."}),
        vllm_chunk({}, "stop"),
        b"data: [DONE]\n\n",
    ]
    async with relay_for("openai", first_token_timeout=2, stall_timeout=30) as relay:
        key, _ = await api_key(relay)
        async with client_for(relay, key) as client:
            asking = asyncio.create_task(
                client.chat.completions.create(
                    model=GPT, messages=[{"role": "user", "content": "x"}]
                )
            )
            await wait_until(lambda: fake.first_write_done.is_set())
            # Longer than the first-token timeout: a timer that took the reasoning for
            # nothing would have cut the answer by now (a loaded machine only delays it).
            await asyncio.sleep(3)
            thinking.set()
            answer = await asking
    assert answer.choices[0].message.content == "Yes."
    assert answer.choices[0].message.model_extra["reasoning_content"] == "hmm."  # type: ignore[index]


async def test_empty_extras_keep_plain_text_plain(relay_for, fake: FakeUpstream) -> None:
    """OpenRouter-style ``reasoning_details: []`` with every token says nothing: the text is
    plain (stored without extra, and still continued elsewhere when cut)."""
    fake.responses = [
        FakeResponse(
            script=[
                vllm_chunk({"role": "assistant", "content": ""}),
                vllm_chunk({"content": "Half", "reasoning": None, "reasoning_details": []}),
                vllm_chunk({"content": " way", "tool_calls": []}),
                DROP,
            ]
        ),
        FakeResponse(script=openai_events([" there."])),
    ]
    async with relay_for("openai", max_failovers=1, retry_deadline=10) as relay:
        key, _ = await api_key(relay)
        body = {"model": GPT, "messages": [{"role": "user", "content": "x"}], "stream": True}
        raw = await stream_raw(relay, key, body)
        message_id = raw.headers["x-message-id"]
        answer = relay.service.answers.get(message_id)
    assert deltas(raw.content)[1:4] == [
        {"content": "Half"},
        {"content": " way"},
        {"content": " there."},
    ]
    assert len(fake.requests) == 2  # continued: plain text is spliceable
    assert answer is None or answer.rich is None


async def test_parallel_tool_results_all_reach_the_upstream_of_a_kept_conversation(
    relay_for, fake: FakeUpstream
) -> None:
    fake.responses = [
        FakeResponse(script=vllm_tool_call_events(TWO_CALLS)),
        FakeResponse(script=openai_events(["Both done."])),
    ]
    async with relay_for("openai") as relay:
        key, _ = await api_key(relay)
        async with client_for(relay, key) as client:
            _, conversation, history, results = await ask_for_two_calls(client)
            await client.chat.completions.create(
                model=GPT,
                messages=history,  # type: ignore[arg-type]
                extra_headers={"X-Conversation-Id": conversation},
            )
    sent = fake.requests[1].json["messages"]
    assert sent[-2:] == results  # both results, after the stored call
    assert [c["id"] for c in sent[-3]["tool_calls"]] == ["call_a1", "call_b2"]


async def test_text_of_a_rich_delta_reaches_livepeer_clients_and_bad_shapes_are_skipped(
    relay_for, fake: FakeUpstream
) -> None:
    fake.script = [
        vllm_chunk({"role": "assistant", "content": ""}),
        b'data: {"choices": "not a list of objects"}\n\n',
        vllm_chunk({"content": "Hi", "reasoning_content": "greet"}),
        vllm_chunk({"content": " all"}),
        vllm_chunk({}, "stop"),
        b"data: [DONE]\n\n",
    ]
    async with relay_for("openai") as relay:
        key, _ = await api_key(relay)
        body = {"model": GPT, "messages": [{"role": "user", "content": "x"}], "max_tokens": 9}
        response = await relay.client.post(
            "/llm", json={**body, "stream": True}, headers={"Authorization": f"Bearer {key}"}
        )
    chunks = [f for f in raw_frames(response.content) if isinstance(f, dict)]
    assert "".join(c["choices"][0]["delta"]["content"] for c in chunks) == "Hi all"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
