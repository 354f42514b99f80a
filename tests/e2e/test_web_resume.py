"""An answer outlives the page's connection to it, in a real browser (Debian's Chromium, driven
by Playwright) against the real relay and the fake upstream: a reload in the middle of an
answer re-attaches to it, a dropped connection shows the offline state and then re-attaches
with Last-Event-ID, and either way the answer completes on the page with every token once."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from playwright.async_api import Browser, Request, expect

from tests.browser import HELD
from tests.conftest import RunningRelay
from tests.e2e.test_web_page import open_chat
from tests.fake_upstream import FakeUpstream, Step, livepeer_events, paced
from tests.polling import wait_until
from tests.ports import free_port

TOKENS = [f" t{i}" for i in range(60)]
FULL = "".join(TOKENS).strip()


def held_after(count: int, rest: asyncio.Event) -> list[Step]:
    """The answer's first ``count`` tokens, then the rest once ``rest`` is set: what the test
    does in the middle of the answer happens in the middle, however slow the machine."""
    events = livepeer_events(TOKENS)
    return [*paced(events[:count], 0.01), rest, *paced(events[count:], 0.01)]


# The browser logs the requests that failed while the server could not be reached.
UNREACHABLE = ["ERR_CONNECTION", "ERR_EMPTY_RESPONSE", "ERR_INCOMPLETE", "Failed to load"]


class CuttableProxy:
    """A TCP proxy in front of the relay that can cut every connection and refuse new ones:
    the server unreachable, as a browser sees it, while the relay itself runs on."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.refusing = False
        self._pipes: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.port = free_port()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def cut(self) -> None:
        for writer in list(self._pipes):
            writer.transport.abort()
        self._pipes.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._pipes.update((writer, up_writer))
        await asyncio.gather(
            self._pump(reader, up_writer), self._pump(up_reader, writer), return_exceptions=True
        )

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._pipes.discard(writer)
            with contextlib.suppress(Exception):
                writer.transport.abort()


@asynccontextmanager
async def behind_proxy(relay: RunningRelay) -> AsyncIterator[tuple[CuttableProxy, Any]]:
    """The relay as the browser reaches it: through a proxy that can fail."""
    port = int(relay.url.rsplit(":", 1)[1])
    proxy = CuttableProxy(port)
    await proxy.start()
    try:
        yield proxy, RunningRelay(proxy.url, relay.app, relay.client)
    finally:
        await proxy.close()


