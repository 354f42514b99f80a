"""The real browser for the page tests: Debian's Chromium, driven by Playwright.

A pytest plugin (see ``pytest_plugins`` in conftest.py): the ``browser`` fixture and the
constants every browser test shares.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, async_playwright, expect

CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags Chromium keeps dialling hosts this machine cannot
# reach; the tests stay on loopback.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# How long an action or an expectation waits for the page to get there: a bound against a
# hang, not a margin (a loaded machine makes the page slower, never wrong).
WAIT_MS = 30_000
expect.set_options(timeout=WAIT_MS)

# Recorded by the test harness, not by the page: CDP injects it ahead of the page's own code.
RECORD_CSP_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener('securitypolicyviolation', (e) => {
  window.__cspViolations.push(`${e.violatedDirective} ${e.blockedURI}`);
});
"""


@pytest.fixture(scope="module")
def chromium() -> Path:
    """Debian's Chromium: without it the tests skip, except under CI, where they must run."""
    if not CHROMIUM.exists():
        reason = f"Chromium is not installed at {CHROMIUM}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI must run the browser tests")
        pytest.skip(reason)
    return CHROMIUM


@pytest.fixture
async def browser(chromium: Path) -> AsyncIterator[Browser]:
    """One browser per test: Playwright's connection belongs to the test's own event loop."""
    async with async_playwright() as p:
        launched = await p.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


# Settings for a relay whose test holds the upstream while the page acts: on a loaded machine
# that can outlast the stall and first-token timers, which are not what such a test is about.
HELD = {"stall_timeout": 60, "first_token_timeout": 60}
