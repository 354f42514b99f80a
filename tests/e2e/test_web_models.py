"""How ready each model is, on the chat page (Debian's Chromium, driven by Playwright), against
the real relay and the fake upstream: the selector says cold / warm / unavailable, a hint line
says what that means, and the page looks again after each answer."""

from __future__ import annotations

import asyncio
import re

from playwright.async_api import Browser, expect

from chatrelay.config import LIVEPEER_MODELS
from tests.browser import HELD
from tests.e2e.test_web_page import open_chat
from tests.fake_upstream import FakeUpstream, livepeer_events

DEFAULT = LIVEPEER_MODELS[0]
OTHER = LIVEPEER_MODELS[1]
WARMING_HINT = "Warming up: the first answer may take a minute."
UNAVAILABLE_HINT = (
    "No upstream can serve this model right now; try again shortly or pick another model."
)


async def test_a_fresh_relay_shows_cold_models_and_a_warm_one_after_an_answer(
    browser: Browser, relay_for, fake: FakeUpstream
) -> None:
    first_token = asyncio.Event()
    fake.script = [first_token, *livepeer_events(["Ready", " now."])]
    async with relay_for(**HELD) as relay:
        async with open_chat(browser, relay) as chat:
            # Nothing has answered yet: every model is cold, and the page says what that means.
            await expect(chat.select.locator("option")).to_have_text(
                [f"{model} (livepeer) · cold" for model in LIVEPEER_MODELS]
            )
            await expect(chat.select).to_have_value(DEFAULT)
            await expect(chat.select).to_have_attribute("data-status", "cold")
            await expect(chat.hint).to_be_visible()
            await expect(chat.hint).to_have_text(WARMING_HINT)

            answer = await chat.say("Are you awake?")
            # The model is known to be cold: the bubble says so from the start, not after 10 s.
            await expect(answer).to_have_attribute("data-state", "waiting")
            await expect(answer.locator(".progress-hint")).to_be_visible()
            await expect(answer.locator(".progress-hint")).to_have_text(
                "Cold models can take a minute or more to load."
            )

            first_token.set()
            await expect(answer.locator(".content")).to_have_text("Ready now.")
            await expect(answer).to_have_attribute("data-state", "done")
            # The answer is labelled with the model, not with how ready it was.
            await expect(answer.locator(".meta")).to_have_text(f"{DEFAULT} (livepeer)")

            # The page looked again once the answer ended: the model is warm, the hint gone.
            await expect(chat.option(DEFAULT)).to_have_text(f"{DEFAULT} (livepeer) · warm")
            await expect(chat.option(DEFAULT)).to_have_attribute(
                "title", re.compile(r"^last first token in \d+(\.\d)? s$")
            )
            await expect(chat.select).to_have_attribute("data-status", "warm")
            await expect(chat.hint).to_be_hidden()
            await expect(chat.option(OTHER)).to_have_text(f"{OTHER} (livepeer) · cold")
            await expect(chat.select).to_have_value(DEFAULT)
            assert await chat.problems() == []


async def test_the_chosen_model_stays_chosen_while_statuses_change(
    browser: Browser, relay_for, fake: FakeUpstream
) -> None:
    fake.script = livepeer_events(["Hello", " from the other one."])
    async with relay_for() as relay:
        async with open_chat(browser, relay) as chat:
            await expect(chat.select).to_have_attribute("data-status", "cold")
            await chat.select.select_option(OTHER)
            await expect(chat.select).to_have_value(OTHER)
            await expect(chat.hint).to_have_text(WARMING_HINT)

            answer = await chat.say("Hi")
            await expect(answer).to_have_attribute("data-state", "done")
            assert fake.requests[-1].json["model"] == OTHER

            await expect(chat.option(OTHER)).to_have_text(f"{OTHER} (livepeer) · warm")
            await expect(chat.select).to_have_value(OTHER)
            await expect(chat.select).to_have_attribute("data-status", "warm")
            await expect(chat.hint).to_be_hidden()
            await expect(chat.option(DEFAULT)).to_have_text(f"{DEFAULT} (livepeer) · cold")

            # Back to the default model: still cold, so the hint is back.
            await chat.select.select_option(DEFAULT)
            await expect(chat.select).to_have_attribute("data-status", "cold")
            await expect(chat.hint).to_have_text(WARMING_HINT)
            await expect(chat.hint).to_be_visible()
            assert await chat.problems() == []


async def test_a_model_without_a_usable_upstream_shows_unavailable(
    browser: Browser, relay_for, fake: FakeUpstream
) -> None:
    fake.fail(502, {"error": {"message": "Internal Server Error"}})
    async with relay_for(breaker_failures=1, breaker_cooldown=60) as relay:
        async with open_chat(browser, relay) as chat:
            await expect(chat.option(DEFAULT)).to_have_text(f"{DEFAULT} (livepeer) · cold")

            answer = await chat.say("Anyone there?")
            await expect(answer).to_have_attribute("data-state", "error")
            await expect(answer.locator(".error")).to_contain_text("Internal Server Error")

            # One failure opened the only upstream's breaker: nothing can serve any model now.
            await expect(chat.select.locator("option")).to_have_text(
                [f"{model} (livepeer) · unavailable" for model in LIVEPEER_MODELS]
            )
            await expect(chat.select).to_have_value(DEFAULT)
            await expect(chat.select).to_have_attribute("data-status", "unavailable")
            await expect(chat.hint).to_be_visible()
            await expect(chat.hint).to_have_text(UNAVAILABLE_HINT)
            assert len(fake.requests) == 1
            # The browser itself logs the failed request (a 502 from the relay), nothing else.
            assert await chat.problems(allowed=["status of 502"]) == []
