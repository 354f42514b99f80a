"""Answers rendered as markdown on the chat page, in a real browser (Debian's Chromium, driven
by Playwright) against the real relay and the fake upstream: what a reader sees, that it grows
smoothly while tokens stream, that the page follows it (until the reader scrolls up), and that
nothing a model writes can run, load or link anything dangerous."""

from __future__ import annotations

import asyncio
import re

from playwright.async_api import Browser, Request, expect

from tests.browser import HELD
from tests.e2e.test_web_page import open_chat
from tests.fake_upstream import FakeUpstream, livepeer_events, paced

RICH = (
    "## Steps\n"
    "\n"
    "1. Install it\n"
    "2. Run `make test`\n"
    "\n"
    "| name | size |\n"
    "|:-----|-----:|\n"
    "| a.txt | 12 |\n"
    "\n"
    "See [the docs](https://example.com/docs) or https://example.org.\n"
    "\n"
    "```python\n"
    "def hello():\n"
    '    print("<b>hi</b>")\n'
    "```\n"
)


def tokens_of(text: str, size: int = 7) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


async def test_markdown_is_rendered_with_code_blocks_that_copy(
    browser: Browser, relay_for, fake: FakeUpstream
) -> None:
    fake.script = livepeer_events(tokens_of(RICH))
    async with relay_for() as relay:
        async with open_chat(browser, relay) as chat:
            page = chat.page
            await page.context.grant_permissions(
                ["clipboard-read", "clipboard-write"], origin=relay.url
            )
            answer = await chat.say("How do I test it?")
            await expect(answer).to_have_attribute("data-state", "done")
            content = answer.locator(".content")
            await expect(content.locator("h2")).to_have_text("Steps")
            await expect(content.locator("ol > li")).to_have_text(["Install it", "Run make test"])
            await expect(content.locator("li code")).to_have_text("make test")
            await expect(content.locator("table th")).to_have_text(["name", "size"])
            await expect(content.locator("table td")).to_have_text(["a.txt", "12"])
            # Alignment without inline styles (the CSP forbids them): a class.
            await expect(content.locator("table td").nth(1)).to_have_class("align-right")
            link = content.get_by_role("link", name="the docs")
            await expect(link).to_have_attribute("href", "https://example.com/docs")
            await expect(link).to_have_attribute("target", "_blank")
            await expect(link).to_have_attribute("rel", re.compile(r"\bnoopener\b"))
            await expect(content.get_by_role("link", name="https://example.org")).to_have_count(1)

            block = content.locator(".code-block")
            await expect(block).to_have_count(1)
            await expect(block.locator(".code-lang")).to_have_text("python")
            code = 'def hello():\n    print("<b>hi</b>")\n'
            await expect(block.locator("pre code")).to_have_js_property("textContent", code)
            await expect(content.locator("b")).to_have_count(0)
            await block.get_by_role("button", name="Copy python code").click()
            await expect(block.locator(".copy-code")).to_have_text("Copied")
            assert await page.evaluate("navigator.clipboard.readText()") == code

            # Copy on the message copies what the model wrote: the markdown itself.
            await (
                answer.locator(".message-actions")
                .get_by_role("button", name="Copy the answer")
                .click()
            )
            await expect(answer.locator(".message-actions .copy")).to_have_text("Copied")
            assert await page.evaluate("navigator.clipboard.readText()") == RICH
            await chat.user_messages.first.locator(".message-actions .copy").click()
            assert await page.evaluate("navigator.clipboard.readText()") == "How do I test it?"

            # Screen readers heard the answer through the live region, without markdown marks.
            await expect(page.locator("#live")).to_contain_text("Steps")
            await expect(page.locator("#live")).not_to_contain_text("##")
            assert await chat.problems() == []


