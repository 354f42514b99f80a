"""The chat page in a real browser (Debian's Chromium, driven by Playwright), against the real
relay on a real socket and the fake upstream: what a person sees, and what the upstream gets."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
from playwright.async_api import Browser, ConsoleMessage, Locator, Page, expect

from chatrelay.config import LIVEPEER_MODELS
from tests.browser import HELD, RECORD_CSP_VIOLATIONS, WAIT_MS
from tests.conftest import RunningRelay
from tests.fake_upstream import FakeUpstream, livepeer_chunk, livepeer_events, paced
from tests.polling import wait_until


@dataclass
class ChatPage:
    page: Page
    csp_header: str
    console_errors: list[str] = field(default_factory=list)

    @property
    def prompt(self) -> Locator:
        return self.page.locator("#prompt")

    @property
    def send_button(self) -> Locator:
        return self.page.locator("#send")

    @property
    def messages(self) -> Locator:
        return self.page.locator("#messages > li")

    @property
    def user_messages(self) -> Locator:
        return self.page.locator("#messages li.message.user")

    @property
    def answers(self) -> Locator:
        return self.page.locator("#messages li.message.assistant")

    @property
    def select(self) -> Locator:
        return self.page.locator("#model")

    @property
    def hint(self) -> Locator:
        return self.page.locator("#model-hint")

    def option(self, model: str) -> Locator:
        return self.select.locator(f'option[value="{model}"]')

    async def say(self, text: str) -> Locator:
        """Type a message and press Enter; returns the assistant bubble it creates."""
        before = await self.answers.count()
        await self.prompt.fill(text)
        await self.prompt.press("Enter")
        await expect(self.answers).to_have_count(before + 1)
        return self.answers.nth(before)

    async def problems(self, allowed: Iterable[str] = ()) -> list[str]:
        violations: list[str] = await self.page.evaluate("window.__cspViolations")
        errors = [e for e in self.console_errors if not any(a in e for a in allowed)]
        return errors + [f"CSP violation: {v}" for v in violations]


@asynccontextmanager
async def open_chat(browser: Browser, relay: RunningRelay) -> AsyncIterator[ChatPage]:
    """A fresh browser context on the relay's page, with the model list loaded."""
    context = await browser.new_context()
    try:
        page = await context.new_page()
        page.set_default_timeout(WAIT_MS)
        await page.add_init_script(RECORD_CSP_VIOLATIONS)
        errors: list[str] = []

        def on_console(message: ConsoleMessage) -> None:
            if message.type == "error":
                errors.append(f"console: {message.text}")

        page.on("console", on_console)
        page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
        response = await page.goto(relay.url + "/")
        assert response is not None and response.status == 200
        chat = ChatPage(page, response.headers.get("content-security-policy", ""), errors)
        await expect(chat.select).to_be_enabled()
        yield chat
    finally:
        await context.close()


async def test_page_loads_under_csp_with_the_livepeer_models(browser: Browser, relay_for) -> None:
    async with relay_for() as relay:
        async with open_chat(browser, relay) as chat:
            page = chat.page
            csp = [d.strip() for d in chat.csp_header.split(";")]
            assert "default-src 'self'" in csp
            assert "script-src 'self'" in csp
            assert "style-src 'self'" in csp
            assert "unsafe" not in chat.csp_header

            await expect(page).to_have_title("chatrelay")
            await expect(page.get_by_text("What can I help with?")).to_be_visible()
            await expect(page.locator("#model option")).to_have_text(
                [f"{model} (livepeer) · cold" for model in LIVEPEER_MODELS]
            )
            await expect(page.locator("#model")).to_have_value(LIVEPEER_MODELS[0])
            await expect(chat.send_button).to_have_text("Send")
            await expect(chat.prompt).to_be_focused()
            await expect(page.locator("#notice")).to_be_hidden()
            # A first visit is a guest with an empty list of chats beside the empty chat.
            await expect(page.locator("#sidebar")).to_be_visible()
            await expect(page.locator("#account")).to_have_text("Guest")
            await expect(page.locator("#sign-in")).to_be_visible()
            await expect(page.locator("#conversations-status")).to_contain_text("No chats yet")
            # The stylesheet and the module scripts all ran: the page built its own model list.
            assert await page.evaluate("getComputedStyle(document.body).margin") == "0px"
            assert await chat.problems() == []


