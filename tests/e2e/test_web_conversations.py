"""The page with stored conversations and accounts, in a real browser (Debian's Chromium, driven
by Playwright) against the real relay, its database and the fake upstream: the sidebar, the
history restored from the address, rename, delete, search, and guests becoming accounts."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, Locator, Page, Request, expect

from tests.browser import HELD
from tests.e2e.test_web_page import ChatPage, open_chat
from tests.fake_upstream import FakeUpstream, livepeer_chunk, livepeer_events, paced

PASSWORD = "correct horse battery"
# The browser itself logs refused requests ("the server responded with a status of 401").
REFUSALS = ["status of 401", "status of 409", "status of 429"]


def rows(page: Page) -> Locator:
    return page.locator("#conversations > li.conversation")


def row(page: Page, conversation_id: str) -> Locator:
    return page.locator(f'#conversations > li.conversation[data-id="{conversation_id}"]')


def hash_id(page: Page) -> str | None:
    match = re.search(r"#c=([^&]+)$", page.url)
    return match.group(1) if match else None


class ChatRequests:
    """The bodies of the page's own POST /api/chat requests, as the browser sent them."""

    def __init__(self, page: Page) -> None:
        self.bodies: list[dict[str, Any]] = []
        page.on("request", self._seen)

    def _seen(self, request: Request) -> None:
        if request.method == "POST" and request.url.endswith("/api/chat"):
            self.bodies.append(request.post_data_json)


async def api(page: Page, relay_url: str, path: str) -> tuple[int, Any]:
    """GET with the page's own cookies (the same browser context)."""
    response = await page.request.get(relay_url + path)
    body = await response.json() if response.status != 204 else None
    return response.status, body


async def ask(chat: ChatPage, fake: FakeUpstream, question: str, answer: list[str]) -> Locator:
    """Send `question`, the upstream answers `answer`; waits until it is done."""
    fake.script = livepeer_events(answer)
    bubble = await chat.say(question)
    await expect(bubble).to_have_attribute("data-state", "done")
    await expect(bubble.locator(".content")).to_have_text("".join(answer))
    return bubble


async def new_chat(chat: ChatPage) -> None:
    await chat.page.locator("#new-chat").click()
    await expect(chat.messages).to_have_count(0)


async def test_a_new_chat_is_listed_continued_by_id_and_reopened_after_reload(
    browser: Browser, relay_for, fake: FakeUpstream, tmp_path: Path
) -> None:
    async with relay_for(data_dir=tmp_path) as relay:
        async with open_chat(browser, relay) as chat:
            page = chat.page
            sent = ChatRequests(page)
            # On load without a hash: an empty chat, the (empty) sidebar shown.
            await expect(page.locator("#sidebar")).to_be_visible()
            await expect(rows(page)).to_have_count(0)
            await expect(page.locator("#conversations-status")).to_contain_text("No chats yet")
            assert hash_id(page) is None

            await ask(chat, fake, "Capital of France?", ["Paris", " is the capital."])
            await expect(rows(page)).to_have_count(1)
            item = rows(page).first
            await expect(item.locator(".title")).to_have_text("Capital of France?")
            await expect(item).to_have_class(re.compile(r"\bactive\b"))
            conversation_id = await item.get_attribute("data-id")
            assert conversation_id and conversation_id.startswith("conv_")
            assert hash_id(page) == conversation_id
            await expect(page).to_have_title("Capital of France? · chatrelay")
            assert sent.bodies[-1]["messages"] == [
                {"role": "user", "content": "Capital of France?"}
            ]
            assert "conversation_id" not in sent.bodies[-1]

            await ask(chat, fake, "How many people live there?", ["About 2.1 million."])
            # The page sent only the new message, with the id; the server added the history.
            assert sent.bodies[-1]["conversation_id"] == conversation_id
            assert sent.bodies[-1]["messages"] == [
                {"role": "user", "content": "How many people live there?"}
            ]
            assert fake.requests[-1].json["messages"] == [
                {"role": "user", "content": "Capital of France?"},
                {"role": "assistant", "content": "Paris is the capital."},
                {"role": "user", "content": "How many people live there?"},
            ]
            await expect(rows(page)).to_have_count(1)

            await page.reload()
            await expect(chat.messages).to_have_count(4)
            await expect(chat.user_messages.locator(".content")).to_have_text(
                ["Capital of France?", "How many people live there?"]
            )
            await expect(chat.answers.locator(".content")).to_have_text(
                ["Paris is the capital.", "About 2.1 million."]
            )
            await expect(chat.answers.nth(0)).to_have_attribute("data-state", "done")
            await expect(chat.answers.nth(0).locator(".meta")).to_have_text(
                "meta-llama/Meta-Llama-3.1-8B-Instruct (livepeer)"
            )
            await expect(page.get_by_text("What can I help with?")).to_be_hidden()
            await expect(row(page, conversation_id)).to_have_class(re.compile(r"\bactive\b"))
            assert hash_id(page) == conversation_id

            # Continuing after the reload still continues the same conversation.
            await ask(chat, fake, "And Lyon?", ["About half a million."])
            assert sent.bodies[-1]["conversation_id"] == conversation_id
            assert len(fake.requests[-1].json["messages"]) == 5
            assert await chat.problems() == []


