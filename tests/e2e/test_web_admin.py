"""The admin page (``/admin``) in a real browser (Debian's Chromium, driven by Playwright)
against the real relay: spend and tokens per day drawn as charts, the top users and keys,
the upstreams' figures, and an admin setting a budget and a spend limit, disabling an
account and revoking a key, all under the app's CSP; anyone else gets the unknown path's 404.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from functools import partial

import httpx
from playwright.async_api import Browser, BrowserContext, ConsoleMessage, Page, expect

from chatrelay.store import costs
from chatrelay.store.models import utcnow
from tests.browser import RECORD_CSP_VIOLATIONS, WAIT_MS
from tests.conftest import RunningRelay
from tests.e2e.test_admin_usage import PASSWORD, attempt, bearer, make_user

MILLI = 1_000_000  # nanos in a thousandth of the currency


async def seed_spending(relay: RunningRelay) -> dict[str, str]:
    """alice and bob with a key each, an admin, and what they spent today and 3 days ago
    (and the operator's warming, unpriced)."""
    alice, alice_key, alice_key_id = await make_user(relay, "alice", key_name="laptop")
    bob, bob_key, bob_key_id = await make_user(relay, "bob", key_name="ci")
    _, admin_key, _ = await make_user(relay, "boss", admin=True)
    now = utcnow()
    rows = [
        attempt(now, user_id=alice, api_key_id=alice_key_id, message_id="m1", upstream="lp",
                prompt_tokens=100, completion_tokens=50, requested_tokens=500,
                paid_tokens=600, paid_cost=2 * MILLI, used_cost=MILLI // 2),
        attempt(now, user_id=bob, api_key_id=bob_key_id, message_id="m2", upstream="oa",
                billing="used", prompt_tokens=40, completion_tokens=60, requested_tokens=60,
                paid_tokens=100, paid_cost=MILLI, used_cost=MILLI),
        attempt(now - timedelta(days=3), user_id=alice, api_key_id=alice_key_id,
                message_id="m3", upstream="lp", prompt_tokens=100, completion_tokens=100,
                requested_tokens=900, paid_tokens=1000, paid_cost=4 * MILLI,
                used_cost=MILLI),
        attempt(now, kind="warming", upstream="lp", prompt_tokens=1, completion_tokens=1,
                requested_tokens=1, paid_tokens=2),
    ]  # fmt: skip
    await relay.context.db.write(partial(costs.record_costs, rows=rows))
    return {
        "alice_key": alice_key,
        "bob_key": bob_key,
        "admin_key": admin_key,
        "today": now.date().isoformat(),
        "three_days_ago": (now - timedelta(days=3)).date().isoformat(),
    }


class Problems:
    """What went wrong on a page: console errors, page errors and CSP violations."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.errors: list[str] = []

        def on_console(message: ConsoleMessage) -> None:
            if message.type == "error":
                self.errors.append(f"console: {message.text}")

        page.on("console", on_console)
        page.on("pageerror", lambda error: self.errors.append(f"page error: {error}"))

    async def all(self) -> list[str]:
        violations: list[str] = await self.page.evaluate("window.__cspViolations || []")
        return self.errors + [f"CSP violation: {v}" for v in violations]


@asynccontextmanager
async def signed_in(
    browser: Browser, relay: RunningRelay, username: str | None
) -> AsyncIterator[tuple[BrowserContext, Page, Problems]]:
    """A fresh browser signed in as ``username`` (None: a stranger)."""
    context = await browser.new_context()
    try:
        if username is not None:
            login = await context.request.post(
                relay.url + "/api/auth/login", data={"username": username, "password": PASSWORD}
            )
            assert login.status == 200
        page = await context.new_page()
        page.set_default_timeout(WAIT_MS)
        await page.add_init_script(RECORD_CSP_VIOLATIONS)
        yield context, page, Problems(page)
    finally:
        await context.close()


async def test_the_admin_page_shows_the_spending_and_acts_on_it(
    browser: Browser, relay_for
) -> None:
    async with relay_for() as relay:
        seeded = await seed_spending(relay)
        async with signed_in(browser, relay, "boss") as (context, page, problems):
            # The chat page links an admin to it.
            await page.goto(relay.url + "/")
            await page.get_by_test_id("admin-link").click()
            await expect(page).to_have_url(relay.url + "/admin")
            response = await page.goto(relay.url + "/admin")
            assert response is not None and response.status == 200
            assert "script-src 'self'" in response.headers["content-security-policy"]
            await expect(page).to_have_title("chatrelay admin")
            await expect(page.locator("body")).to_have_attribute("data-loaded", "true")

            # Totals of the last 30 days: 2 + 1 + 4 thousandths paid; the warming unpriced.
            await expect(page.get_by_test_id("total-paid-USD")).to_contain_text("0.007 USD")
            await expect(page.get_by_test_id("total-used-USD")).to_contain_text("0.0025 USD")
            await expect(
                page.get_by_test_id("total-answers").locator(".figure-value")
            ).to_have_text("3")
            await expect(page.get_by_test_id("unpriced-note")).to_have_text(
                "1 attempt had no price: their cost is unknown, and not in the money figures."
            )

            # The charts: a paid and a used bar on each of the two days with spending.
            spend = page.get_by_test_id("spend-chart")
            await expect(spend.locator("svg[role=img]")).to_have_count(1)
            await expect(spend.locator("rect.bar")).to_have_count(4)
            today = spend.locator(f'rect[data-day="{seeded["today"]}"][data-series="paid"]')
            await expect(today.locator("title")).to_have_text(
                f"{seeded['today']} · paid: 0.003 USD"
            )
            earlier = f'rect[data-day="{seeded["three_days_ago"]}"][data-series="used"]'
            await expect(spend.locator(earlier)).to_have_count(1)
            tokens = page.get_by_test_id("token-chart")
            # Tokens: the warming's count too (tokens are known even where prices are not).
            paid_today = tokens.locator(f'rect[data-day="{seeded["today"]}"][data-series="paid"]')
            await expect(paid_today.locator("title")).to_have_text(
                f"{seeded['today']} · tokens paid for: 702"
            )

            # Top users and keys, the dearest first; the upstreams' figures.
            top_users = page.get_by_test_id("top-users").locator("tbody tr")
            await expect(top_users.first.locator("td")).to_have_text(
                ["alice", "2", "350", "0.006 USD", "0.0015 USD"]
            )
            await expect(top_users.nth(1).locator("td").first).to_have_text("bob")
            await expect(top_users.nth(2).locator("td").first).to_have_text("operator (warming)")
            top_keys = page.get_by_test_id("top-keys").locator("tbody tr")
            await expect(top_keys.first.locator("td").nth(0)).to_contain_text("laptop cr_")
            await expect(top_keys.first.locator("td").nth(1)).to_have_text("alice")
            upstreams = page.get_by_test_id("upstreams").locator("tbody tr")
            await expect(upstreams.first.locator("td")).to_have_text(
                # lp: 6 thousandths paid for 151 tokens generated (the warming's 1 included).
                ["lp", "2", "3", "1,602", "151", "0.006 USD", "0.0015 USD", "0.0045 USD",
                 "0.0397 USD", "1"]
            )  # fmt: skip

            # How each upstream served its answers of the last day (the figures of
            # docs/spending.md): no first-token times in these made-up rows.
            performance = page.get_by_test_id("performance").locator("tbody tr")
            await expect(performance.first.locator("td")).to_have_text(
                ["lp", "m1", "1", "— / —", "—", "0 %", "0 %", "0 %", "600 / 150", "0.04 USD"]
            )
            await expect(performance).to_have_count(2)

            # The accounts: set alice's budget and spend limit.
            accounts = page.get_by_test_id("users")
            alice = accounts.locator('tr[data-username="alice"]')
            # Tokens this period come from the usage ledger (finished answers): none here.
            await expect(alice.locator("td").nth(2)).to_have_text("0")
            await alice.get_by_label("Token budget of alice").fill("5000")
            await alice.get_by_label("Spend limit of alice").fill("1.5")
            await alice.get_by_role("button", name="Save").click()
            status = page.get_by_test_id("status")
            await expect(status).to_have_text("alice: saved.")
            await expect(alice.locator("td").nth(2)).to_have_text("0 of 5,000")
            # An admin cannot disable their own account: no button for it.
            boss = accounts.locator('tr[data-username="boss"]')
            await expect(boss.get_by_role("button", name="Disable")).to_have_count(0)
            # A budget that is not a whole number is said, and nothing is sent.
            await alice.get_by_label("Token budget of alice").fill("2.5")
            await alice.get_by_role("button", name="Save").click()
            await expect(status).to_contain_text("whole number of tokens")

            # Disable alice: her key is refused from the next request on.
            await alice.get_by_role("button", name="Disable").click()
            await expect(alice).to_have_attribute("data-state", "disabled")
            await expect(status).to_have_text("alice: disabled.")
            await expect(alice.get_by_role("button", name="Enable")).to_be_visible()

            # Revoke bob's key: one click asks, the second revokes.
            keys = page.get_by_test_id("keys")
            bob_key = keys.locator("tr", has=page.get_by_role("cell", name="bob", exact=True))
            await bob_key.get_by_role("button", name="Revoke").click()
            await bob_key.get_by_role("button", name="Confirm revoke").click()
            await expect(bob_key).to_have_attribute("data-state", "revoked")
            await expect(bob_key.locator("td.state")).to_have_text("Revoked")

            # Another range: today only.
            await page.get_by_test_id("since").fill(seeded["today"])
            await page.get_by_test_id("show").click()
            await expect(page.get_by_test_id("total-paid-USD")).to_contain_text("0.003 USD")
            await expect(spend.locator("rect.bar")).to_have_count(2)

            # CSV of the range, by the grouping chosen.
            await page.get_by_test_id("csv-group").select_option("user")
            href = await page.get_by_test_id("csv").get_attribute("href")
            assert href is not None and "format=csv" in href and "group_by=user" in href
            download = await context.request.get(relay.url + href)
            assert download.status == 200
            assert download.headers["content-type"].startswith("text/csv")
            assert (await download.text()).startswith("key,user_id,username,currency,")
            assert await problems.all() == []

        async with httpx.AsyncClient(base_url=relay.url) as client:
            users = await client.get("/api/admin/users", headers=bearer(seeded["admin_key"]))
            alice_refused = await client.get("/api/me", headers=bearer(seeded["alice_key"]))
            bob_refused = await client.get("/api/me", headers=bearer(seeded["bob_key"]))
    shown = {u["username"]: u for u in users.json()["data"]}
    assert shown["alice"]["token_budget"] == 5000 and shown["alice"]["spend_limit"] == 1.5
    assert shown["alice"]["disabled"] is True
    assert alice_refused.json()["error"]["code"] == "account_disabled"
    assert bob_refused.json()["error"]["code"] == "invalid_api_key"


async def test_anyone_else_gets_the_unknown_paths_404(browser: Browser, relay_for) -> None:
    async with relay_for() as relay:
        await make_user(relay, "alice")
        unknown = await relay.client.get("/no-such-page")
        seen: dict[str | None, tuple[int, bytes]] = {}
        for who in (None, "alice"):
            async with signed_in(browser, relay, who) as (_, page, problems):
                await page.goto(relay.url + "/")
                await expect(page.get_by_test_id("account")).not_to_have_text("…")
                await expect(page.get_by_test_id("admin-link")).to_be_hidden()
                response = await page.goto(relay.url + "/admin")
                assert response is not None
                seen[who] = (response.status, await response.body())
                # The admin page's code never ran: nothing of it is on the page.
                await expect(page.get_by_test_id("totals")).to_have_count(0)
                # Only the 404s Chromium logs (the page's, and /favicon.ico's for a JSON page).
                assert [e for e in await problems.all() if "status of 404" not in e] == []
    assert unknown.status_code == 404
    assert seen == {None: (404, unknown.content), "alice": (404, unknown.content)}
