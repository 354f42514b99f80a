"""Screenshots of the chat page's main states (README, docs/page.md) and of the admin page
(docs/operations.md), into docs/screenshots/.

    .venv/bin/python -m tests.screenshots [OUT_DIR] [chat|admin ...]   # all of them by default

The real relay on loopback with the fake upstream (scripted answers), driven in Debian's
Chromium like the page tests. Not a test: run it by hand after changing the page, and commit
the PNGs it writes.
"""

from __future__ import annotations

import asyncio
import random
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, Page, async_playwright, expect

from chatrelay.config import Settings
from chatrelay.store import costs, usage
from chatrelay.store.models import utcnow
from tests.browser import CHROMIUM, CHROMIUM_ARGS
from tests.conftest import RunningRelay, serve
from tests.e2e.test_admin_usage import PASSWORD, attempt, bearer, make_user
from tests.e2e.test_web_resume import behind_proxy
from tests.fake_upstream import FakeUpstream, livepeer_chunk, livepeer_events, paced
from tests.limits_helpers import needed

OUT = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
DESKTOP = {"width": 1100, "height": 720}
PHONE = {"width": 390, "height": 780}

ANSWER = (
    "Here is a small function that **retries** a request with exponential back-off:\n"
    "\n"
    "```python\n"
    "import time\n"
    "\n"
    "def retry(call, attempts=5, base=0.5):\n"
    "    for attempt in range(attempts):\n"
    "        try:\n"
    "            return call()\n"
    "        except ConnectionError:\n"
    "            time.sleep(base * 2 ** attempt)\n"
    "    raise RuntimeError('gave up')\n"
    "```\n"
    "\n"
    "| attempt | wait |\n"
    "|--------:|-----:|\n"
    "| 1 | 0.5 s |\n"
    "| 2 | 1 s |\n"
    "| 3 | 2 s |\n"
    "\n"
    "- Keep `base` small for interactive calls.\n"
    "- See [the HTTP spec on Retry-After](https://www.rfc-editor.org/rfc/rfc9110#name-retry-after).\n"
)


def tokens(text: str, size: int = 6) -> list[bytes | float]:
    return [*livepeer_events([text[i : i + size] for i in range(0, len(text), size)])]


@asynccontextmanager
async def relay(
    fake: FakeUpstream, data_dir: Path, **overrides: Any
) -> AsyncIterator[RunningRelay]:
    settings = Settings(
        **{
            "embedded": False,
            "livepeer_gateway_urls": [fake.base_url],
            "data_dir": data_dir,
            "warm_models": [],
            "health_interval": 0,
            "retry_deadline": 0,
            "max_failovers": 0,
            "finished_job_ttl": 30,
            "first_token_timeout": 120,
            "stall_timeout": 60,
            **overrides,
        }
    )
    async with serve(settings) as running:
        yield running


@asynccontextmanager
async def page_on(
    browser: Browser, url: str, *, viewport: dict[str, int] = DESKTOP, scheme: str = "light"
) -> AsyncIterator[Page]:
    context = await browser.new_context(
        viewport=viewport,  # type: ignore[arg-type]
        color_scheme=scheme,  # type: ignore[arg-type]
        device_scale_factor=1,
    )
    try:
        page = await context.new_page()
        page.set_default_timeout(10_000)
        await page.goto(url + "/")
        await expect(page.locator("#model")).to_be_enabled()
        yield page
    finally:
        await context.close()


async def say(page: Page, text: str) -> Any:
    before = await page.locator("#messages li.assistant").count()
    await page.locator("#prompt").fill(text)
    await page.locator("#prompt").press("Enter")
    answer = page.locator("#messages li.assistant").nth(before)
    await expect(answer).to_be_visible()
    return answer


async def shoot(page: Page, name: str) -> None:
    await page.mouse.move(0, 0)
    await page.screenshot(path=OUT / f"{name}.png")
    print(OUT / f"{name}.png")