async def test_switching_between_conversations(
    browser: Browser, relay_for, fake: FakeUpstream, tmp_path: Path
) -> None:
    async with relay_for(data_dir=tmp_path) as relay:
        async with open_chat(browser, relay) as chat:
            page = chat.page
            await ask(chat, fake, "First topic: apples", ["Apples are red."])
            first = hash_id(page)
            await new_chat(chat)
            assert hash_id(page) is None
            await expect(rows(page).first).not_to_have_class(re.compile(r"\bactive\b"))
            # "New chat" is a step in the history: Back shows the chat before, Forward leaves it.
            await page.go_back()
            await expect(chat.answers.locator(".content")).to_have_text(["Apples are red."])
            await expect(rows(page).first).to_have_class(re.compile(r"\bactive\b"))
            await page.go_forward()
            await expect(chat.messages).to_have_count(0)
            assert hash_id(page) is None
            await ask(chat, fake, "Second topic: bananas", ["Bananas are yellow."])
            second = hash_id(page)
            assert first and second and first != second

            # Newest first; the new one active.
            await expect(rows(page).locator(".title")).to_have_text(
                ["Second topic: bananas", "First topic: apples"]
            )
            await expect(page.locator("#conversations li.active")).to_have_attribute(
                "data-id", second
            )

            await row(page, first).locator(".conversation-link").click()
            await expect(chat.answers.locator(".content")).to_have_text(["Apples are red."])
            await expect(chat.user_messages.locator(".content")).to_have_text(
                ["First topic: apples"]
            )
            await expect(page.locator("#conversations li.active")).to_have_attribute(
                "data-id", first
            )
            assert hash_id(page) == first

            await row(page, second).locator(".conversation-link").click()
            await expect(chat.answers.locator(".content")).to_have_text(["Bananas are yellow."])
            await expect(page.locator("#conversations li.active")).to_have_attribute(
                "data-id", second
            )

            # Back goes to the conversation shown before.
            await page.go_back()
            await expect(chat.answers.locator(".content")).to_have_text(["Apples are red."])
            assert hash_id(page) == first

            # Continuing the older one moves it to the top.
            await ask(chat, fake, "More about apples", ["Some are green."])
            await expect(rows(page).locator(".title")).to_have_text(
                ["First topic: apples", "Second topic: bananas"]
            )
            assert await chat.problems() == []


async def test_rename_is_saved_and_escape_cancels(
    browser: Browser, relay_for, fake: FakeUpstream, tmp_path: Path
) -> None:
    async with relay_for(data_dir=tmp_path) as relay:
        async with open_chat(browser, relay) as chat:
            page = chat.page
            await ask(chat, fake, "Tell me about zebras", ["Stripes."])
            conversation_id = hash_id(page)
            assert conversation_id
            item = row(page, conversation_id)

            await item.locator(".rename").click()
            editor = item.locator("input.rename-input")
            await expect(editor).to_be_focused()
            await expect(editor).to_have_value("Tell me about zebras")
            await editor.fill("Never saved")
            await editor.press("Escape")
            await expect(editor).to_have_count(0)
            await expect(item.locator(".title")).to_have_text("Tell me about zebras")
            # Esc in the editor did not do anything else (like starting over).
            await expect(chat.messages).to_have_count(2)

            await item.locator(".rename").click()
            await editor.fill("  Zebra facts  ")
            await editor.press("Enter")
            await expect(editor).to_have_count(0)
            await expect(item.locator(".title")).to_have_text("Zebra facts")
            await expect(page).to_have_title("Zebra facts · chatrelay")
            status, stored = await api(page, relay.url, f"/api/conversations/{conversation_id}")
            assert status == 200 and stored["title"] == "Zebra facts"

            await page.reload()
            await expect(row(page, conversation_id).locator(".title")).to_have_text("Zebra facts")
            assert await chat.problems() == []