HOSTILE = (
    '# Hi <img src=x onerror="window.__pwned=1">\n'
    "\n"
    "<script>window.__pwned=2</script>\n"
    "\n"
    "[click me](javascript:window.__pwned=3) and "
    "[data link](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==) and "
    "<javascript:window.__pwned=4> and [vb](vbscript:msgbox)\n"
    "\n"
    '<a href="javascript:window.__pwned=5">raw link</a> <b onclick="window.__pwned=6">b</b>\n'
    "\n"
    "![tracker](http://127.0.0.1:9/pixel.png) <style>body{display:none}</style>\n"
    "\n"
    '<iframe src="about:blank"></iframe><form action="/api/chat"></form>\n'
    "\n"
    "```html\n"
    "<script>window.__pwned=7</script>\n"
    "```\n"
)


async def test_hostile_markdown_renders_inert(
    browser: Browser, relay_for, fake: FakeUpstream
) -> None:
    fake.script = livepeer_events(tokens_of(HOSTILE, 5))
    async with relay_for() as relay:
        async with open_chat(browser, relay) as chat:
            page = chat.page
            fetched: list[str] = []

            def seen(request: Request) -> None:
                if not request.url.startswith(relay.url):
                    fetched.append(request.url)

            page.on("request", seen)
            answer = await chat.say("Be evil")
            await expect(answer).to_have_attribute("data-state", "done")
            content = answer.locator(".content")
            messages = page.locator("#messages")
            # Raw HTML is shown as the characters the model wrote.
            await expect(content.locator("h1")).to_have_text(
                'Hi <img src=x onerror="window.__pwned=1">'
            )
            await expect(content).to_contain_text("<script>window.__pwned=2</script>")
            await expect(content).to_contain_text('<a href="javascript:window.__pwned=5">')
            await expect(content).to_contain_text("<style>body{display:none}</style>")
            for tag in ("img", "script", "style", "iframe", "form", "b", "svg"):
                await expect(messages.locator(tag)).to_have_count(0)
            await expect(messages.locator("[onerror], [onclick], [style]")).to_have_count(0)
            # Links with a dangerous scheme are no links; the image is a link to it, not loaded.
            hrefs = await content.locator("a").evaluate_all("links => links.map(a => a.href)")
            assert hrefs == ["http://127.0.0.1:9/pixel.png"]
            await expect(content.get_by_text("click me")).to_be_visible()
            await content.get_by_text("click me").click()
            await content.get_by_text("raw link", exact=False).click()
            await expect(content.locator(".code-block .code-lang")).to_have_text("html")
            await expect(page.locator("body")).to_be_visible()
            await asyncio.sleep(0.3)  # time for a would-be handler or image load
            assert await page.evaluate("typeof window.__pwned") == "undefined"
            assert fetched == []
            assert len(page.context.pages) == 1
            assert await chat.problems() == []


async def test_the_answer_grows_over_many_frames_while_it_streams(
    browser: Browser, relay_for, fake: FakeUpstream
) -> None:
    words = [f"word{i} " for i in range(40)]
    # Six parts, each held until the page shows it: at least five partial texts are on the
    # page for a while, however the machine's load batches the frames.
    parts = [asyncio.Event() for _ in range(5)]
    events = livepeer_events(words)
    fake.script = paced(events[:7], 0.005)
    for index, part in enumerate(parts):
        fake.script += [part, *paced(events[7 * (index + 1) : 7 * (index + 2)], 0.005)]
    async with relay_for(**HELD) as relay:
        async with open_chat(browser, relay) as chat:
            page = chat.page
            # Record the length of the answer's visible text at every animation frame.
            await page.evaluate(
                """() => {
                  window.__lengths = [];
                  const sample = () => {
                    const c = document.querySelector('#messages li.assistant .content');
                    if (c) window.__lengths.push(c.textContent.length);
                    requestAnimationFrame(sample);
                  };
                  requestAnimationFrame(sample);
                }"""
            )
            answer = await chat.say("Count words")
            for index, part in enumerate(parts):
                shown = words[7 * index + 6].strip()
                await expect(answer.locator(".content")).to_contain_text(shown)
                part.set()
            await expect(answer).to_have_attribute("data-state", "done")
            full = "".join(words).strip()
            await expect(answer.locator(".content")).to_have_text(full)
            lengths: list[int] = await page.evaluate("window.__lengths")
            distinct = sorted(set(lengths))
            # Seen in between: many partial texts, each longer than the one before.
            partial = [n for n in distinct if 0 < n < len(full)]
            assert len(partial) >= 5, distinct
            firsts = [lengths.index(n) for n in distinct]
            assert firsts == sorted(firsts), "the text never shrinks while it streams"
            assert await chat.problems() == []


