"""Livepeer's frames of an answer (http/routes/livepeer.py) from the answer's byte templates."""

from __future__ import annotations

from types import SimpleNamespace

import orjson

from chatrelay.answers.frames import OpenAIFrames
from chatrelay.http.routes.livepeer import LivepeerFrames
from chatrelay.upstreams.chunk import Usage


def test_a_chunk_is_the_json_of_its_token_whatever_the_names_hold() -> None:
    """The byte template of a token survives a '%' in the model's name and any token text."""
    encoder = OpenAIFrames("chatcmpl-1", "acme/100%-model")
    answer = SimpleNamespace(encoder=encoder, model=encoder.model, usage=Usage(7, 2))
    frames = LivepeerFrames(answer)  # type: ignore[arg-type]
    for token in ['say "%s" 100%', "\n\u2028😀\\", "%d%%"]:
        frame = frames.content(orjson.dumps(token)[1:-1], 3)
        assert frame.startswith(b"data: ") and frame.endswith(b"\n\n")
        chunk = orjson.loads(frame[len(b"data: ") :])
        assert chunk["choices"][0]["delta"] == {"content": token, "role": "assistant"}
        assert chunk["model"] == "acme/100%-model"
        assert chunk["usage"] == {"completion_tokens": 3, "prompt_tokens": 7, "total_tokens": 10}