async def scenes(browser: Browser, fake: FakeUpstream, tmp: Path) -> None:
    async with relay(fake, tmp / "main") as r:
        # An answer with markdown and code, finished; two chats in the sidebar.
        async with page_on(browser, r.url) as page:
            fake.script = tokens("Fine, thanks. What shall we build?")
            done = await say(page, "Hello!")
            await expect(done).to_have_attribute("data-state", "done")
            await page.locator("#new-chat").click()
            fake.script = tokens(ANSWER)
            answer = await say(page, "How do I retry a flaky request in Python?")
            await expect(answer).to_have_attribute("data-state", "done")
            await shoot(page, "answer")

            # Dark, as the system says.
            await page.emulate_media(color_scheme="dark")
            await shoot(page, "dark")
            await page.emulate_media(color_scheme="light")

            # Phone width (the same guest, in a phone-sized window): the sidebar folds away.
            state = await page.context.storage_state()
            phone = await browser.new_context(
                viewport=PHONE,  # type: ignore[arg-type]
                storage_state=state,  # type: ignore[arg-type]
                device_scale_factor=1,
            )
            try:
                small = await phone.new_page()
                await small.goto(page.url)
                await expect(small.locator("#messages li.assistant")).to_have_count(1)
                await expect(small.locator("#sidebar")).to_be_hidden()
                await small.evaluate("document.querySelector('#scroller').scrollTop = 0")
                await shoot(small, "phone")
            finally:
                await phone.close()

        # Waiting for a cold model, then streaming, then stopped.
        async with page_on(browser, r.url) as page:
            gate = asyncio.Event()
            words = [f"{w} " for w in ("Once upon a time, a relay carried tokens " * 30).split()]
            fake.script = [gate, *paced(livepeer_events(words), 0.08)]
            answer = await say(page, "Tell me a long story.")
            await expect(answer.locator(".progress-text")).to_contain_text("3 s", timeout=8000)
            await shoot(page, "waiting")
            gate.set()
            await expect(answer.locator(".content")).to_contain_text("carried tokens Once")
            await shoot(page, "streaming")
            await page.keyboard.press("Escape")
            await expect(answer).to_have_attribute("data-state", "stopped")
            await shoot(page, "stopped")

            # Edit the last question in place.
            await page.locator("#messages li.user").last.locator(".edit").click()
            await page.locator(".edit-input").fill("Tell me a short story.")
            await shoot(page, "edit")

        # An upstream error in place, with Retry.
        async with page_on(browser, r.url) as page:
            fake.script = [
                livepeer_chunk("The answer is"),
                b'data: {"error":"CUDA out of memory"}\n\n',
            ]
            answer = await say(page, "What is the answer?")
            await expect(answer).to_have_attribute("data-state", "error")
            await shoot(page, "error")

    # Offline: the connection drops mid-answer and the page keeps trying.
    async with relay(fake, tmp / "offline") as direct, behind_proxy(direct) as (proxy, r):
        async with page_on(browser, r.url) as page:
            words = [f"{w} " for w in ("Streaming on, whatever the network does. " * 40).split()]
            fake.script = paced(livepeer_events(words), 0.05)
            answer = await say(page, "Keep going")
            await expect(answer.locator(".content")).to_contain_text("does. Streaming")
            proxy.refusing = True
            proxy.cut()
            await expect(page.get_by_test_id("connection")).to_contain_text("reconnecting in")
            await shoot(page, "offline")
            proxy.refusing = False
            await page.get_by_test_id("reconnect-now").click()

    # Rate limited, and a spent token budget.
    async with relay(fake, tmp / "limits", rate_limit="1/minute") as r:
        async with page_on(browser, r.url) as page:
            fake.script = tokens("Sure.")
            await say(page, "One question")
            refused = await say(page, "And another")
            await expect(refused).to_have_attribute("data-state", "error")
            await shoot(page, "rate-limited")
    budget = needed("One question", 512) + 30  # one answer fits, a second does not
    async with relay(fake, tmp / "budget", guest_token_budget=budget) as r:
        async with page_on(browser, r.url) as page:
            fake.script = tokens("Sure.")
            answer = await say(page, "One question")
            await expect(answer).to_have_attribute("data-state", "done")
            refused = await say(page, "And another")
            await expect(refused).to_have_attribute("data-state", "error")
            await shoot(page, "budget")