async def test_answer_streams_in_token_by_token(
    browser: Browser, relay_for, fake: FakeUpstream
) -> None:
    first_token = asyncio.Event()
    rest = asyncio.Event()
    fake.script = [
        first_token,
        livepeer_chunk("Hello"),
        rest,
        *livepeer_events([",", " world", "!"]),
    ]
    async with relay_for(**HELD) as relay:
        async with open_chat(browser, relay) as chat:
            answer = await chat.say("Say hello")

            await expect(chat.user_messages).to_have_count(1)
            await expect(chat.user_messages.locator(".content")).to_have_text("Say hello")
            await expect(chat.prompt).to_have_value("")
            # Nothing from the model yet: the bubble says it is waiting, and Send became Stop.
            await expect(answer).to_have_attribute("data-state", "waiting")
            await expect(answer.locator(".progress")).to_be_visible()
            await expect(answer.locator(".progress")).to_contain_text("Waiting for the model")
            await expect(chat.send_button).to_have_text("Stop")

            first_token.set()
            await expect(answer.locator(".content")).to_have_text("Hello")
            await expect(answer).to_have_attribute("data-state", "streaming")
            await expect(answer).to_have_attribute("aria-busy", "true")
            await expect(answer.locator(".progress")).to_be_hidden()
            # The upstream is still holding the rest back: the page shows what it has so far.
            await asyncio.sleep(0.2)
            await expect(answer.locator(".content")).to_have_text("Hello")
            await expect(answer).to_have_attribute("data-state", "streaming")
            await expect(chat.send_button).to_have_text("Stop")

            rest.set()
            await expect(answer.locator(".content")).to_have_text("Hello, world!")
            await expect(answer).to_have_attribute("data-state", "done")
            await expect(answer).not_to_have_attribute("aria-busy", "true")
            await expect(chat.page.locator("#live")).to_have_text("Hello, world!")
            await expect(chat.send_button).to_have_text("Send")
            await expect(answer.locator(".error")).to_have_count(0)
            assert fake.requests[-1].json["model"] == LIVEPEER_MODELS[0]
            assert fake.requests[-1].json["messages"] == [{"role": "user", "content": "Say hello"}]
            assert await chat.problems() == []


async def test_shift_enter_adds_a_line_and_enter_sends(
    browser: Browser, relay_for, fake: FakeUpstream
) -> None:
    fake.script = livepeer_events(["Two lines, got it."])
    async with relay_for() as relay:
        async with open_chat(browser, relay) as chat:
            await chat.prompt.type("line one")
            await chat.prompt.press("Shift+Enter")
            await chat.prompt.type("line two")
            await expect(chat.prompt).to_have_value("line one\nline two")
            await expect(chat.messages).to_have_count(0)
            assert fake.requests == []

            await chat.prompt.press("Enter")
            await expect(chat.user_messages.locator(".content")).to_have_js_property(
                "textContent", "line one\nline two"
            )
            await expect(chat.answers.locator(".content")).to_have_text("Two lines, got it.")
            assert fake.requests[-1].json["messages"][-1]["content"] == "line one\nline two"
            assert await chat.problems() == []


