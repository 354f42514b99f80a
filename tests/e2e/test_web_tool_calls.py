"""The page shows what a stored conversation carried besides text, in a real browser (Debian's
Chromium, driven by Playwright) against the real relay: tool calls (name and arguments), tool
results, reasoning and refusals as collapsed blocks, system and developer messages, and images
as links it never loads; all of it model or client output, so shown as text whatever it says."""

from __future__ import annotations

import asyncio
import base64
import json
import re
from functools import partial
from typing import Any

from playwright.async_api import Locator, Request, expect
from sqlalchemy import text

from chatrelay.store import answer_rows, conversations
from chatrelay.store.database import Database
from tests.browser import WAIT_MS
from tests.e2e.test_openai_api import api_key
from tests.e2e.test_web_page import ChatPage, open_chat
from tests.fake_upstream import livepeer_events, openai_events, vllm_tool_call_events

HOSTILE_NAME = '<img src=x onerror="window.__pwned=1">'
HOSTILE_ARGUMENTS = '{"html": "<script>window.__pwned=2</script>", "n": 1}'
HOSTILE_REASONING = "Think: <img src=y onerror=window.__pwned=3> then <b>act</b>"
PNG = "data:image/png;base64," + base64.b64encode(bytes(3000)).decode()


async def store_exchange(
    db: Database,
    owner_id: str,
    conversation_id: str,
    questions: list[dict[str, Any]],
    **answer: Any,
) -> None:
    """Questions and their answer, stored as the relay stores a /v1 request's."""
    _, answer_id = await db.write(
        partial(
            conversations.append_turn,
            owner_id=owner_id,
            conversation_id=conversation_id,
            title="",
            questions=questions,
            model="gpt-test",
            instance_id=None,
        )
    )
    await db.write(
        partial(
            answer_rows.finish_answer,
            answer_id=answer_id,
            status="complete",
            error=None,
            prompt_tokens=30,
            completion_tokens=12,
            upstream="openai",
            **answer,
        )
    )


async def begin_on_the_page(chat: ChatPage, fake: Any, db: Database) -> tuple[str, str]:
    """A chat begun on the page: (conversation id, its owner, the page's guest)."""
    fake.script = livepeer_events(["Let me look."])
    bubble = await chat.say("What is the weather in Paris?")
    await expect(bubble).to_have_attribute("data-state", "done")
    await expect(chat.page).to_have_url(re.compile("#c="))
    conversation_id = chat.page.url.split("#c=")[1]
    async with db.engine.connect() as connection:
        owner_id = await connection.scalar(
            text("SELECT user_id FROM conversations WHERE id = :id"), {"id": conversation_id}
        )
    return conversation_id, owner_id


async def ids_of(items: Locator) -> list[str]:
    ids: list[str] = await items.evaluate_all("(nodes) => nodes.map((n) => n.dataset.testid)")
    return ids


def summary(block: Locator) -> Locator:
    return block.locator(":scope > summary")


