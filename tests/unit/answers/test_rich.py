"""Gathering an answer's deltas into its assistant message (answers/rich.py), on its own."""

from __future__ import annotations

from chatrelay.answers.rich import RichParts


def gathered(*deltas: dict) -> RichParts:
    rich = RichParts()
    for delta in deltas:
        rich.take(delta)
    return rich


def test_two_parallel_tool_calls_are_assembled_by_index_as_the_sdks_do() -> None:
    rich = gathered(
        {"tool_calls": [{"index": 0, "id": "call_a", "type": "function",
                         "function": {"name": "weather", "arguments": ""}}]},
        {"tool_calls": [{"index": 1, "id": "call_b", "type": "function",
                         "function": {"name": "time", "arguments": '{"tz":'}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"city": "Pa'}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": 'ris"}'}}]},
        {"tool_calls": [{"index": 1, "function": {"arguments": ' "UTC"}'}}]},
    )  # fmt: skip
    assert rich.tool_calls() == [
        {"id": "call_a", "type": "function",
         "function": {"name": "weather", "arguments": '{"city": "Paris"}'}},
        {"id": "call_b", "type": "function",
         "function": {"name": "time", "arguments": '{"tz": "UTC"}'}},
    ]  # fmt: skip
    fields = rich.message_fields(has_text=False)
    assert fields is not None and fields["content"] is None and len(fields["tool_calls"]) == 2


def test_reasoning_and_refusal_pieces_are_joined_and_other_fields_kept() -> None:
    rich = gathered(
        {"reasoning_content": "Let me "},
        {"reasoning_content": "think."},
        {"refusal": "I can't"},
        {"refusal": " help."},
        {"annotations": [{"type": "x"}]},
    )
    assert rich.message_fields(has_text=True) == {
        "reasoning_content": "Let me think.",
        "refusal": "I can't help.",
        "annotations": [{"type": "x"}],
    }


def test_fragments_without_an_index_continue_the_last_call() -> None:
    rich = gathered(
        {"tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": "{"}}]},
        {"tool_calls": [{"function": {"arguments": "}"}}]},
        {"tool_calls": [{"id": "c2", "function": {"name": "g", "arguments": "[]"}}]},
    )
    calls = rich.tool_calls()
    assert [(c["id"], c["function"]["arguments"]) for c in calls] == [("c1", "{}"), ("c2", "[]")]


def test_the_legacy_function_call_is_kept_as_such() -> None:
    rich = gathered(
        {"function_call": {"name": "f", "arguments": '{"a"'}},
        {"function_call": {"arguments": ": 1}"}},
    )
    assert rich.message_fields(has_text=False) == {
        "function_call": {"name": "f", "arguments": '{"a": 1}'}
    }


def test_text_is_not_gathered_here() -> None:
    assert gathered({"content": "Hi", "reasoning_content": "r"}).message_fields(has_text=True) == {
        "reasoning_content": "r"
    }
