"""CORS for API clients: browser apps on the origins of CHATRELAY_CORS_ORIGINS call /v1/* and
/llm with an API key, never with the visitor's cookie; other origins and other paths are as
without CORS. In Chromium with the real `openai` npm package, and as plain HTTP."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
from aiohttp import web
from playwright.async_api import Browser, expect

from tests.browser import WAIT_MS
from tests.conftest import RunningRelay
from tests.e2e.test_openai_api import MODEL, api_key
from tests.fake_upstream import FakeUpstream, livepeer_events
from tests.ports import free_port

PAGE_DIR = Path(__file__).parent.parent / "cors_page"
OPENAI_JS = Path(__file__).parent.parent / "js" / "node_modules" / "openai"
APP = "http://127.0.0.1:5173"  # a listed origin for the plain HTTP tests
STRANGER = "http://127.0.0.1:6666"
CHAT = "/v1/chat/completions"
# What the openai JavaScript SDK (6.x) sends; the Python one adds -async, -read-timeout...
STAINLESS = [
    "x-stainless-arch",
    "x-stainless-lang",
    "x-stainless-os",
    "x-stainless-package-version",
    "x-stainless-retry-count",
    "x-stainless-runtime",
    "x-stainless-runtime-version",
    "x-stainless-timeout",
    "x-stainless-helper-method",
    "x-stainless-async",
]
BODY = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True}


def preflight(origin: str, method: str = "POST", headers: str = "authorization,content-type"):
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": headers,
    }


def cors_headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.startswith("access-control-")}


def listed(value: str) -> set[str]:
    return {item.strip().lower() for item in value.split(",")}


# Plain HTTP


async def test_preflights_of_a_listed_origin_allow_the_sdk_headers(relay_for) -> None:
    async with relay_for(cors_origins=[APP]) as relay:
        requested = ",".join(["authorization", "content-type", *STAINLESS])
        for path in (CHAT, "/v1/models", "/llm", "/llm/"):
            answer = await relay.client.options(path, headers=preflight(APP, headers=requested))
            assert answer.status_code == 204, path
            assert answer.headers["access-control-allow-origin"] == APP
            assert {"post", "get"} <= listed(answer.headers["access-control-allow-methods"])
            allowed = listed(answer.headers["access-control-allow-headers"])
            assert set(requested.split(",")) <= allowed
            assert {"openai-organization", "openai-project", "x-conversation-id"} <= allowed
            assert "access-control-allow-credentials" not in answer.headers
            assert "origin" in listed(answer.headers["vary"])
        # Only the x-stainless-* family is allowed as asked for; another header is not.
        other = await relay.client.options(CHAT, headers=preflight(APP, headers="x-secret"))
        assert other.status_code == 204
        assert "x-secret" not in listed(other.headers["access-control-allow-headers"])


async def test_a_listed_origin_streams_with_a_key_and_reads_the_ids(
    relay_for, fake: FakeUpstream
) -> None:
    fake.script = livepeer_events(["Hello", " there"])
    async with relay_for(cors_origins=[f"{APP}/", "https://other.example"]) as relay:
        key, _ = await api_key(relay)
        headers = {"Origin": APP, "Authorization": f"Bearer {key}"}
        answer = await relay.client.post(CHAT, json=BODY, headers=headers)
        models = await relay.client.get("/v1/models", headers=headers)
    assert answer.status_code == 200
    assert "Hello" in answer.text and answer.text.rstrip().endswith("data: [DONE]")
    assert answer.headers["access-control-allow-origin"] == APP
    exposed = listed(answer.headers["access-control-expose-headers"])
    assert {"x-conversation-id", "x-message-id", "x-request-id", "retry-after"} <= exposed
    assert all(answer.headers[name] for name in ("x-conversation-id", "x-message-id"))
    assert "access-control-allow-credentials" not in answer.headers
    assert models.status_code == 200 and models.json()["data"][0]["id"] == MODEL
    assert models.headers["access-control-allow-origin"] == APP


async def test_a_listed_origin_is_never_authenticated_by_the_cookie(
    relay_for, fake: FakeUpstream
) -> None:
    fake.script = livepeer_events(["mine"])
    async with relay_for(cors_origins=[APP]) as relay:
        client = relay.client
        guest = (await client.post("/api/auth/guest")).json()  # the page's visitor, with a cookie
        assert client.cookies
        # The relay's own page (same origin) uses the cookie, as before.
        same = await client.post(CHAT, json=BODY, headers={"Origin": relay.url})
        assert same.status_code == 200 and "mine" in same.text
        assert "access-control-allow-origin" not in same.headers
        requests_before = len(fake.requests)

        # A listed origin's page, the cookie attached by the browser, no key: a stranger.
        for answer in (
            await client.post(CHAT, json=BODY, headers={"Origin": APP}),
            await client.get("/v1/models", headers={"Origin": APP}),
        ):
            assert answer.status_code == 401
            assert answer.json()["error"]["code"] == "invalid_api_key"
            assert answer.headers["access-control-allow-origin"] == APP  # the page reads why
        assert len(fake.requests) == requests_before
        # With its own key it is that key's user: the answer is stored there, not the visitor's.
        key, _ = await api_key(relay)
        bearer = {"Authorization": f"Bearer {key}"}
        with_key = await client.post(CHAT, json=BODY, headers={"Origin": APP, **bearer})
        assert with_key.status_code == 200 and "mine" in with_key.text
        keys_own = (await client.get("/api/conversations", headers=bearer)).json()["data"]
        visitors = (await client.get("/api/conversations")).json()["data"]
        assert len(keys_own) == 1 and len(visitors) == 1
        assert keys_own[0]["id"] != visitors[0]["id"]
        assert (await client.get("/api/me")).json()["id"] == guest["id"]  # still signed in


async def test_an_origin_not_listed_gets_no_cors_and_the_csrf_refusal(
    relay_for, fake: FakeUpstream
) -> None:
    async with relay_for(cors_origins=[APP]) as relay:
        client = relay.client
        await client.post("/api/auth/guest")  # a cookie the browser would attach
        asked = await client.options(CHAT, headers=preflight(STRANGER))
        assert asked.status_code == 405 and cors_headers(asked) == {}
        posted = await client.post(CHAT, json=BODY, headers={"Origin": STRANGER})
        assert posted.status_code == 403
        assert posted.json()["error"]["code"] == "csrf_rejected"
        assert cors_headers(posted) == {}
        read = await client.get("/v1/models", headers={"Origin": STRANGER})
        assert read.status_code == 401 and cors_headers(read) == {}
    assert fake.requests == []


async def test_other_paths_are_as_without_cors(relay_for) -> None:
    async with relay_for(cors_origins=[APP]) as relay:
        client = relay.client
        page_chat = await client.options("/api/chat", headers=preflight(APP))
        assert page_chat.status_code == 405 and cors_headers(page_chat) == {}
        posted = await client.post("/api/chat", json=BODY, headers={"Origin": APP})
        assert posted.status_code == 403 and posted.json()["error"]["code"] == "csrf_rejected"
        assert cors_headers(posted) == {}
        for path in ("/healthz", "/api/me", "/v1x", "/llmx"):
            answer = await client.get(path, headers={"Origin": APP})
            assert cors_headers(answer) == {}, path


async def test_without_origins_the_api_has_no_cors(relay_for) -> None:
    async with relay_for() as relay:
        key, _ = await api_key(relay)
        asked = await relay.client.options(CHAT, headers=preflight(APP))
        assert asked.status_code == 405 and cors_headers(asked) == {}
        read = await relay.client.get(
            "/v1/models", headers={"Origin": APP, "Authorization": f"Bearer {key}"}
        )
        assert read.status_code == 200 and cors_headers(read) == {}


async def test_any_origin_with_a_star(relay_for) -> None:
    async with relay_for(cors_origins=["*"]) as relay:
        asked = await relay.client.options(CHAT, headers=preflight(STRANGER))
        assert asked.status_code == 204
        assert asked.headers["access-control-allow-origin"] == STRANGER
        keyless = await relay.client.post(CHAT, json=BODY, headers={"Origin": STRANGER})
        assert keyless.status_code == 401
        assert keyless.headers["access-control-allow-origin"] == STRANGER


# In Chromium, with the real openai package


@pytest.fixture
def openai_js() -> Path:
    """tests/js/node_modules (``npm ci`` in tests/js): without it the browser tests skip,
    except under CI, where they must run."""
    if not (OPENAI_JS / "index.mjs").exists():
        reason = f"{OPENAI_JS} is missing: run 'npm ci' in tests/js"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI must run the cross-origin browser tests")
        pytest.skip(reason)
    return OPENAI_JS


@asynccontextmanager
async def page_origin(openai_js: Path) -> AsyncIterator[str]:
    """A second loopback origin serving the test page and the openai package beside it."""

    async def serve_file(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"] or "index.html"
        root, name = (openai_js, name[7:]) if name.startswith("openai/") else (PAGE_DIR, name)
        path = (root / name).resolve()
        if not path.is_file() or not path.is_relative_to(root.resolve()):
            raise web.HTTPNotFound()
        # Module scripts run only with a JavaScript type, whatever mimetypes says of .mjs.
        kind = "text/html" if path.suffix == ".html" else "text/javascript"
        return web.FileResponse(path, headers={"Content-Type": kind})

    app = web.Application()
    app.router.add_get("/{name:.*}", serve_file)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def open_page(browser: Browser, origin: str, relay: RunningRelay, key: str):
    context = await browser.new_context()
    page = await context.new_page()
    page.set_default_timeout(WAIT_MS)
    query = urlencode({"relay": relay.url, "key": key, "model": MODEL})
    await page.goto(f"{origin}/?{query}")
    return context, page


async def test_a_page_on_a_listed_origin_streams_with_the_openai_package(
    browser: Browser, relay_for, fake: FakeUpstream, openai_js: Path
) -> None:
    fake.script = livepeer_events(["Hello", " from", " another", " origin"])
    async with page_origin(openai_js) as origin, relay_for(cors_origins=[origin]) as relay:
        key, _ = await api_key(relay)
        context, page = await open_page(browser, origin, relay, key)
        try:
            await expect(page.locator("#status")).to_have_text("done")
            await expect(page.locator("#answer")).to_have_text("Hello from another origin")
            conversations = await relay.client.get(
                "/api/conversations", headers={"Authorization": f"Bearer {key}"}
            )
            stored = conversations.json()["data"]
            assert len(stored) == 1
            await expect(page.locator("#conversation")).to_have_text(stored[0]["id"])
            # The SDK's own headers went through the preflight (its x-stainless-* family).
            sent = fake.requests[-1]
            assert sent.json["messages"][-1]["content"] == "Say hello from another origin"

            # A wrong key: the refusal is readable on the page, as the SDK's own error.
            wrong, wrong_page = await open_page(browser, origin, relay, "cr_not_a_key")
            try:
                await expect(wrong_page.locator("#status")).to_have_text(
                    re.compile(r"^failed: AuthenticationError: 401")
                )
            finally:
                await wrong.close()
        finally:
            await context.close()


async def test_a_page_on_an_origin_not_listed_is_refused(
    browser: Browser, relay_for, fake: FakeUpstream, openai_js: Path
) -> None:
    fake.script = livepeer_events(["never"])
    async with (
        page_origin(openai_js) as listed_origin,
        page_origin(openai_js) as stranger,
        relay_for(cors_origins=[listed_origin]) as relay,
    ):
        key, _ = await api_key(relay)
        context, page = await open_page(browser, stranger, relay, key)
        try:
            # The browser refuses the preflight: the SDK sees no answer at all.
            await expect(page.locator("#status")).to_have_text(
                re.compile(r"^failed: APIConnectionError")
            )
            await expect(page.locator("#answer")).to_have_text("")
        finally:
            await context.close()
    assert fake.requests == []