async def test_delete_asks_first_then_removes_it_everywhere(
    browser: Browser, relay_for, fake: FakeUpstream, tmp_path: Path
) -> None:
    async with relay_for(data_dir=tmp_path) as relay:
        async with open_chat(browser, relay) as chat:
            page = chat.page
            await ask(chat, fake, "Keep this one", ["Kept."])
            keep = hash_id(page)
            await new_chat(chat)
            await ask(chat, fake, "Delete this one", ["Deleted soon."])
            doomed = hash_id(page)
            assert keep and doomed

            item = row(page, doomed)
            await item.locator(".delete").click()
            await expect(item.locator(".confirm-delete")).to_be_visible()
            await expect(item.locator(".confirm")).to_contain_text("Delete this chat?")
            await item.locator(".cancel-delete").click()
            await expect(item.locator(".confirm-delete")).to_have_count(0)
            await expect(rows(page)).to_have_count(2)
            status, _ = await api(page, relay.url, f"/api/conversations/{doomed}")
            assert status == 200

            await item.locator(".delete").click()
            await item.locator(".confirm-delete").click()
            await expect(item).to_have_count(0)
            await expect(rows(page)).to_have_count(1)
            # It was the one shown: the page is an empty new chat again.
            await expect(chat.messages).to_have_count(0)
            await expect(page.get_by_text("What can I help with?")).to_be_visible()
            assert hash_id(page) is None
            status, body = await api(page, relay.url, f"/api/conversations/{doomed}")
            assert status == 404 and body["error"]["code"] == "conversation_not_found"
            status, listing = await api(page, relay.url, "/api/conversations")
            assert [c["id"] for c in listing["data"]] == [keep]

            # Deleting one that is not shown leaves the page as it is.
            await row(page, keep).locator(".conversation-link").click()
            await expect(chat.messages).to_have_count(2)
            await new_chat(chat)
            await row(page, keep).locator(".delete").click()
            await row(page, keep).locator(".confirm-delete").click()
            await expect(rows(page)).to_have_count(0)
            await expect(page.locator("#conversations-status")).to_contain_text("No chats yet")
            assert await chat.problems() == []


async def test_search_filters_by_title_and_text_debounced(
    browser: Browser, relay_for, fake: FakeUpstream, tmp_path: Path
) -> None:
    async with relay_for(data_dir=tmp_path) as relay:
        async with open_chat(browser, relay) as chat:
            page = chat.page
            for question, answer in [
                ("apples please", "Red fruit."),
                ("bananas please", "Yellow fruit."),
                ("cherries please", "Zebra-striped fruit, oddly."),
            ]:
                await new_chat(chat)
                await ask(chat, fake, question, [answer])
            await expect(rows(page)).to_have_count(3)

            searches: list[str] = []
            page.on(
                "request",
                lambda r: searches.append(r.url) if "/api/conversations?" in r.url else None,
            )
            search = page.locator("#search")
            # On a loaded machine a pause between keys can outlast the debounce, so
            # "bana" may be asked (and shown) first: wait for the whole word's answer.
            async with page.expect_response(lambda r: r.url.endswith("q=banana")):
                await search.press_sequentially("banana", delay=20)
            await expect(rows(page).locator(".title")).to_have_text(["bananas please"])
            queried = [u for u in searches if "q=" in u]
            assert 1 <= len(queried) < len("banana"), queried  # debounced, not one per key
            assert queried[-1].endswith("q=banana")

            await search.fill("ZEBRA")  # the text of an answer, any case
            await expect(rows(page).locator(".title")).to_have_text(["cherries please"])

            await search.fill("durian")
            await expect(rows(page)).to_have_count(0)
            await expect(page.locator("#conversations-status")).to_contain_text("No chats match")

            await search.fill("")
            await expect(rows(page)).to_have_count(3)
            assert await chat.problems() == []


