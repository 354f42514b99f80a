"""The Responses API (``/v1/responses``) answered by the embedded model: the real llama.cpp
server with the bundled SmolLM2 behind chatrelay (no upstream configured), driven by the
official ``openai`` package. A plain answer, stored and read back, and JSON mode."""

from __future__ import annotations

import json

import pytest

from chatrelay.config import EMBEDDED_MODEL
from tests.conftest import RunningRelay
from tests.e2e import test_embedded_structured

# The relay and its llama.cpp server are started once for these tests, in one event loop.
pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]


# The same relay fixture and client as the Chat Completions tests of the embedded model (one
# model start per module, as there).
embedded = test_embedded_structured.embedded
sdk = test_embedded_structured.sdk


async def test_a_plain_answer_is_stored(embedded: tuple[RunningRelay, str]) -> None:
    async with sdk(embedded) as client:
        response = await client.responses.create(
            model=EMBEDDED_MODEL,
            instructions="Be brief.",
            # Answered in about a dozen tokens at temperature 0: well within the bound, so
            # the response completes rather than being cut (incomplete).
            input="What is 2 + 2?",
            max_output_tokens=64,
            temperature=0,
        )
        again = await client.responses.retrieve(response.id)
    assert response.status == "completed"
    assert response.output_text.strip()
    # llama.cpp's server reports no usage: the tokens are counted with the model's vocabulary.
    assert response.usage is not None
    assert response.usage.input_tokens > 0 and 0 < response.usage.output_tokens <= 64
    assert response.model == EMBEDDED_MODEL
    assert again.id == response.id and again.output_text == response.output_text
    assert again.status == "completed" and again.instructions == "Be brief."


async def test_json_mode_answers_json(embedded: tuple[RunningRelay, str]) -> None:
    async with sdk(embedded) as client:
        response = await client.responses.create(
            model=EMBEDDED_MODEL,
            input='Reply with a JSON object with one key "ok" set to true.',
            text={"format": {"type": "json_object"}},
            max_output_tokens=48,
            temperature=0,
        )
    assert response.status == "completed"
    assert isinstance(json.loads(response.output_text), dict)