async def spending(r: RunningRelay) -> str:
    """A month of made-up spending by three accounts on two upstreams (the same every run),
    the operator's warming, and a key of an admin: that key."""
    dice = random.Random(24)
    _, admin_key, _ = await make_user(r, "ops", admin=True)
    people = [await make_user(r, name, key_name=key) for name, key in
              (("maria", "laptop"), ("jun", "ci-pipeline"), ("sam", "notebook"))]  # fmt: skip
    now = utcnow()
    rows: list[dict[str, Any]] = []
    ledger: list[dict[str, Any]] = []
    for days_ago in range(29, -1, -1):
        day = now - timedelta(days=days_ago, hours=1)
        # Every row with the same fields: one insert of many takes its columns from the first.
        rows.append(attempt(day, kind="warming", upstream="livepeer-eu", prompt_tokens=1,
                            completion_tokens=1, requested_tokens=1, paid_tokens=2,
                            paid_cost=9_000, used_cost=9_000, first_token_ms=None,
                            duration_ms=0, outcome="ok"))  # fmt: skip
        for n, (user_id, _, key_id) in enumerate(people):
            for i in range(dice.randint(1, 4 + 4 * n)):
                prompt, completion = dice.randint(200, 1500), dice.randint(50, 700)
                message = f"msg_{days_ago}_{n}_{i}"
                first = dice.randint(250, 900)
                # Livepeer bills the 1,024 tokens requested; OpenAI what was generated.
                livepeer = dice.random() < 0.7
                upstream, requested = ("livepeer-eu", 1024) if livepeer else ("openai", 1024)
                billed = requested if livepeer else completion
                rows.append(attempt(
                    day - timedelta(minutes=i), user_id=user_id,
                    api_key_id=key_id if dice.random() < 0.6 else None, message_id=message,
                    upstream=upstream, billing="requested" if livepeer else "used",
                    prompt_tokens=prompt, completion_tokens=completion,
                    requested_tokens=requested, paid_tokens=prompt + billed,
                    paid_cost=prompt * 1_000 + billed * 8_000,
                    used_cost=prompt * 1_000 + completion * 8_000,
                    first_token_ms=first, duration_ms=first + completion * 20,
                    outcome="ok" if dice.random() < 0.95 else "stall",
                ))  # fmt: skip
                if days_ago == 0:
                    ledger.append({"user_id": user_id, "message_id": message,
                                   "model": "m1", "upstream": upstream,
                                   "prompt_tokens": prompt, "completion_tokens": completion,
                                   "reserved_tokens": 0, "status": "complete",
                                   "source": "upstream", "created_at": day})  # fmt: skip
    await r.context.db.write(partial(costs.record_costs, rows=rows))
    for entry in ledger:
        await r.context.db.write(partial(usage.record_usage, **entry))
    return admin_key


async def admin_scene(browser: Browser, fake: FakeUpstream, tmp: Path) -> None:
    async with relay(fake, tmp / "admin", user_token_budget=200_000) as r:
        admin_key = await spending(r)
        users = (await r.client.get("/api/admin/users", headers=bearer(admin_key))).json()
        by_name = {u["username"]: u["id"] for u in users["data"]}
        for name, change in (("jun", {"spend_limit": 2.5}), ("sam", {"disabled": True})):
            await r.client.patch(
                f"/api/admin/users/{by_name[name]}", json=change, headers=bearer(admin_key)
            )
        context = await browser.new_context(
            viewport=DESKTOP,  # type: ignore[arg-type]
            color_scheme="light",
            device_scale_factor=1,
        )
        try:
            login = {"username": "ops", "password": PASSWORD}
            await context.request.post(r.url + "/api/auth/login", data=login)
            page = await context.new_page()
            page.set_default_timeout(10_000)
            await page.goto(r.url + "/admin")
            await expect(page.locator("body")).to_have_attribute("data-loaded", "true")
            await expect(page.get_by_test_id("users").locator("tbody tr")).to_have_count(4)
            await page.mouse.move(0, 0)
            await page.screenshot(path=OUT / "admin.png", full_page=True)
            print(OUT / "admin.png")
        finally:
            await context.close()


SCENES = {"chat": scenes, "admin": admin_scene}


async def main(out: Path, names: list[str]) -> None:
    global OUT
    OUT = out
    OUT.mkdir(parents=True, exist_ok=True)
    fake = FakeUpstream()
    await fake.start()
    try:
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                for name in names or list(SCENES):
                    with tempfile.TemporaryDirectory() as tmp:
                        await SCENES[name](browser, fake, Path(tmp))
            finally:
                await browser.close()
    finally:
        await fake.close()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT, sys.argv[2:]))
