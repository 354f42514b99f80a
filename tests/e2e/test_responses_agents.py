"""OpenAI's Agents SDK (``openai-agents``) with chatrelay as its Responses API, over the fake
upstream: an agent with one function tool runs to its final output, whole and streamed. The
SDK drives the loop itself (call the model, run the tool, send its output back, call again),
so these show that what it sends and reads round-trips through ``/v1/responses``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from agents import Agent, OpenAIResponsesModel, RunConfig, Runner, function_tool
from agents.tracing import get_trace_provider
from agents.tracing.processors import BackendSpanExporter
from openai import AsyncOpenAI
from openai.types.responses import ResponseTextDeltaEvent

from tests.e2e.test_openai_api import api_key, client_for
from tests.fake_upstream import FakeResponse, FakeUpstream, openai_events, vllm_tool_call_events

GPT = "gpt-test"
CALL = [("call_w1", "get_weather", ['{"city": ', '"Paris"}'])]
ANSWER = ["It is ", "sunny ", "in Paris."]
# No network here: tracing, which would post to api.openai.com, is off for every run.
OFFLINE = RunConfig(tracing_disabled=True)


@pytest.fixture
def exported(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """What the SDK's tracing would have posted to api.openai.com, kept here instead; checked
    empty after a flush of whatever it still held."""
    sent: list[Any] = []
    monkeypatch.setattr(BackendSpanExporter, "export", lambda self, items: sent.extend(items))
    yield sent
    get_trace_provider().force_flush()
    assert sent == []


def weather_agent(client: AsyncOpenAI, cities: list[str]) -> Agent[Any]:
    """An agent whose model is chatrelay's Responses API and whose one tool records its
    argument (the SDK parses the model's JSON arguments into ``city``)."""

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        cities.append(city)
        return f"22C and sunny in {city}"

    model = OpenAIResponsesModel(model=GPT, openai_client=client)
    return Agent(name="Weather", instructions="Answer briefly.", tools=[get_weather], model=model)


def script_call_then_answer(fake: FakeUpstream) -> None:
    fake.responses = [
        FakeResponse(script=vllm_tool_call_events(CALL)),
        FakeResponse(script=openai_events(ANSWER)),
    ]


def assert_the_tool_result_went_back(fake: FakeUpstream) -> None:
    assert len(fake.requests) == 2
    assert fake.requests[0].json["tools"][0]["function"]["name"] == "get_weather"
    history = fake.requests[1].json["messages"]
    assert history[0] == {"role": "system", "content": "Answer briefly."}
    assert history[1] == {"role": "user", "content": "Weather in Paris?"}
    [call] = history[2]["tool_calls"]
    assert (call["id"], call["function"]["arguments"]) == ("call_w1", '{"city": "Paris"}')
    assert history[3] == {
        "role": "tool",
        "tool_call_id": "call_w1",
        "content": "22C and sunny in Paris",
    }


@pytest.mark.usefixtures("exported")
async def test_an_agent_runs_its_tool_and_answers(relay_for, fake: FakeUpstream) -> None:
    script_call_then_answer(fake)
    cities: list[str] = []
    async with relay_for("openai") as relay:
        key, _ = await api_key(relay)
        async with client_for(relay, key) as client:
            agent = weather_agent(client, cities)
            result = await Runner.run(agent, "Weather in Paris?", run_config=OFFLINE)
    assert result.final_output == "It is sunny in Paris."
    assert cities == ["Paris"]
    assert_the_tool_result_went_back(fake)


@pytest.mark.usefixtures("exported")
async def test_a_streamed_run_gives_the_answer_in_deltas(relay_for, fake: FakeUpstream) -> None:
    script_call_then_answer(fake)
    cities: list[str] = []
    async with relay_for("openai") as relay:
        key, _ = await api_key(relay)
        async with client_for(relay, key) as client:
            agent = weather_agent(client, cities)
            result = Runner.run_streamed(agent, "Weather in Paris?", run_config=OFFLINE)
            deltas = [
                event.data.delta
                async for event in result.stream_events()
                if event.type == "raw_response_event"
                and isinstance(event.data, ResponseTextDeltaEvent)
            ]
    assert result.is_complete
    assert deltas == ANSWER
    assert "".join(deltas) == result.final_output == "It is sunny in Paris."
    assert cities == ["Paris"]
    assert_the_tool_result_went_back(fake)
