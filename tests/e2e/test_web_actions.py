"""What a reader does with the messages on the chat page, in a real browser (Debian's Chromium,
driven by Playwright) against the real relay, its database and the fake upstream: regenerate
the last answer, edit the last question and resend it, export the conversation, and what the
page says when the rate limit refuses a message."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

from playwright.async_api import Browser, expect

from tests.browser import HELD
from tests.e2e.test_web_conversations import REFUSALS, ChatRequests, api, ask, hash_id
from tests.e2e.test_web_page import open_chat
from tests.fake_upstream import FakeResponse, FakeUpstream, livepeer_events
from tests.polling import wait_until


async def test_regenerate_replaces_the_last_answer(
    browser: Browser, relay_for, fake: FakeUpstream, tmp_path: Path
) -> None:
    async with relay_for(data_dir=tmp_path) as relay:
        async with open_chat(browser, relay) as chat:
            page = chat.page
            sent = ChatRequests(page)
            first = await ask(chat, fake, "Name a colour", ["Blue."])
            second = await ask(chat, fake, "Another one", ["Red."])
            conversation_id = hash_id(page)
            # Only the last answer offers Regenerate.
            await expect(first.locator(".regenerate")).to_be_hidden()
            regenerate = second.get_by_role("button", name="Regenerate this answer")
            await expect(regenerate).to_be_visible()

            fake.script = livepeer_events(["Green", "."])
            await regenerate.click()
            await expect(second).to_have_attribute("data-state", "done")
            await expect(second.locator(".content")).to_have_text("Green.")
            await expect(chat.messages).to_have_count(4)
            # The keyboard is back in the message box (the button went away while it ran).
            await expect(chat.prompt).to_be_focused()
            assert sent.bodies[-1] == {
                "action": "regenerate",
                "conversation_id": conversation_id,
                "model": await chat.select.input_value(),
            }
            # The upstream was asked the same question again, without the old answer.
            assert fake.requests[-1].json["messages"] == fake.requests[-2].json["messages"]

            await page.reload()
            await expect(chat.answers.locator(".content")).to_have_text(["Blue.", "Green."])
            status, stored = await api(page, relay.url, f"/api/conversations/{conversation_id}")
            assert status == 200
            assert [m["content"] for m in stored["messages"]] == [
                "Name a colour",
                "Blue.",
                "Another one",
                "Green.",
            ]
            assert await chat.problems() == []


async def test_edit_the_last_question_and_resend(
    browser: Browser, relay_for, fake: FakeUpstream, tmp_path: Path
) -> None:
    async with relay_for(data_dir=tmp_path) as relay:
        async with open_chat(browser, relay) as chat:
            page = chat.page
            await ask(chat, fake, "Hello", ["Hi."])
            answer = await ask(chat, fake, "Capital of Frnace?", ["Sorry, which country?"])
            conversation_id = hash_id(page)
            first_question, question = chat.user_messages.nth(0), chat.user_messages.nth(1)
            await expect(first_question.locator(".edit")).to_be_hidden()

            # Esc leaves it as it was, and asks nothing.
            edit = question.get_by_role("button", name="Edit your last message")
            await edit.click()
            box = question.get_by_role("textbox", name="Edited message")
            await expect(box).to_be_focused()
            await expect(box).to_have_value("Capital of Frnace?")
            await box.fill("Something else")
            await box.press("Escape")
            await expect(box).to_have_count(0)
            await expect(edit).to_be_focused()
            await expect(question.locator(".content")).to_have_text("Capital of Frnace?")
            await expect(answer).to_have_attribute("data-state", "done")
            assert len(fake.requests) == 2

            # Enter sends the corrected question; its answer replaces the old one.
            await edit.click()
            await box.fill("Capital of France?")
            fake.script = livepeer_events(["Paris", "."])
            await box.press("Enter")
            await expect(question.locator(".content")).to_have_text("Capital of France?")
            await expect(answer.locator(".content")).to_have_text("Paris.")
            await expect(answer).to_have_attribute("data-state", "done")
            await expect(chat.messages).to_have_count(4)
            assert fake.requests[-1].json["messages"] == [
                {"role": "user", "content": "Hello"},
                {"role": "assistant", "content": "Hi."},
                {"role": "user", "content": "Capital of France?"},
            ]

            await page.reload()
            await expect(chat.user_messages.locator(".content")).to_have_text(
                ["Hello", "Capital of France?"]
            )
            await expect(chat.answers.locator(".content")).to_have_text(["Hi.", "Paris."])
            status, stored = await api(page, relay.url, f"/api/conversations/{conversation_id}")
            assert status == 200 and len(stored["messages"]) == 4
            assert await chat.problems() == []


async def test_export_downloads_json_and_markdown(
    browser: Browser, relay_for, fake: FakeUpstream, tmp_path: Path
) -> None:
    async with relay_for(data_dir=tmp_path) as relay:
        async with open_chat(browser, relay) as chat:
            page = chat.page
            menu = page.get_by_test_id("export")
            await expect(menu).to_be_hidden()  # nothing stored yet
            fake.script = livepeer_events(["**Exported**", " answer."])
            answer = await chat.say("Export me")
            await expect(answer.locator(".content strong")).to_have_text("Exported")
            await expect(answer).to_have_attribute("data-state", "done")
            conversation_id = hash_id(page)
            await expect(menu).to_be_visible()

            await menu.locator("summary").click()
            async with page.expect_download() as info:
                await page.get_by_test_id("export-json").click()
            download = await info.value
            assert download.suggested_filename == f"chatrelay-{conversation_id}.json"
            exported = json.loads(await asyncio.to_thread(Path(await download.path()).read_text))
            assert exported["id"] == conversation_id
            assert [m["content"] for m in exported["messages"]] == [
                "Export me",
                "**Exported** answer.",
            ]

            await menu.locator("summary").click()
            async with page.expect_download() as info:
                await page.get_by_test_id("export-markdown").click()
            download = await info.value
            assert download.suggested_filename == f"chatrelay-{conversation_id}.md"
            markdown = await asyncio.to_thread(Path(await download.path()).read_text)
            assert "Export me" in markdown and "**Exported** answer." in markdown
            await expect(menu).not_to_have_attribute("open", "")

            # From the sidebar too: the row's Export offers both formats, Esc takes it back.
            item = page.locator(f'#conversations li[data-id="{conversation_id}"]')
            await item.hover()
            await item.get_by_role("button", name="Export").click()
            choice = item.get_by_role("group", name="Export format")
            await expect(choice.get_by_role("link", name="JSON")).to_be_focused()
            await page.keyboard.press("Escape")
            await expect(choice).to_have_count(0)
            await expect(item.get_by_role("button", name="Export")).to_be_focused()
            await item.get_by_role("button", name="Export").click()
            async with page.expect_download() as info:
                await choice.get_by_role("link", name="Markdown").click()
            download = await info.value
            assert download.suggested_filename == f"chatrelay-{conversation_id}.md"
            await expect(choice).to_have_count(0)
            await expect(chat.messages).to_have_count(2)  # Esc did not touch the chat
            assert await chat.problems() == []


async def test_rate_limited_says_when_to_retry(
    browser: Browser, relay_for, fake: FakeUpstream, tmp_path: Path
) -> None:
    async with relay_for(data_dir=tmp_path, rate_limit="1/minute") as relay:
        async with open_chat(browser, relay) as chat:
            await ask(chat, fake, "One", ["Fine."])
            refused = await chat.say("Two")
            await expect(refused).to_have_attribute("data-state", "error")
            await expect(refused).to_have_attribute("data-error", "rate_limited")
            error = refused.locator(".error")
            await expect(error.locator(".error-message")).not_to_be_empty()
            await expect(error.locator(".error-hint")).to_have_text(
                re.compile(r"^You can send again at \d\d?:\d\d:\d\d( [AP]M)?\.$")
            )
            retry = refused.locator(".retry")
            await expect(retry).to_be_disabled()
            await expect(retry).to_have_text(re.compile(r"^Retry in \d+ s$"))
            assert len(fake.requests) == 1
            assert await chat.problems(allowed=REFUSALS) == []


async def test_stop_while_waiting_for_the_first_token_stops_the_upstream(
    browser: Browser, relay_for, fake: FakeUpstream, tmp_path: Path
) -> None:
    held = asyncio.Event()  # a cold model: the upstream does not even answer yet
    fake.responses = [FakeResponse(script=livepeer_events(["Too late."]), hold_headers=held)]
    async with relay_for(**HELD, data_dir=tmp_path, stream_start_wait=1) as relay:
        async with open_chat(browser, relay) as chat:
            page = chat.page
            answer = await chat.say("Are you there?")
            await expect(answer.locator(".progress")).to_contain_text("Waiting for the model")
            await page.keyboard.press("Escape")
            await expect(answer).to_have_attribute("data-state", "stopped")
            await expect(chat.send_button).to_have_text("Send")
            # The page told the server (a closed connection alone would not stop it).
            await wait_until(lambda: fake.disconnected_at is not None)
            conversation_id = hash_id(page)
            assert conversation_id
            status, stored = await api(page, relay.url, f"/api/conversations/{conversation_id}")
            assert status == 200 and stored["messages"][-1]["status"] == "stopped"
            await expect(answer.locator(".content")).to_have_text("")
            assert await chat.problems() == []