async def test_tool_calls_results_reasoning_and_images_are_shown_as_text(
    browser, relay_for, fake
) -> None:
    async with relay_for() as relay:
        db: Database = relay.context.db
        async with open_chat(browser, relay) as chat:
            page = chat.page
            conversation_id, owner_id = await begin_on_the_page(chat, fake, db)
            # An image on the relay itself: were the page to load it, the relay would see it.
            image_url = f"{relay.url}/static/never-loaded.png"
            await store_exchange(
                db,
                owner_id,
                conversation_id,
                [
                    {"role": "developer", "content": "Use the tools. <i>Always</i>."},
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "And what is in these?"},
                            {"type": "image_url", "image_url": {"url": image_url}},
                            {"type": "image_url", "image_url": {"url": PNG}},
                            {"type": "image_url", "image_url": {"url": "javascript:alert(1)"}},
                        ],
                    },
                ],
                content="",
                finish_reason="tool_calls",
                extra={
                    "content": None,
                    "reasoning_content": HOSTILE_REASONING,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": HOSTILE_NAME, "arguments": HOSTILE_ARGUMENTS},
                        },
                        {
                            "id": "call_2",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": "not json {"},
                        },
                    ],
                },
            )
            await store_exchange(
                db,
                owner_id,
                conversation_id,
                [{"role": "tool", "tool_call_id": "call_1", "content": "<script>x()</script>22C"}],
                content="It is 22C.",
                finish_reason="stop",
                extra={"refusal": "I will not <u>describe</u> the picture."},
            )

            requested: list[str] = []

            def seen(request: Request) -> None:
                requested.append(request.url)

            page.on("request", seen)
            await page.reload()
            await expect(chat.messages).to_have_count(7)
            assert await ids_of(chat.messages) == [
                "message-user",
                "message-assistant",
                "message-developer",
                "message-user",
                "message-assistant",
                "message-tool",
                "message-assistant",
            ]
            items = chat.messages

            # The developer message: one collapsed block, its text as text.
            developer = items.nth(2).locator("details")
            await expect(summary(developer)).to_have_text("Developer message")
            await expect(developer).not_to_have_attribute("open", "")
            await expect(developer.locator("pre")).to_be_hidden()
            await expect(developer.locator("pre")).to_have_js_property(
                "textContent", "Use the tools. <i>Always</i>."
            )

            # The question's images: links it does not load; the data URL shortened, saved
            # (not opened) when clicked; a javascript: URL only text.
            question = items.nth(3)
            await expect(question.locator(".content")).to_have_text("And what is in these?")
            links = question.locator("[data-testid=attachments] li")
            await expect(links).to_have_count(3)
            first = links.nth(0).locator("a")
            await expect(first).to_have_text(image_url)
            await expect(first).to_have_attribute("href", image_url)
            await expect(first).to_have_attribute("rel", "noopener noreferrer nofollow")
            await expect(first).to_have_attribute("target", "_blank")
            data_link = links.nth(1).locator("a")
            await expect(data_link).to_have_text(f"{PNG[:40]}… (3.9 KB)")
            await expect(data_link).to_have_attribute("download", "image.png")
            await expect(links.nth(2)).to_have_text("image: javascript:alert(1)")
            await expect(links.nth(2).locator("a")).to_have_count(0)

            # The answer with tool calls: reasoning before, each call after, all collapsed.
            calling = items.nth(4)
            await expect(calling).to_have_attribute("data-state", "done")
            blocks = calling.locator("details")
            assert await ids_of(blocks) == [
                "extra-reasoning",
                "extra-tool-call",
                "extra-tool-call",
            ]
            for i in range(3):
                await expect(blocks.nth(i)).not_to_have_attribute("open", "")
            await expect(summary(blocks.nth(1))).to_have_js_property(
                "textContent", f"Tool call {HOSTILE_NAME} call_1"
            )
            await expect(summary(blocks.nth(2))).to_have_text("Tool call get_weather call_2")
            await summary(blocks.nth(1)).click()
            await expect(blocks.nth(1)).to_have_attribute("open", "")
            arguments = blocks.nth(1).locator("pre")
            await expect(arguments).to_be_visible()
            await expect(arguments).to_have_js_property(
                "textContent", json.dumps(json.loads(HOSTILE_ARGUMENTS), indent=2)
            )
            # Arguments that are not JSON are shown as they came.
            await expect(blocks.nth(2).locator("pre")).to_have_js_property(
                "textContent", "not json {"
            )
            await summary(blocks.nth(0)).click()
            await expect(blocks.nth(0).locator("pre")).to_have_js_property(
                "textContent", HOSTILE_REASONING
            )
            await expect(calling.locator(".note")).to_have_text("(finished: tool_calls)")

            # The tool's result, and the answer after it with its refusal.
            result = items.nth(5).locator("details")
            await expect(summary(result)).to_have_text("Tool result call_1")
            await expect(result.locator("pre")).to_have_js_property(
                "textContent", "<script>x()</script>22C"
            )
            refusing = items.nth(6)
            await expect(refusing.locator(".content")).to_have_text("It is 22C.")
            await expect(summary(refusing.locator("[data-testid=extra-refusal]"))).to_have_text(
                "Refused"
            )
            await expect(refusing.locator("[data-testid=extra-refusal] pre")).to_have_js_property(
                "textContent", "I will not <u>describe</u> the picture."
            )

            # Nothing the model or the client wrote became markup, and nothing was loaded.
            for tag in ("img", "script", "b", "i", "u"):
                await expect(page.locator(f"#messages {tag}")).to_have_count(0)
            await asyncio.sleep(0.2)  # time for a would-be <img> to fail and fire its handler
            assert await page.evaluate("typeof window.__pwned") == "undefined"
            assert not [url for url in requested if "never-loaded" in url]
            assert await chat.problems() == []