async def test_the_page_follows_the_answer_until_the_reader_scrolls_up(
    browser: Browser, relay_for, fake: FakeUpstream
) -> None:
    lines = [f"Line {i} of a long answer.\n\n" for i in range(150)]
    gate = asyncio.Event()
    fake.script = [*paced(livepeer_events(lines[:40], stop_chunk=False), 0.01), gate]
    fake.script += paced(livepeer_events(lines[40:]), 0.02)
    async with relay_for(**HELD) as relay:
        async with open_chat(browser, relay) as chat:
            page = chat.page
            await page.set_viewport_size({"width": 900, "height": 600})
            scroller = page.locator("#scroller")
            answer = await chat.say("Write a lot")
            await expect(answer.locator(".content")).to_contain_text("Line 39 ")
            gap = "el => el.scrollHeight - el.scrollTop - el.clientHeight"
            # Followed: the newest line is in view.
            await expect(answer.get_by_text("Line 39 of a long answer.")).to_be_in_viewport()
            assert await scroller.evaluate(gap) < 40
            await expect(page.locator("#jump")).to_be_hidden()

            # The reader scrolls up: the page stays where the reader put it.
            await scroller.hover()
            await page.mouse.wheel(0, -400)
            await expect(page.locator("#jump")).to_be_visible()
            top = await scroller.evaluate("el => el.scrollTop")
            gate.set()
            await expect(answer.locator(".content")).to_contain_text("Line 120 ")
            assert await scroller.evaluate("el => el.scrollTop") == top
            await expect(answer.get_by_text("Line 120 of a long answer.")).not_to_be_in_viewport()

            # "↓ Latest" goes back down and follows again.
            await page.locator("#jump").click()
            await expect(answer).to_have_attribute("data-state", "done")
            await expect(answer.get_by_text("Line 149 of a long answer.")).to_be_in_viewport()
            await expect(page.locator("#jump")).to_be_hidden()
            assert await chat.problems() == []


async def test_dark_and_light_follow_the_system(browser: Browser, relay_for) -> None:
    async with relay_for() as relay:
        colours = {}
        for scheme in ("light", "dark"):
            context = await browser.new_context(color_scheme=scheme)
            try:
                page = await context.new_page()
                await page.goto(relay.url + "/")
                await expect(page.locator("#model")).to_be_enabled()
                colours[scheme] = await page.evaluate(
                    "getComputedStyle(document.body).backgroundColor"
                )
            finally:
                await context.close()
        assert colours == {"light": "rgb(246, 247, 249)", "dark": "rgb(21, 23, 26)"}


async def test_a_wide_answer_fits_a_phone_screen(
    browser: Browser, relay_for, fake: FakeUpstream
) -> None:
    wide = (
        "```text\n" + "x" * 300 + "\n```\n\n"
        "| " + " | ".join(f"column {i}" for i in range(12)) + " |\n"
        "|" + "---|" * 12 + "\n"
        "| "
        + " | ".join(str(i) for i in range(12))
        + " |\n\n"
        + "https://example.com/"
        + "a" * 200
        + "\n"
    )
    fake.script = livepeer_events(tokens_of(wide, 20))
    async with relay_for() as relay:
        async with open_chat(browser, relay) as chat:
            page = chat.page
            await page.set_viewport_size({"width": 390, "height": 760})
            answer = await chat.say("Something wide")
            await expect(answer).to_have_attribute("data-state", "done")
            await expect(answer.locator(".code-block")).to_have_count(1)
            # The code and the table scroll inside the answer; the page never scrolls sideways.
            assert await page.evaluate("document.documentElement.scrollWidth") == 390
            box = await answer.locator(".bubble").bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390
            await expect(chat.prompt).to_be_in_viewport()
            await expect(chat.send_button).to_be_in_viewport()
            assert await chat.problems() == []
