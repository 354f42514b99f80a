"""Messages of every shape (tool calls, tool results, content parts, reasoning, refusals) are
stored with their conversation and given back as they were sent: upstream again, through the
conversation API and in its exports; inline attachments are bounded per message and per user.
On SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import copy
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import orjson
import pytest
from sqlalchemy import text

from chatrelay.store import answer_rows, conversations
from chatrelay.store.conversations import append_turn
from chatrelay.store.database import Database, upgrade_database
from chatrelay.store.message_rows import (
    AttachmentLimits,
    AttachmentQuotaExceeded,
    AttachmentsTooLarge,
    attachment_bytes,
    message_extra,
    upstream_message,
)
from chatrelay.store.users import create_guest
from chatrelay.text import message_text
from tests.e2e.test_openai_api import api_key
from tests.fake_upstream import livepeer_events, openai_events, vllm_tool_call_events
from tests.sse_client import read_answer, user

PNG = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(300)).decode()
WEATHER_CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "C"}'},
}
# A conversation of every shape OpenAI's Chat Completions API takes (openai-wire.md 1.2).
SHAPES: list[dict[str, Any]] = [
    {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
    {"role": "system", "content": "Be brief.", "name": "house-rules"},
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "What is in "},
            {"type": "image_url", "image_url": {"url": PNG, "detail": "low"}},
            {"type": "text", "text": "this picture, and the weather in Paris?"},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
        ],
    },
    {
        "role": "assistant",
        "content": None,
        "reasoning_content": "The user wants the weather: call the tool.",
        "tool_calls": [WEATHER_CALL],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "22C and sunny"},
    {"role": "assistant", "content": "", "refusal": "I cannot describe people in pictures."},
    {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "ok"}]},
    {"role": "user", "content": "Thanks!"},
]


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[tuple[Database, str]]:
    """A migrated database and a user in it: (db, owner id)."""
    await asyncio.to_thread(upgrade_database, database_url)
    db = Database(database_url)
    async with db.transaction() as session:
        owner_id = (await create_guest(session)).id
    try:
        yield db, owner_id
    finally:
        await db.close()


async def stored_rows(db: Database, owner_id: str, conversation_id: str) -> list[Any]:
    async with db.read() as session:
        return list(
            await conversations.messages_of(
                session, owner_id=owner_id, conversation_id=conversation_id
            )
        )


async def exchange(
    db: Database,
    owner_id: str,
    questions: list[dict[str, Any]],
    *,
    conversation_id: str | None = None,
    limits: AttachmentLimits | None = None,
) -> tuple[str, str]:
    return await db.write(
        partial(
            append_turn,
            owner_id=owner_id,
            conversation_id=conversation_id,
            title="shapes",
            questions=questions,
            model="gpt-test",
            instance_id=None,
            attachment_limits=limits,
        )
    )


async def finish(db: Database, owner_id: str, answer_id: str, text_: str, extra: Any) -> None:
    await db.write(
        partial(
            answer_rows.finish_answer,
            answer_id=answer_id,
            content=text_,
            status="complete",
            finish_reason="tool_calls" if extra and "tool_calls" in extra else "stop",
            error=None,
            prompt_tokens=30,
            completion_tokens=12,
            upstream="openai",
            extra=extra,
        )
    )


def test_message_extra_keeps_what_is_not_the_plain_text() -> None:
    assert message_extra({"role": "user", "content": "hi"}) is None
    assert message_extra(SHAPES[1]) == {"name": "house-rules"}
    assert message_extra(SHAPES[3]) == {
        "content": None,
        "reasoning_content": "The user wants the weather: call the tool.",
        "tool_calls": [WEATHER_CALL],
    }
    assert message_extra(SHAPES[4]) == {"tool_call_id": "call_1"}
    assert message_text(SHAPES[2]) == ("What is in this picture, and the weather in Paris?")
    assert message_text({"role": "assistant", "content": None}) == ""


def test_attachment_bytes_are_the_inline_data_of_every_kind() -> None:
    audio = base64.b64encode(bytes(120)).decode()
    extra = message_extra(
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "data: not an attachment, just text"},
                {"type": "image_url", "image_url": {"url": PNG}},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                {"type": "input_audio", "input_audio": {"data": audio, "format": "wav"}},
                {"type": "file", "file": {"file_data": "JVBERi0x", "filename": "a.pdf"}},
                {"type": "file", "file": {"file_id": "file-abc"}},
                {"type": "video_url", "video_url": {"url": "data:video/mp4;base64,AAAA"}},
            ],
        }
    )
    assert attachment_bytes(extra) == len(PNG) + len(audio) + len("JVBERi0x") + len(
        "data:video/mp4;base64,AAAA"
    )
    assert attachment_bytes(None) == 0
    assert attachment_bytes(message_extra({"role": "tool", "tool_call_id": "x"})) == 0


async def test_every_shape_is_stored_and_goes_upstream_as_it_was_sent(
    store: tuple[Database, str],
) -> None:
    db, owner_id = store
    sent = copy.deepcopy(SHAPES)
    conversation_id, answer_id = await exchange(db, owner_id, sent)
    answer_extra = {"content": None, "tool_calls": [{**WEATHER_CALL, "id": "call_9"}]}
    await finish(db, owner_id, answer_id, "", answer_extra)

    rows = await stored_rows(db, owner_id, conversation_id)
    assert [upstream_message(row) for row in rows] == [
        *SHAPES,
        {"role": "assistant", "content": None, "tool_calls": [{**WEATHER_CALL, "id": "call_9"}]},
    ]
    # Key order survives too (JSON, not JSONB, on PostgreSQL).
    assert list(upstream_message(rows[3])) == ["role", "content", "reasoning_content", "tool_calls"]
    assert [row.content for row in rows[:4]] == [
        "Answer in French.",
        "Be brief.",
        "What is in this picture, and the weather in Paris?",
        "",
    ]
    # A plain message costs nothing: SQL NULL, not a JSON null.
    async with db.engine.connect() as connection:
        plain = await connection.scalar(
            text("SELECT count(*) FROM messages WHERE extra IS NULL AND content = 'Thanks!'")
        )
    assert plain == 1
    assert [row.attachment_bytes for row in rows[:3]] == [None, None, len(PNG)]


async def test_an_edit_replaces_the_text_and_keeps_the_images(
    store: tuple[Database, str],
) -> None:
    db, owner_id = store
    question = SHAPES[2]
    conversation_id, answer_id = await exchange(db, owner_id, [question])
    await finish(db, owner_id, answer_id, "A cat.", None)
    async with db.transaction() as session:
        await conversations.rewind_to_last_question(
            session, owner_id=owner_id, conversation_id=conversation_id, new_text="Which breed?"
        )
    (edited,) = await stored_rows(db, owner_id, conversation_id)
    assert upstream_message(edited) == {
        "role": "user",
        "content": [
            {"type": "text", "text": "Which breed?"},
            question["content"][1],
            question["content"][3],
        ],
    }
    assert edited.content == "Which breed?"


async def test_attachments_over_a_message_s_bound_are_refused_and_nothing_is_stored(
    store: tuple[Database, str],
) -> None:
    db, owner_id = store
    limits = AttachmentLimits(per_message=len(PNG) - 1, per_user=0)
    with pytest.raises(AttachmentsTooLarge) as refused:
        await exchange(db, owner_id, [SHAPES[2]], limits=limits)
    assert refused.value.status == 413
    assert refused.value.body()["error"]["code"] == "attachments_too_large"
    assert "CHATRELAY_MAX_ATTACHMENT_BYTES" in refused.value.message
    async with db.engine.connect() as connection:
        counts = [
            await connection.scalar(text(f"SELECT count(*) FROM {table}"))
            for table in ("conversations", "messages")
        ]
    assert counts == [0, 0]
    # Exactly at the bound it is stored; text alone never counts.
    at_bound = AttachmentLimits(per_message=len(PNG), per_user=0)
    await exchange(
        db, owner_id, [SHAPES[2], {"role": "user", "content": "x" * 5000}], limits=at_bound
    )


async def test_a_user_s_attachments_are_bounded_in_total_until_some_are_deleted(
    store: tuple[Database, str],
) -> None:
    db, owner_id = store
    async with db.transaction() as session:
        other_id = (await create_guest(session)).id
    limits = AttachmentLimits(per_message=0, per_user=2 * len(PNG) + 10)
    first, _ = await exchange(db, owner_id, [SHAPES[2]], limits=limits)
    await exchange(db, owner_id, [SHAPES[2]], conversation_id=first, limits=limits)
    # Someone else's attachments are theirs: they do not count against this user.
    await exchange(db, other_id, [SHAPES[2], SHAPES[2]], limits=limits)

    with pytest.raises(AttachmentQuotaExceeded) as refused:
        await exchange(db, owner_id, [SHAPES[2]], limits=limits)
    error = refused.value.body()["error"]
    assert refused.value.status == 413
    assert error["code"] == "attachment_quota_exceeded"
    assert (error["stored"], error["size"]) == (2 * len(PNG), len(PNG))
    assert "CHATRELAY_USER_ATTACHMENT_BYTES" in error["message"]
    # Plain text still goes through.
    await exchange(db, owner_id, [{"role": "user", "content": "no pictures"}], limits=limits)

    async with db.transaction() as session:
        await conversations.delete_conversation(session, owner_id=owner_id, conversation_id=first)
    await exchange(db, owner_id, [SHAPES[2]], limits=limits)


# ---- through the relay: the API, the exports, continuing ----------------------------------


async def stored_tool_conversation(relay: Any) -> str:
    """A conversation begun on the page, continued with tool calls stored as the relay does."""
    async with relay.client.stream("POST", "/api/chat", json=user("Weather in Paris?")) as r:
        assert r.status_code == 200
        await read_answer(r)
        conversation_id = r.headers["x-conversation-id"]
    db: Database = relay.context.db
    owner_id = await _owner(db, conversation_id)
    _, answer_id = await exchange(db, owner_id, [SHAPES[2]], conversation_id=conversation_id)
    await finish(db, owner_id, answer_id, "", message_extra(SHAPES[3]))
    _, answer_id = await exchange(db, owner_id, [SHAPES[4]], conversation_id=conversation_id)
    await finish(db, owner_id, answer_id, "It is 22C.", {"reasoning_content": "Hot <b>day</b>"})
    return conversation_id


async def _owner(db: Database, conversation_id: str) -> str:
    async with db.engine.connect() as connection:
        owner: str = await connection.scalar(
            text("SELECT user_id FROM conversations WHERE id = :id"), {"id": conversation_id}
        )
    return owner


async def test_the_api_and_the_json_export_give_each_message_s_extra(
    relay_for, fake, database_url
) -> None:
    fake.script = livepeer_events(["Let me check."])
    async with relay_for(database_url=database_url) as relay:
        conversation_id = await stored_tool_conversation(relay)
        shown = (await relay.client.get(f"/api/conversations/{conversation_id}")).json()
        exported = await relay.client.get(f"/api/conversations/{conversation_id}/export")

    messages = shown["messages"]
    assert [(m["role"], m["extra"]) for m in messages] == [
        ("user", None),
        ("assistant", None),
        ("user", {"content": SHAPES[2]["content"]}),
        ("assistant", {k: v for k, v in SHAPES[3].items() if k != "role"}),
        ("tool", {"tool_call_id": "call_1"}),
        ("assistant", {"reasoning_content": "Hot <b>day</b>"}),
    ]
    assert messages[4]["content"] == "22C and sunny"
    assert exported.status_code == 200
    assert orjson.loads(exported.content)["messages"] == messages


async def test_the_markdown_export_shows_tool_calls_results_reasoning_and_images(
    relay_for, fake, database_url
) -> None:
    fake.script = livepeer_events(["Let me check."])
    async with relay_for(database_url=database_url) as relay:
        conversation_id = await stored_tool_conversation(relay)
        exported = await relay.client.get(
            f"/api/conversations/{conversation_id}/export", params={"format": "markdown"}
        )

    assert exported.status_code == 200
    body = exported.text
    assert "## You\n\nWhat is in this picture, and the weather in Paris?\n" in body
    assert "- image_url: <https://example.com/cat.jpg>" in body
    # A data URL is shortened (the JSON export has it whole), with its size.
    assert f"- image_url: `{PNG[:48]}…` ({len(PNG):,} bytes)" in body
    assert PNG not in body
    assert (
        "> **Reasoning**\n>\n> The user wants the weather: call the tool.\n\n"
        '**Tool call** `get_weather` (call_1):\n\n```json\n{\n  "city": "Paris",\n'
        '  "unit": "C"\n}\n```\n'
    ) in body
    assert "## Tool result (call_1)\n\n22C and sunny\n" in body
    assert "> **Reasoning**\n>\n> Hot <b>day</b>\n\nIt is 22C.\n" in body


# ---- end to end through /v1/chat/completions -------------------------------------------------

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


async def test_v1_tool_calls_are_stored_and_sent_back_when_the_conversation_goes_on(
    relay_for, fake, database_url
) -> None:
    question = {
        "role": "user",
        "content": [
            {"type": "text", "text": "Weather where this was taken?"},
            {"type": "image_url", "image_url": {"url": PNG}},
        ],
    }
    fake.script = vllm_tool_call_events([("call_a", "get_weather", ['{"ci', 'ty": "Paris"}'])])
    async with relay_for("openai", database_url=database_url) as relay:
        key, _ = await api_key(relay)
        headers = {"Authorization": f"Bearer {key}"}
        body = {"model": "gpt-test", "messages": [question], "tools": [WEATHER_TOOL]}
        first = await relay.client.post(
            "/v1/chat/completions", json={**body, "stream": True}, headers=headers
        )
        assert first.status_code == 200, first.text
        conversation_id = first.headers["x-conversation-id"]

        fake.script = openai_events(["It is 22C in Paris."])
        result = {"role": "tool", "tool_call_id": "call_a", "content": "22C"}
        second = await relay.client.post(
            "/v1/chat/completions",
            json={"model": "gpt-test", "messages": [result], "tools": [WEATHER_TOOL]},
            headers={**headers, "X-Conversation-Id": conversation_id},
        )
        assert second.status_code == 200, second.text
        shown = await relay.client.get(f"/api/conversations/{conversation_id}", headers=headers)
        markdown = await relay.client.get(
            f"/api/conversations/{conversation_id}/export",
            params={"format": "markdown"},
            headers=headers,
        )

    call = {
        "id": "call_a",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
    }
    # The history goes upstream as it was: the parts, the call (merged from its deltas), the
    # result after it.
    history = fake.requests[-1].json["messages"]
    assert history[0] == question
    assert history[1] == {"role": "assistant", "content": None, "tool_calls": [call]}
    assert history[2] == result
    messages = shown.json()["messages"]
    assert [(m["role"], m["content"]) for m in messages] == [
        ("user", "Weather where this was taken?"),
        ("assistant", ""),
        ("tool", "22C"),
        ("assistant", "It is 22C in Paris."),
    ]
    assert messages[0]["extra"] == {"content": question["content"]}
    assert messages[1]["extra"] == {"content": None, "tool_calls": [call]}
    assert messages[1]["finish_reason"] == "tool_calls"
    assert messages[2]["extra"] == {"tool_call_id": "call_a"}
    assert messages[3]["extra"] is None
    assert '**Tool call** `get_weather` (call_a):\n\n```json\n{\n  "city": "Paris"\n}\n```' in (
        markdown.text
    )
    assert "## Tool result (call_a)\n\n22C\n" in markdown.text


async def test_v1_attachments_over_their_bounds_are_refused_before_anything_is_stored(
    relay_for, fake, database_url
) -> None:
    def asking(*urls: str) -> dict[str, Any]:
        parts = [{"type": "image_url", "image_url": {"url": url}} for url in urls]
        content = [{"type": "text", "text": "What is this?"}, *parts]
        return {"model": "gpt-test", "messages": [{"role": "user", "content": content}]}

    fake.script = openai_events(["A small square."])
    settings = {"max_attachment_bytes": len(PNG) + 10, "user_attachment_bytes": 2 * len(PNG)}
    async with relay_for("openai", database_url=database_url, **settings) as relay:
        key, _ = await api_key(relay)
        headers = {"Authorization": f"Bearer {key}"}
        too_big = await relay.client.post(
            "/v1/chat/completions", json=asking(PNG, PNG), headers=headers
        )
        listed = (await relay.client.get("/api/conversations", headers=headers)).json()
        asked = len(fake.requests)
        # Within both bounds; then one more would pass the user's total.
        for _ in range(2):
            fine = await relay.client.post(
                "/v1/chat/completions", json=asking(PNG), headers=headers
            )
            assert fine.status_code == 200, fine.text
        over = await relay.client.post("/v1/chat/completions", json=asking(PNG), headers=headers)
        # Links are no attachments: they are never counted.
        linked = await relay.client.post(
            "/v1/chat/completions", json=asking("https://example.com/a.png"), headers=headers
        )

    assert too_big.status_code == 413
    error = too_big.json()["error"]
    assert error["code"] == "attachments_too_large"
    assert "CHATRELAY_MAX_ATTACHMENT_BYTES" in error["message"]
    assert (listed["data"], asked) == ([], 0)
    assert over.status_code == 413
    assert over.json()["error"]["code"] == "attachment_quota_exceeded"
    assert "CHATRELAY_USER_ATTACHMENT_BYTES" in over.json()["error"]["message"]
    assert linked.status_code == 200
    assert len(fake.requests) == 3