async def test_load_more_pages_the_list(
    browser: Browser, relay_for, fake: FakeUpstream, tmp_path: Path
) -> None:
    fake.script = livepeer_events(["ok"])
    async with relay_for(data_dir=tmp_path) as relay:
        async with open_chat(browser, relay) as chat:
            page = chat.page
            # 22 conversations made by this browser (its cookies) through the API.
            for i in range(22):
                response = await page.request.post(
                    relay.url + "/api/chat",
                    data={"messages": [{"role": "user", "content": f"topic {i:02d}"}]},
                )
                assert response.status == 200
            await page.reload()
            await expect(rows(page)).to_have_count(20)
            await expect(rows(page).first.locator(".title")).to_have_text("topic 21")
            load_more = page.locator("#load-more")
            await expect(load_more).to_be_visible()
            await load_more.click()
            await expect(rows(page)).to_have_count(22)
            await expect(rows(page).last.locator(".title")).to_have_text("topic 00")
            await expect(load_more).to_be_hidden()
            assert await chat.problems() == []


async def test_stored_answers_show_their_states(
    browser: Browser, relay_for, fake: FakeUpstream, tmp_path: Path
) -> None:
    async with relay_for(**HELD, data_dir=tmp_path, finished_job_ttl=30) as relay:
        async with open_chat(browser, relay) as chat:
            page = chat.page
            # An answer that fails half-way.
            fake.script = [livepeer_chunk("Half"), b'data: {"error":"CUDA out of memory"}\n\n']
            failed = await chat.say("Break please")
            await expect(failed).to_have_attribute("data-state", "error")
            # One stopped by the reader.
            fake.script = paced(livepeer_events([f" w{i}" for i in range(500)]), 0.03)
            stopped = await chat.say("Count for a long time")
            await expect(stopped.locator(".content")).to_contain_text("w0 w1")
            await chat.send_button.click()
            await expect(stopped).to_have_attribute("data-state", "stopped")
            conversation_id = hash_id(page)
            assert conversation_id

            await page.reload()
            await expect(chat.answers).to_have_count(2)
            restored_failed, restored_stopped = chat.answers.nth(0), chat.answers.nth(1)
            await expect(restored_failed).to_have_attribute("data-state", "error")
            await expect(restored_failed.locator(".content")).to_have_text("Half")
            await expect(restored_failed.locator(".error")).to_contain_text("CUDA out of memory")
            await expect(restored_stopped).to_have_attribute("data-state", "stopped")
            await expect(restored_stopped.locator(".note-stopped")).to_have_text("stopped")
            await expect(restored_stopped.locator(".content")).to_contain_text(" w0 w1")

            # An answer still being generated, seen from another conversation and back: the
            # page re-attaches to it and shows it grow to its end, every token once.
            gate = asyncio.Event()
            fake.script = [livepeer_chunk("So far"), gate, *livepeer_events([", and the rest."])]
            live = await chat.say("Take your time")
            await expect(live.locator(".content")).to_have_text("So far")
            await new_chat(chat)  # leaves it running on the server
            await row(page, conversation_id).locator(".conversation-link").click()
            following = chat.answers.nth(2)
            await expect(following).to_have_attribute("data-state", "streaming")
            await expect(following.locator(".content")).to_have_text("So far")
            await expect(chat.send_button).to_have_text("Stop")
            gate.set()
            await expect(following).to_have_attribute("data-state", "done")
            await expect(following.locator(".content")).to_have_text("So far, and the rest.")
            await expect(chat.send_button).to_have_text("Send")
            assert await chat.problems() == []


