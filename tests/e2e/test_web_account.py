"""A signed-in account's own password and sessions on the page, in a real browser (Debian's
Chromium, driven by Playwright) against the real relay: change the password (other browsers
signed out, this one kept), sign out everywhere, and the errors said in place."""

from __future__ import annotations

from pathlib import Path

import httpx
from playwright.async_api import Browser, expect

from tests.e2e.test_web_conversations import REFUSALS, rows, sign_in_dialog, submit_credentials
from tests.e2e.test_web_page import open_chat
from tests.fake_upstream import FakeUpstream

PASSWORD = "correct horse battery"
NEW_PASSWORD = "a much better passphrase"


async def signed_in_as(client: httpx.AsyncClient) -> str | None:
    """Whom another browser (an httpx client with its own cookie) is signed in as, if anyone."""
    response = await client.get("/api/me")
    if response.status_code != 200:
        return None
    body = response.json()
    return None if body.get("is_guest", True) else str(body["username"])


async def test_change_password_and_sign_out_everywhere_from_the_page(
    browser: Browser, relay_for, fake: FakeUpstream, tmp_path: Path
) -> None:
    async with relay_for(data_dir=tmp_path) as relay:
        async with (
            open_chat(browser, relay) as chat,
            httpx.AsyncClient(base_url=relay.url) as phone,
        ):
            page = chat.page
            settings = page.locator("#account-settings")
            await expect(settings).to_be_hidden()  # a guest has no password
            await sign_in_dialog(page, "register")
            await submit_credentials(page, "alice", PASSWORD)
            await expect(page.locator("#account")).to_have_text("alice")
            # The same account in another browser.
            signed_in = await phone.post(
                "/api/auth/login", json={"username": "alice", "password": PASSWORD}
            )
            assert signed_in.status_code == 200
            assert await signed_in_as(phone) == "alice"

            await settings.click()
            form = page.locator("#password-form")
            await expect(form).to_be_visible()
            current = page.locator("#current-password")
            await expect(current).to_be_focused()
            error = page.locator("#password-error")
            submit = page.locator("#password-submit")

            # Mistakes are said in place, next to the field at fault.
            await current.fill(PASSWORD)
            await page.locator("#new-password").fill(NEW_PASSWORD)
            await page.locator("#repeat-password").fill(NEW_PASSWORD + "x")
            await submit.click()
            await expect(error).to_have_text("The two new passwords differ.")
            await expect(page.locator("#repeat-password")).to_have_attribute("aria-invalid", "true")
            await current.fill("not my password")
            await page.locator("#repeat-password").fill(NEW_PASSWORD)
            await submit.click()
            await expect(error).to_have_text("The current password is wrong.")
            await expect(current).to_have_attribute("aria-invalid", "true")
            await current.fill(PASSWORD)
            await page.locator("#new-password").fill("short")
            await page.locator("#repeat-password").fill("short")
            await submit.click()
            await expect(error).to_contain_text("8 characters")
            await expect(page.locator("#new-password")).to_have_attribute("aria-invalid", "true")
            assert await signed_in_as(phone) == "alice"  # nothing changed yet

            await page.locator("#new-password").fill(NEW_PASSWORD)
            await page.locator("#repeat-password").fill(NEW_PASSWORD)
            await submit.click()
            await expect(page.locator("#password-done")).to_have_text(
                "Password changed. Every other browser is signed out."
            )
            await expect(error).to_be_hidden()
            await expect(current).to_have_value("")
            # This page stays signed in; the other browser does not.
            assert await signed_in_as(phone) is None
            await page.locator("#account-close").click()
            await expect(form).to_be_hidden()
            await page.reload()
            await expect(page.locator("#account")).to_have_text("alice")

            # Sign out everywhere: the other browser signs in again first (new password).
            signed_in = await phone.post(
                "/api/auth/login", json={"username": "alice", "password": NEW_PASSWORD}
            )
            assert signed_in.status_code == 200
            await settings.click()
            await page.locator("#sign-out-everywhere").click()
            await expect(form).to_be_hidden()
            await expect(page.locator("#account")).to_have_text("Guest")
            await expect(settings).to_be_hidden()
            await expect(page.locator("#sign-in")).to_be_visible()
            await expect(rows(page)).to_have_count(0)
            assert await signed_in_as(phone) is None
            assert await chat.problems(allowed=[*REFUSALS, "status of 403", "status of 422"]) == []