async def test_regenerating_an_answer_with_tool_calls_clears_them(browser, relay_for, fake) -> None:
    async with relay_for() as relay:
        db: Database = relay.context.db
        async with open_chat(browser, relay) as chat:
            page = chat.page
            conversation_id, owner_id = await begin_on_the_page(chat, fake, db)
            await store_exchange(
                db,
                owner_id,
                conversation_id,
                [{"role": "user", "content": "Call it."}],
                content="",
                finish_reason="tool_calls",
                extra={
                    "content": None,
                    "reasoning": "vLLM names it reasoning.",
                    "tool_calls": [
                        {
                            "id": "c",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{}"},
                        }
                    ],
                },
            )
            await page.reload()
            last = chat.answers.last
            await expect(last.locator("details")).to_have_count(2)
            assert await ids_of(last.locator("details")) == ["extra-reasoning", "extra-tool-call"]
            fake.script = livepeer_events(["Plain words this time."])
            await last.hover()
            await last.locator(".regenerate").click()
            await expect(last).to_have_attribute("data-state", "done")
            await expect(last.locator(".content")).to_have_text("Plain words this time.")
            await expect(last.locator("details")).to_have_count(0)
            assert await chat.problems() == []


async def test_a_v1_tool_call_conversation_opens_on_the_page(browser, relay_for, fake) -> None:
    """End to end: an SDK's tool call and its result through /v1, then the page of the same
    user (its API key on every request) shows the call, its arguments and the result."""
    async with relay_for("openai") as relay:
        key, _ = await api_key(relay)
        headers = {"Authorization": f"Bearer {key}"}
        fake.script = vllm_tool_call_events([("call_a", "get_weather", ['{"ci', 'ty": "Paris"}'])])
        question = {"role": "user", "content": "Weather in Paris?"}
        first = await relay.client.post(
            "/v1/chat/completions",
            json={"model": "gpt-test", "messages": [question], "stream": True},
            headers=headers,
        )
        assert first.status_code == 200, first.text
        conversation_id = first.headers["x-conversation-id"]
        fake.script = openai_events(["Sunny, 22C."])
        second = await relay.client.post(
            "/v1/chat/completions",
            json={
                "model": "gpt-test",
                "messages": [{"role": "tool", "tool_call_id": "call_a", "content": "22C"}],
            },
            headers={**headers, "X-Conversation-Id": conversation_id},
        )
        assert second.status_code == 200, second.text

        context = await browser.new_context(extra_http_headers=headers)
        try:
            page = await context.new_page()
            page.set_default_timeout(WAIT_MS)
            await page.goto(f"{relay.url}/#c={conversation_id}")
            items = page.locator("#messages > li")
            await expect(items).to_have_count(4)
            assert await ids_of(items) == [
                "message-user",
                "message-assistant",
                "message-tool",
                "message-assistant",
            ]
            call = items.nth(1).locator("[data-testid=extra-tool-call]")
            await expect(summary(call)).to_have_text("Tool call get_weather call_a")
            await summary(call).click()
            await expect(call.locator("pre")).to_have_text('{\n  "city": "Paris"\n}')
            await expect(summary(items.nth(2).locator("details"))).to_have_text(
                "Tool result call_a"
            )
            await expect(items.nth(3).locator(".content")).to_have_text("Sunny, 22C.")
        finally:
            await context.close()