async def test_hostile_model_output_is_shown_as_text(
    browser: Browser, relay_for, fake: FakeUpstream
) -> None:
    tokens = [
        "Look: ",
        '<img src=x onerror="window.__pwned=1">',
        " and ",
        "<script>window.__pwned=2</script>",
        " <b>bold?</b>",
    ]
    fake.script = livepeer_events(tokens)
    async with relay_for() as relay:
        async with open_chat(browser, relay) as chat:
            question = '<img src=y onerror="window.__pwned=3"> what is this?'
            answer = await chat.say(question)
            await expect(answer).to_have_attribute("data-state", "done")
            await expect(answer.locator(".content")).to_have_js_property(
                "textContent", "".join(tokens)
            )
            await expect(chat.user_messages.locator(".content")).to_have_js_property(
                "textContent", question
            )
            await expect(chat.page.locator("#messages img")).to_have_count(0)
            await expect(chat.page.locator("#messages script")).to_have_count(0)
            await expect(chat.page.locator("#messages b")).to_have_count(0)
            # Give a would-be <img> time to fail loading and fire its handler.
            await asyncio.sleep(0.2)
            assert await chat.page.evaluate("typeof window.__pwned") == "undefined"
            assert await chat.problems() == []


@pytest.mark.parametrize("how", ["click Stop", "press Escape"])
async def test_stop_keeps_the_partial_answer_and_closes_upstream(
    browser: Browser, relay_for, fake: FakeUpstream, how: str
) -> None:
    fake.script = paced(livepeer_events([f" w{i}" for i in range(500)]), 0.03)
    async with relay_for() as relay:
        async with open_chat(browser, relay) as chat:
            answer = await chat.say("Count for a long time")
            content = answer.locator(".content")
            await expect(content).to_contain_text("w0 w1 w2")
            await expect(chat.send_button).to_have_text("Stop")

            if how == "click Stop":
                await chat.send_button.click()
            else:
                await chat.page.keyboard.press("Escape")

            await expect(answer).to_have_attribute("data-state", "stopped")
            await expect(chat.send_button).to_have_text("Send")
            await expect(answer.locator(".note-stopped")).to_have_text("stopped")
            # The upstream request is cut by the stop: not let run to its end (15 s away).
            await wait_until(lambda: fake.disconnected_at is not None)
            assert fake.finished_at is None

            partial = await content.text_content()
            # Rendered as markdown: a paragraph, without the leading space of the first token.
            assert partial is not None and partial.startswith("w0 w1 w2")
            assert " w499" not in partial
            await asyncio.sleep(0.3)  # and it stays as it was: nothing more arrives
            assert await content.text_content() == partial
            await expect(answer.locator(".error")).to_have_count(0)
            await expect(chat.prompt).to_be_editable()
            assert await chat.problems() == []


async def test_upstream_error_is_shown_in_place_and_retry_answers(
    browser: Browser, relay_for, fake: FakeUpstream
) -> None:
    fake.fail(503, {"error": {"message": "Service Unavailable Error"}})
    async with relay_for() as relay:
        async with open_chat(browser, relay) as chat:
            answer = await chat.say("Are you there?")
            await expect(answer).to_have_attribute("data-state", "error")
            await expect(answer.locator(".error")).to_contain_text("Service Unavailable Error")
            retry = answer.get_by_role("button", name="Retry")
            await expect(retry).to_be_visible()
            await expect(chat.send_button).to_have_text("Send")

            fake.script = livepeer_events(["Yes", ", back now."])
            await retry.click()
            await expect(answer.locator(".content")).to_have_text("Yes, back now.")
            await expect(answer).to_have_attribute("data-state", "done")
            await expect(answer.locator(".error")).to_have_count(0)
            await expect(answer.locator(".retry")).to_have_count(0)
            # Retry asked again in the same bubble, with the same conversation.
            await expect(chat.answers).to_have_count(1)
            assert len(fake.requests) == 2
            assert fake.requests[1].json["messages"] == fake.requests[0].json["messages"]
            # The browser itself logs the failed request (a 502 from the relay), nothing else.
            assert await chat.problems(allowed=["status of 502"]) == []