async def test_stored_conversation_is_shown_as_text_with_interrupted_answers(
    browser: Browser, relay_for, fake: FakeUpstream, tmp_path: Path
) -> None:
    """A stored conversation the server cannot easily be made to produce: crafted in transit."""
    hostile = '<img src=x onerror="window.__pwned=1"><b>bold?</b>'
    conversation = {
        "id": "conv_crafted",
        "title": "<script>window.__pwned=2</script>",
        "created_at": "2025-01-01T00:00:00Z",
        "updated_at": "2025-01-01T00:00:00Z",
        "messages": [
            {"id": "msg_1", "role": "user", "content": hostile, "status": "complete"},
            {
                "id": "msg_2",
                "role": "assistant",
                "content": "Partial " + hostile,
                "status": "interrupted",
                "error": None,
                "model": "google/gemma-2-9b-it",
                "upstream": "livepeer",
                "finish_reason": None,
            },
            {
                "id": "msg_3",
                "role": "assistant",
                "content": "Long answer",
                "status": "complete",
                "error": None,
                "model": "google/gemma-2-9b-it",
                "upstream": "livepeer",
                "finish_reason": "length",
            },
        ],
    }
    async with relay_for(data_dir=tmp_path) as relay:
        async with open_chat(browser, relay) as chat:
            page = chat.page
            await page.route(
                "**/api/conversations/conv_crafted", lambda route: route.fulfill(json=conversation)
            )
            await page.evaluate("location.hash = '#c=conv_crafted'")
            await expect(chat.messages).to_have_count(3)
            await expect(chat.user_messages.locator(".content")).to_have_js_property(
                "textContent", hostile
            )
            interrupted = chat.answers.nth(0)
            await expect(interrupted).to_have_attribute("data-state", "interrupted")
            await expect(interrupted.locator(".content")).to_have_js_property(
                "textContent", "Partial " + hostile
            )
            await expect(interrupted.locator(".note-interrupted")).to_have_text("interrupted")
            await expect(interrupted.locator(".error")).to_contain_text("before this answer")
            await expect(interrupted.locator(".meta")).to_have_text(
                "google/gemma-2-9b-it (livepeer)"
            )
            await expect(chat.answers.nth(1).locator(".note")).to_have_text(
                "(cut at the token limit)"
            )
            await expect(page).to_have_title("<script>window.__pwned=2</script> · chatrelay")
            await expect(
                page.locator("#messages img, #messages b, #messages script")
            ).to_have_count(0)
            await asyncio.sleep(0.2)
            assert await page.evaluate("typeof window.__pwned") == "undefined"
            assert await chat.problems() == []


async def test_an_unknown_conversation_in_the_address_opens_an_empty_chat(
    browser: Browser, relay_for, tmp_path: Path
) -> None:
    async with relay_for(data_dir=tmp_path) as relay:
        async with open_chat(browser, relay) as chat:
            page = chat.page
            await page.goto(relay.url + "/#c=conv_nobody")
            await expect(page.locator("#notice")).to_contain_text("does not exist")
            await expect(page.get_by_text("What can I help with?")).to_be_visible()
            await expect(chat.messages).to_have_count(0)
            assert hash_id(page) is None
            assert await chat.problems(allowed=["status of 404"]) == []


async def sign_in_dialog(page: Page, mode: str) -> None:
    """Open the dialog from the account area and put it in `mode` (sign-in | register)."""
    await page.locator("#sign-in").click()
    form = page.locator("#auth-form")
    await expect(form).to_be_visible()
    await expect(page.locator("#auth-username")).to_be_focused()
    if await form.get_attribute("data-mode") != mode:
        await page.locator("#auth-mode").click()
    await expect(form).to_have_attribute("data-mode", mode)


async def submit_credentials(page: Page, username: str, password: str) -> None:
    await page.locator("#auth-username").fill(username)
    await page.locator("#auth-password").fill(password)
    await page.locator("#auth-submit").click()


