"""The API's description at ``/openapi.json`` and its human docs at ``/docs``: every route with
its errors in the one error shape, and Swagger UI working offline under the app's strict CSP
(in Debian's Chromium, driven by Playwright)."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import httpx
from playwright.async_api import Browser, ConsoleMessage, Request, expect

from chatrelay.http.api_docs import ERROR_REF
from tests.browser import RECORD_CSP_VIOLATIONS, WAIT_MS
from tests.conftest import RunningRelay
from tests.e2e.test_openai_api import api_key
from tests.fake_upstream import FakeUpstream, livepeer_events

# What each operation answers: its 2xx and at least these errors (read from the routes, the
# dependencies they use, errors.py, limits/refusals.py and the middleware). A new route must
# be added here, with its errors, and documented with them.
EXPECTED: dict[tuple[str, str], set[int]] = {
    ("POST", "/api/chat"): {200, 400, 401, 403, 404, 409, 413, 422, 429, 502, 503},
    ("GET", "/api/messages/{message_id}/stream"): {200, 401, 403, 404, 422},
    ("POST", "/api/messages/{message_id}/stop"): {200, 401, 403, 404, 409},
    ("GET", "/api/models"): {200},
    ("GET", "/api/me"): {200, 401},
    ("POST", "/api/auth/register"): {201, 400, 401, 403, 409, 413, 422, 429, 503},
    ("POST", "/api/auth/guest"): {201, 401, 403, 429, 503},
    ("POST", "/api/auth/login"): {200, 400, 401, 403, 413, 422, 429, 503},
    ("POST", "/api/auth/logout"): {204, 401, 403},
    ("POST", "/api/auth/logout-all"): {204, 401, 403},
    ("POST", "/api/auth/password"): {200, 400, 401, 403, 413, 422, 429, 503},
    ("GET", "/api/conversations"): {200, 401, 422},
    ("GET", "/api/conversations/{conversation_id}"): {200, 401, 404},
    ("PATCH", "/api/conversations/{conversation_id}"): {200, 400, 401, 403, 404, 413, 422},
    ("DELETE", "/api/conversations/{conversation_id}"): {204, 401, 403, 404},
    ("GET", "/api/conversations/{conversation_id}/export"): {200, 401, 404, 422},
    # OpenAI answers every invalid request with 400: there is no 422 under /v1.
    ("POST", "/v1/chat/completions"): {200, 400, 401, 403, 404, 413, 429, 502, 503},
    ("POST", "/v1/responses"): {200, 400, 401, 403, 404, 409, 413, 429, 502, 503},
    ("GET", "/v1/responses/{response_id}"): {200, 401, 404},
    ("DELETE", "/v1/responses/{response_id}"): {200, 401, 404},
    ("POST", "/v1/responses/{response_id}/cancel"): {200, 401, 404},
    ("GET", "/v1/responses/{response_id}/input_items"): {200, 400, 401, 404},
    ("GET", "/v1/models"): {200, 401},
    ("GET", "/v1/models/{model_id}"): {200, 401, 404},
    ("GET", "/api/usage"): {200, 401},
    # Administrators only: anyone else gets the 404 of an unknown path.
    ("GET", "/api/admin/usage"): {200, 400, 404, 422},
    ("GET", "/api/admin/upstreams"): {200, 404},
    ("GET", "/api/admin/users"): {200, 404, 422},
    ("PATCH", "/api/admin/users/{user_id}"): {200, 400, 403, 404, 409, 413, 422},
    ("GET", "/api/admin/keys"): {200, 404, 422},
    ("POST", "/api/admin/keys/{key_id}/revoke"): {200, 403, 404},
    ("GET", "/metrics"): {200},
    ("GET", "/healthz"): {200},
    ("GET", "/readyz"): {200, 503},  # its 503 is the readiness report, not an error
}
NOT_ERROR_SHAPED = {("GET", "/readyz", 503)}


def operations(spec: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method.upper(), path): operation
        for path, ops in spec["paths"].items()
        for method, operation in ops.items()
    }


async def served_spec(relay: RunningRelay) -> dict[str, Any]:
    response = await relay.client.get("/openapi.json")
    assert response.status_code == 200
    spec: dict[str, Any] = response.json()
    return spec


async def test_every_route_is_described_with_its_errors(relay_for) -> None:
    async with relay_for() as relay:
        spec = await served_spec(relay)
    described = operations(spec)
    assert set(described) == set(EXPECTED), "a route is missing here or in the description"
    missing = {
        f"{method} {path}": sorted(
            expected - {int(s) for s in described[method, path]["responses"]}
        )
        for (method, path), expected in EXPECTED.items()
        if not expected <= {int(s) for s in described[method, path]["responses"]}
    }
    assert missing == {}
    for (method, path), operation in described.items():
        assert operation.get("summary") and operation.get("tags"), (method, path)
        for status, response in operation["responses"].items():
            assert response.get("description"), (method, path, status)
            if int(status) < 400 or (method, path, int(status)) in NOT_ERROR_SHAPED:
                continue
            schema = response["content"]["application/json"]["schema"]
            assert schema == {"$ref": ERROR_REF}, (method, path, status)
        if path.startswith("/v1/"):
            assert "422" not in operation["responses"], (method, path)
            assert operation["security"] == [{"apiKey": []}]


async def test_the_error_schema_is_the_one_errors_are_answered_with(relay_for) -> None:
    async with relay_for() as relay:
        spec = await served_spec(relay)
        key, _ = await api_key(relay)
        bearer = {"Authorization": f"Bearer {key}"}
        bad_key = {"Authorization": "Bearer cr_not_a_key"}
        foreign = {"Origin": "https://evil.example"}
        client = relay.client
        answers = {
            ("GET", "/api/me"): await client.get("/api/me", headers=bad_key),
            ("GET", "/api/conversations"): await client.get(
                "/api/conversations", params={"limit": 0}, headers=bearer
            ),
            ("GET", "/api/conversations/{conversation_id}"): await client.get(
                "/api/conversations/nope", headers=bearer
            ),
            ("DELETE", "/api/conversations/{conversation_id}"): await client.delete(
                "/api/conversations/nope", headers=foreign
            ),
            ("POST", "/api/chat"): await client.post(
                "/api/chat", content=b"{not json", headers={"Content-Type": "application/json"}
            ),
            ("POST", "/v1/chat/completions"): await client.post(
                "/v1/chat/completions", json={"messages": "hi"}, headers=bearer
            ),
            ("GET", "/v1/models"): await client.get("/v1/models"),
        }
        register = {"username": "twice", "password": "long enough"}
        async with httpx.AsyncClient(base_url=relay.url) as browser:
            assert (await browser.post("/api/auth/register", json=register)).status_code == 201
        async with httpx.AsyncClient(base_url=relay.url) as other_browser:
            answers["POST", "/api/auth/register"] = await other_browser.post(
                "/api/auth/register", json=register
            )
    described = operations(spec)
    detail = spec["components"]["schemas"]["ErrorDetail"]
    seen = set()
    for (method, path), response in answers.items():
        assert response.status_code >= 400, (method, path)
        seen.add(response.status_code)
        assert str(response.status_code) in described[method, path]["responses"], (method, path)
        body = response.json()
        assert set(body) == {"error"}, body
        error = body["error"]
        assert set(detail["required"]) <= set(error), body
        for field, value in error.items():
            if field in detail["properties"]:
                assert isinstance(value, str), (field, value)
    assert seen == {400, 401, 403, 404, 409, 422}


async def test_docs_assets_are_served_by_the_app(relay_for) -> None:
    async with relay_for() as relay:
        client = relay.client
        page = await client.get("/docs")
        assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        fetched = {url: await client.get(url) for url in assets}
        redoc = await client.get("/redoc")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    # Nothing inline for the CSP to refuse, and nothing from another host (no CDN offline).
    assert re.findall(r"<script(?![^>]*\bsrc=)", page.text) == []
    assert "<style" not in page.text and " style=" not in page.text
    assert all(url.startswith("/") and not url.startswith("//") for url in assets), assets
    assert {urlsplit(url).path for url in assets} >= {
        "/docs/assets/swagger-ui-bundle.js",
        "/docs/assets/swagger-ui.css",
        "/docs/init.js",
    }
    for url, response in fetched.items():
        assert response.status_code == 200, url
    assert "javascript" in fetched["/docs/init.js"].headers["content-type"]
    assert "javascript" in fetched["/docs/assets/swagger-ui-bundle.js"].headers["content-type"]
    assert "text/css" in fetched["/docs/assets/swagger-ui.css"].headers["content-type"]
    assert redoc.status_code == 404  # FastAPI's own ReDoc page would load it from a CDN


async def test_docs_page_renders_every_operation_offline_under_the_csp(
    browser: Browser, relay_for, fake: FakeUpstream
) -> None:
    fake.script = livepeer_events(["ok"])
    async with relay_for() as relay:
        spec = await served_spec(relay)
        context = await browser.new_context()
        try:
            page = await context.new_page()
            page.set_default_timeout(WAIT_MS)
            await page.add_init_script(RECORD_CSP_VIOLATIONS)
            problems: list[str] = []
            requested: list[str] = []

            def on_console(message: ConsoleMessage) -> None:
                if message.type == "error":
                    problems.append(f"console: {message.text}")

            def on_request(request: Request) -> None:
                requested.append(request.url)

            page.on("console", on_console)
            page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
            page.on("request", on_request)
            response = await page.goto(relay.url + "/docs")
            assert response is not None and response.status == 200
            assert "script-src 'self'" in response.headers["content-security-policy"]

            # Every operation of the description is on the page, as people see it.
            for path in ("/api/chat", "/v1/chat/completions"):
                summary = page.locator(f'.opblock-summary-path[data-path="{path}"]').first
                await expect(summary).to_be_visible()
                await expect(summary).to_have_text(path)
            shown = page.locator(".opblock-summary-path")
            await expect(shown).to_have_count(len(operations(spec)))

            # The documented errors of an operation, and "Try it out" against the server.
            chat = page.locator(".opblock", has=page.locator('[data-path="/api/chat"]'))
            await chat.locator(".opblock-summary").click()
            for status in ("400", "401", "429", "503"):
                row = chat.locator(f'.responses-table tr.response[data-code="{status}"]')
                await expect(row).to_be_visible()
            healthz = page.locator(".opblock", has=page.locator('[data-path="/healthz"]'))
            await healthz.locator(".opblock-summary").click()
            await healthz.locator("button.try-out__btn").click()
            await healthz.locator("button.execute").click()
            await expect(
                healthz.locator(".live-responses-table td.response-col_status:not(.col_header)")
            ).to_have_text(re.compile(r"^\s*200"))
            violations: list[str] = await page.evaluate("window.__cspViolations")
        finally:
            await context.close()
    assert problems == []
    assert violations == []
    foreign = [url for url in requested if not url.startswith(relay.url + "/")]
    assert foreign == []
    assert relay.url + "/docs/assets/swagger-ui-bundle.js" in requested
