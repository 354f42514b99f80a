"""What each upstream can carry of a request (answers/carriage.py), decided on its own: carried
whole, refused by name, or dropped where the operator said so."""

from __future__ import annotations

import pytest

from chatrelay.answers.carriage import carriage
from chatrelay.errors import ChatRelayError
from chatrelay.upstreams.client import Upstream, UpstreamConfig
from chatrelay.upstreams.stream import Timeouts

TIMEOUTS = Timeouts(connect=1, first_token=1, stall=1)
TEXT = [{"role": "user", "content": "Hi"}]
IMAGE = [
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}},
        ],
    }
]
TOOLS = {"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}


def upstream(name: str, dialect: str = "openai", **more: object) -> Upstream:
    config = UpstreamConfig(
        name=name, dialect=dialect, base_url=f"http://{name}.invalid", models=("m",), **more
    )  # type: ignore[arg-type]
    return Upstream(config, timeouts=TIMEOUTS)


def refusal(*args: object) -> ChatRelayError:
    with pytest.raises(ChatRelayError) as refused:
        carriage(*args)  # type: ignore[arg-type]
    assert refused.value.status == 400 and refused.value.code == "unsupported_parameter"
    return refused.value


def test_an_openai_upstream_carries_every_field_and_shape() -> None:
    extra = {**TOOLS, "response_format": {"type": "json_object"}, "seed": 1, "x_unknown": 2}
    carried = carriage([upstream("oa")], IMAGE, extra)
    assert carried.upstreams == {"oa"} and carried.dropped == ()


def test_livepeer_refuses_tools_by_name_and_says_what_it_takes() -> None:
    error = refusal([upstream("lp", "livepeer")], TEXT, TOOLS)
    assert error.param == "tools"
    assert "'lp'" in error.message and "max_tokens, temperature" in error.message


def test_livepeer_refuses_an_image_part_by_its_place() -> None:
    error = refusal([upstream("lp", "livepeer")], IMAGE, {})
    assert error.param == "messages[0].content[1]" and "'image_url' part" in error.message


def test_a_text_only_upstream_refuses_media_but_takes_tools() -> None:
    error = refusal([upstream("t", text_only=True)], IMAGE, {})
    assert error.param == "messages[0].content[1]" and "text_only" in error.message
    assert carriage([upstream("t", text_only=True)], TEXT, TOOLS).upstreams == {"t"}


def test_fields_that_change_nothing_are_never_refused() -> None:
    defaults = {"n": 1, "stream_options": {"include_usage": True}, "user": "u", "store": False,
                "tool_choice": "none", "metadata": {"a": "b"}}  # fmt: skip
    assert carriage([upstream("lp", "livepeer")], TEXT, defaults).upstreams == {"lp"}
    assert refusal([upstream("lp", "livepeer")], TEXT, {"n": 2}).param == "n"


def test_only_the_upstreams_that_can_carry_it_answer() -> None:
    both = [upstream("lp", "livepeer"), upstream("oa")]
    assert carriage(both, TEXT, TOOLS).upstreams == {"oa"}
    assert carriage(both, TEXT, {}).upstreams == {"lp", "oa"}


def test_an_operators_drop_params_drops_instead_of_refusing_and_says_so() -> None:
    lenient = upstream("lp", "livepeer", drop_params=("seed", "stop"))
    carried = carriage([lenient], TEXT, {"seed": 3, "stop": ["\n"]})
    assert carried.upstreams == {"lp"} and carried.dropped == ("seed", "stop")
    assert refusal([lenient], TEXT, {"seed": 3, **TOOLS}).param == "tools"