async def test_guest_registers_signs_out_and_signs_in_again(
    browser: Browser, relay_for, fake: FakeUpstream, tmp_path: Path
) -> None:
    async with relay_for(data_dir=tmp_path) as relay:
        async with open_chat(browser, relay) as chat:
            page = chat.page
            account = page.locator("#account")
            await expect(account).to_have_text("Guest")
            await expect(page.locator("#account-hint")).to_contain_text("kept in this browser")
            await expect(page.locator("#sign-in")).to_be_visible()
            await expect(page.locator("#sign-out")).to_be_hidden()

            await ask(chat, fake, "A guest question", ["A guest answer."])
            guest_conversation = hash_id(page)

            # Register: the same conversations stay, and the one shown stays shown.
            await sign_in_dialog(page, "register")
            await submit_credentials(page, "alice", "short")
            await expect(page.locator("#auth-error")).to_contain_text("8 characters")
            await page.locator("#auth-password").fill(PASSWORD)
            await page.locator("#auth-submit").click()
            await expect(page.locator("#auth-form")).to_be_hidden()
            await expect(account).to_have_text("alice")
            await expect(page.locator("#sign-out")).to_be_visible()
            await expect(page.locator("#sign-in")).to_be_hidden()
            await expect(page.locator("#account-hint")).to_be_hidden()
            await expect(rows(page)).to_have_count(1)
            await expect(row(page, guest_conversation)).to_have_class(re.compile(r"\bactive\b"))
            await expect(chat.messages).to_have_count(2)
            await ask(chat, fake, "Still here?", ["Yes."])
            assert fake.requests[-1].json["messages"][0]["content"] == "A guest question"

            # Sign out: an empty guest page.
            await page.locator("#sign-out").click()
            await expect(account).to_have_text("Guest")
            await expect(rows(page)).to_have_count(0)
            await expect(chat.messages).to_have_count(0)
            await expect(page.get_by_text("What can I help with?")).to_be_visible()
            assert hash_id(page) is None
            status, me = await api(page, relay.url, "/api/me")
            assert status == 200 and me["is_guest"] is True

            # The new guest chats, then signs in: a wrong password first.
            await ask(chat, fake, "Second guest question", ["Noted."])
            await sign_in_dialog(page, "sign-in")
            await submit_credentials(page, "alice", "not the password")
            await expect(page.locator("#auth-error")).to_have_text("Wrong username or password.")
            await expect(page.locator("#auth-form")).to_be_visible()
            await expect(account).to_have_text("Guest")
            await expect(page.locator("#auth-password")).to_have_attribute("aria-invalid", "true")

            await page.locator("#auth-password").fill(PASSWORD)
            await page.locator("#auth-submit").click()
            await expect(page.locator("#auth-form")).to_be_hidden()
            await expect(account).to_have_text("alice")
            # Her conversation is back, and the guest's came along.
            await expect(rows(page).locator(".title")).to_have_text(
                ["Second guest question", "A guest question"]
            )
            await row(page, guest_conversation).locator(".conversation-link").click()
            await expect(chat.messages).to_have_count(4)

            # A taken username is said so in place.
            await page.locator("#sign-out").click()
            await expect(account).to_have_text("Guest")
            await sign_in_dialog(page, "register")
            await submit_credentials(page, "alice", PASSWORD)
            await expect(page.locator("#auth-error")).to_contain_text("username is taken")
            await expect(page.locator("#auth-username")).to_have_attribute("aria-invalid", "true")
            await page.keyboard.press("Escape")
            await expect(page.locator("#auth-form")).to_be_hidden()
            await expect(account).to_have_text("Guest")
            assert await chat.problems(allowed=[*REFUSALS, "status of 422"]) == []


async def test_too_many_wrong_passwords_says_how_long_to_wait(
    browser: Browser, relay_for, tmp_path: Path
) -> None:
    async with relay_for(data_dir=tmp_path, sign_in_max_failures=2, sign_in_window=90) as relay:
        async with open_chat(browser, relay) as chat:
            page = chat.page
            await sign_in_dialog(page, "sign-in")
            for _ in range(2):
                await submit_credentials(page, "nobody", "wrong password")
                await expect(page.locator("#auth-error")).to_have_text(
                    "Wrong username or password."
                )
                await expect(page.locator("#auth-submit")).to_be_enabled()
            await page.locator("#auth-submit").click()
            await expect(page.locator("#auth-error")).to_have_text(
                re.compile(r"Too many failed attempts\. Try again in (1|2) min\.")
            )
            await expect(page.locator("#account")).to_have_text("Guest")
            assert await chat.problems(allowed=REFUSALS) == []


async def test_sidebar_folds_away_at_phone_width(
    browser: Browser, relay_for, fake: FakeUpstream, tmp_path: Path
) -> None:
    async with relay_for(data_dir=tmp_path) as relay:
        async with open_chat(browser, relay) as chat:
            page = chat.page
            await ask(chat, fake, "On a phone later", ["Fine."])
            conversation_id = hash_id(page)
            await page.set_viewport_size({"width": 390, "height": 760})
            sidebar = page.locator("#sidebar")
            toggle = page.locator("#sidebar-toggle")
            await expect(sidebar).to_be_hidden()
            await expect(toggle).to_have_attribute("aria-expanded", "false")

            await toggle.click()
            await expect(sidebar).to_be_visible()
            await expect(toggle).to_have_attribute("aria-expanded", "true")
            await page.locator("#new-chat").click()
            await expect(sidebar).to_be_hidden()
            await expect(chat.messages).to_have_count(0)

            await toggle.click()
            await row(page, conversation_id).locator(".conversation-link").click()
            await expect(sidebar).to_be_hidden()
            await expect(chat.messages).to_have_count(2)

            # Wide again: the sidebar is a column beside the chat, and the toggle hides it.
            await page.set_viewport_size({"width": 1200, "height": 760})
            await expect(sidebar).to_be_visible()
            await toggle.click()
            await expect(sidebar).to_be_hidden()
            await toggle.click()
            await expect(sidebar).to_be_visible()
            assert await chat.problems() == []