async def test_error_mid_answer_keeps_the_partial_text(
    browser: Browser, relay_for, fake: FakeUpstream
) -> None:
    fake.script = [livepeer_chunk("Half"), b'data: {"error":"CUDA out of memory"}\n\n']
    async with relay_for() as relay:
        async with open_chat(browser, relay) as chat:
            answer = await chat.say("Tell me everything")
            await expect(answer).to_have_attribute("data-state", "error")
            await expect(answer.locator(".content")).to_have_text("Half")
            await expect(answer.locator(".error")).to_contain_text("CUDA out of memory")
            await expect(answer.get_by_role("button", name="Retry")).to_be_visible()
            await expect(chat.send_button).to_have_text("Send")
            assert await chat.problems() == []


async def test_history_is_sent_and_new_chat_starts_over(
    browser: Browser, relay_for, fake: FakeUpstream
) -> None:
    async with relay_for() as relay:
        async with open_chat(browser, relay) as chat:
            fake.script = livepeer_events(["Paris", " is the capital."])
            first = await chat.say("Capital of France?")
            await expect(first).to_have_attribute("data-state", "done")

            fake.script = livepeer_events(["About 2.1 million."])
            second = await chat.say("How many people live there?")
            await expect(second).to_have_attribute("data-state", "done")

            assert fake.requests[-1].json["messages"] == [
                {"role": "user", "content": "Capital of France?"},
                {"role": "assistant", "content": "Paris is the capital."},
                {"role": "user", "content": "How many people live there?"},
            ]
            await expect(chat.messages).to_have_count(4)

            await chat.page.get_by_role("button", name="New chat").click()
            await expect(chat.messages).to_have_count(0)
            await expect(chat.page.get_by_text("What can I help with?")).to_be_visible()
            await expect(chat.prompt).to_be_focused()

            await chat.page.locator("#model").select_option("google/gemma-2-9b-it")
            fake.script = livepeer_events(["Hi again."])
            fresh = await chat.say("Hello")
            await expect(fresh.locator(".content")).to_have_text("Hi again.")
            await expect(chat.messages).to_have_count(2)
            assert fake.requests[-1].json["messages"] == [{"role": "user", "content": "Hello"}]
            assert fake.requests[-1].json["model"] == "google/gemma-2-9b-it"
            assert await chat.problems() == []


async def test_the_header_shows_the_budget_left_and_a_spent_budget_in_place(
    browser: Browser, relay_for, fake: FakeUpstream
) -> None:
    from tests.limits_helpers import needed

    fake.script = livepeer_events(["Fine", " thanks."])  # billed 42 + 2 tokens
    budget = needed("How are you?", 512) + 30  # one answer fits, a second does not
    async with relay_for(guest_token_budget=budget) as relay:
        async with open_chat(browser, relay) as chat:
            shown = chat.page.get_by_test_id("budget")
            await expect(shown).to_have_text(f"{budget:,} tokens left")
            await expect(shown).to_have_attribute("title", re.compile(r"0 of .* this day"))
            answer = await chat.say("How are you?")
            await expect(answer.locator(".content")).to_have_text("Fine thanks.")
            await expect(shown).to_have_text(f"{budget - 44:,} tokens left")

            refused = await chat.say("And tomorrow?")
            await expect(refused).to_have_attribute("data-state", "error")
            error = refused.locator(".error")
            await expect(error).to_contain_text("Your token budget is used up for this day")
            await expect(error).to_contain_text("Your token budget starts again")
            assert len(fake.requests) == 1
            assert await chat.problems(allowed=["status of 429"]) == []


async def test_no_budget_no_budget_in_the_header(browser: Browser, relay_for) -> None:
    async with relay_for() as relay:
        async with open_chat(browser, relay) as chat:
            await chat.page.wait_for_load_state("networkidle")
            await expect(chat.page.get_by_test_id("budget")).to_be_hidden()