class StreamRequests:
    """The page's re-attach requests (GET /api/messages/{id}/stream) and their headers."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, str]]] = []

    def __call__(self, request: Request) -> None:
        if request.method == "GET" and "/api/messages/" in request.url:
            self.seen.append((request.url, request.headers))


async def test_reload_in_the_middle_of_an_answer_reattaches_and_completes(
    browser: Browser, relay_for, fake: FakeUpstream, tmp_path
) -> None:
    rest = asyncio.Event()
    fake.script = held_after(10, rest)
    async with relay_for(**HELD, data_dir=tmp_path) as relay:
        async with open_chat(browser, relay) as chat:
            page = chat.page
            answer = await chat.say("Count slowly")
            await expect(answer.locator(".content")).to_contain_text("t5 ")
            streams = StreamRequests()
            page.on("request", streams)

            await page.reload()
            await expect(chat.messages).to_have_count(2)
            answer = chat.answers.last
            # Attached again: still running, with Stop to stop it; then growing.
            await expect(answer).to_have_attribute("data-state", "streaming")
            await expect(chat.send_button).to_have_text("Stop")
            rest.set()
            await expect(answer.locator(".content")).to_contain_text("t40 ")
            await expect(answer).to_have_attribute("data-state", "done")
            # Every token once: the replay did not add to the text shown before it.
            await expect(answer.locator(".content")).to_have_text(FULL)
            await expect(chat.send_button).to_have_text("Send")
            assert len(streams.seen) == 1
            assert "last-event-id" not in streams.seen[0][1]  # from its start
            assert len(fake.requests) == 1  # followed, never asked again

            # What was stored is what the page showed.
            await page.reload()
            await expect(chat.answers.last.locator(".content")).to_have_text(FULL)
            await expect(chat.answers.last).to_have_attribute("data-state", "done")
            assert await chat.problems() == []


async def test_stop_works_on_an_answer_reattached_after_a_reload(
    browser: Browser, relay_for, fake: FakeUpstream, tmp_path
) -> None:
    fake.script = paced(livepeer_events([f" w{i}" for i in range(500)]), 0.03)
    async with relay_for(data_dir=tmp_path) as relay:
        async with open_chat(browser, relay) as chat:
            page = chat.page
            answer = await chat.say("Count for a long time")
            await expect(answer.locator(".content")).to_contain_text("w3 ")
            await page.reload()
            answer = chat.answers.last
            await expect(answer).to_have_attribute("data-state", "streaming")
            await page.keyboard.press("Escape")
            await expect(answer).to_have_attribute("data-state", "stopped")
            await expect(answer.locator(".note-stopped")).to_have_text("stopped")
            await wait_until(lambda: fake.disconnected_at is not None)
            partial = (await answer.locator(".content").text_content() or "").strip()
            assert partial.startswith("w0 w1 w2 w3") and "w499" not in partial
            # The server stored the same partial text, marked stopped.
            await page.reload()
            await expect(chat.answers.last).to_have_attribute("data-state", "stopped")
            await expect(chat.answers.last.locator(".content")).to_have_text(partial)
            assert await chat.problems() == []


async def test_a_dropped_connection_shows_offline_then_resumes_every_token_once(
    browser: Browser, relay_for, fake: FakeUpstream, tmp_path
) -> None:
    rest = asyncio.Event()
    fake.script = held_after(10, rest)
    # The answer's events stay available a while after it ends: the resume replays them.
    async with relay_for(**HELD, data_dir=tmp_path, finished_job_ttl=30) as direct:
        async with behind_proxy(direct) as (proxy, relay):
            async with open_chat(browser, relay) as chat:
                page = chat.page
                streams = StreamRequests()
                page.on("request", streams)
                answer = await chat.say("Count slowly")
                await expect(answer.locator(".content")).to_contain_text("t5 ")

                # The server becomes unreachable in the middle of the answer.
                proxy.refusing = True
                proxy.cut()
                bar = page.get_by_test_id("connection")
                await expect(bar).to_be_visible()
                await expect(bar).to_contain_text("Cannot reach the server")
                await expect(bar).to_contain_text("reconnecting in")
                await expect(answer).to_have_attribute("data-connection", "lost")
                await expect(chat.send_button).to_have_text("Stop")
                # The answer goes on on the server meanwhile (a dropped connection is no stop).
                rest.set()
                await wait_until(lambda: fake.finished_at is not None)
                assert fake.disconnected_at is None

                # Reachable again: "Reconnect now" re-attaches from the last event seen.
                proxy.refusing = False
                # Dispatched, not clicked: on a loaded machine the page's own retry can come
                # first and hide the bar while Playwright waits for the button to be stable.
                await page.get_by_test_id("reconnect-now").dispatch_event("click")
                await expect(answer).to_have_attribute("data-state", "done", timeout=15_000)
                await expect(bar).to_be_hidden()
                await expect(answer).not_to_have_attribute("data-connection", "lost")
                await expect(answer.locator(".content")).to_have_text(FULL)
                await expect(chat.send_button).to_have_text("Send")
                resumed = [headers.get("last-event-id") for _, headers in streams.seen]
                assert resumed and all(r is not None and int(r) > 1 for r in resumed), resumed
                assert len(fake.requests) == 1
                assert await chat.problems(allowed=UNREACHABLE) == []


async def test_a_server_that_cannot_be_reached_is_said_so_and_retry_sends(
    browser: Browser, relay_for, fake: FakeUpstream, tmp_path
) -> None:
    async with relay_for(data_dir=tmp_path) as direct:
        async with behind_proxy(direct) as (proxy, relay):
            async with open_chat(browser, relay) as chat:
                proxy.refusing = True
                proxy.cut()  # kept-alive connections too
                answer = await chat.say("Anyone there?")
                await expect(answer).to_have_attribute("data-state", "error")
                await expect(answer).to_have_attribute("data-error", "unreachable")
                await expect(answer.locator(".error")).to_contain_text(
                    "Cannot reach the chatrelay server"
                )
                assert fake.requests == []

                proxy.refusing = False
                fake.script = livepeer_events(["Here", " now."])
                await answer.get_by_role("button", name="Retry").click()
                await expect(answer).to_have_attribute("data-state", "done")
                await expect(answer.locator(".content")).to_have_text("Here now.")
                await expect(chat.user_messages).to_have_count(1)
                assert [r.json["messages"] for r in fake.requests] == [
                    [{"role": "user", "content": "Anyone there?"}]
                ]
                assert await chat.problems(allowed=UNREACHABLE) == []


async def test_the_browser_going_offline_is_shown_until_it_is_back(
    browser: Browser, relay_for, fake: FakeUpstream
) -> None:
    async with relay_for() as relay:
        async with open_chat(browser, relay) as chat:
            bar = chat.page.get_by_test_id("connection")
            await expect(bar).to_be_hidden()
            await chat.page.context.set_offline(True)
            await expect(bar).to_be_visible()
            await expect(bar.locator("#connection-text")).to_have_text("You are offline.")
            await expect(chat.page.get_by_test_id("reconnect-now")).to_be_hidden()
            await chat.page.context.set_offline(False)
            await expect(bar).to_be_hidden()
            fake.script = livepeer_events(["Back."])
            answer = await chat.say("Online again?")
            await expect(answer.locator(".content")).to_have_text("Back.")
            assert await chat.problems() == []
