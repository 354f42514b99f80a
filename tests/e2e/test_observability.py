"""What an operator sees: /metrics, request ids, one structured log line per request."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sys
from pathlib import Path

import httpx
import orjson
import pytest

from chatrelay.observability import JsonFormatter
from tests.fake_upstream import FakeUpstream, livepeer_chunk, livepeer_events
from tests.polling import wait_until
from tests.ports import free_port
from tests.sse_client import read_answer, user

MODEL = "meta-llama/Meta-Llama-3.1-8B-Instruct"


def sample(metrics: str, name: str, **labels: str) -> float:
    """The value of one sample of the exposition (0 when absent)."""
    for line in metrics.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{key}="{value}"' in line for key, value in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def chat(relay, body=None):  # type: ignore[no-untyped-def]
    async with relay.client.stream("POST", "/api/chat", json=body or user("hi")) as response:
        return response, await read_answer(response)


async def test_metrics_cover_requests_tokens_latency_and_failures(
    relay_for, fake: FakeUpstream
) -> None:
    fake.script = livepeer_events(["one", " two", " three"])
    async with relay_for(rate_limit="2/minute") as relay:
        before = (await relay.client.get("/metrics")).text
        await chat(relay)
        fake.script = [livepeer_chunk("half"), b'data: {"error":"boom"}\n\n']
        await chat(relay)
        refused = await relay.client.post("/api/chat", json=user("again"))
        assert refused.status_code == 429
        metrics = (await relay.client.get("/metrics")).text

    def grew(name: str, **labels: str) -> float:
        return sample(metrics, name, **labels) - sample(before, name, **labels)

    assert grew("chatrelay_http_requests_total", route="/api/chat", status="200") == 2
    assert grew("chatrelay_http_requests_total", route="/api/chat", status="429") >= 1
    assert (
        grew("chatrelay_time_to_first_token_seconds_count", model=MODEL, upstream="livepeer") == 2
    )
    assert grew("chatrelay_inter_token_gap_seconds_count", model=MODEL, upstream="livepeer") == 2
    assert grew("chatrelay_tokens_total", model=MODEL, direction="out") >= 3
    assert grew("chatrelay_tokens_total", model=MODEL, direction="in") >= 42
    assert grew("chatrelay_upstream_errors_total", upstream="livepeer", kind="stream_error") == 1
    assert grew("chatrelay_rejections_total", code="rate_limited") >= 1
    assert sample(metrics, "chatrelay_active_streams") == 0
    assert sample(metrics, "chatrelay_model_status", model=MODEL, status="warm") == 1
    assert "# TYPE chatrelay_failovers_total counter" in metrics


async def test_every_response_has_a_request_id(relay_for) -> None:
    async with relay_for() as relay:
        first = await relay.client.get("/healthz")
        second = await relay.client.get("/healthz")
        echoed = await relay.client.get("/healthz", headers={"X-Request-Id": "lb-1234_ab"})
        hostile = await relay.client.get("/healthz", headers={"X-Request-Id": "a b <script>"})
        missing = await relay.client.get("/nope")
    ids = [r.headers["x-request-id"] for r in (first, second, hostile, missing)]
    assert len(set(ids)) == 4 and all(re.fullmatch(r"[0-9a-f]{16}", i) for i in ids)
    assert echoed.headers["x-request-id"] == "lb-1234_ab"


async def test_one_log_line_per_request_without_text_or_secrets(
    relay_for, fake: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    fake.script = livepeer_events(["secret", " answer"])
    caplog.set_level(logging.INFO, logger="chatrelay.requests")
    async with relay_for(livepeer_api_key="lp-very-secret") as relay:
        response, _ = await chat(relay, user("my private question"))
        await wait_until(
            lambda: any(r.__dict__.get("route") == "/api/chat" for r in caplog.records)
        )
    [line] = [r for r in caplog.records if r.__dict__.get("route") == "/api/chat"]
    fields = line.__dict__
    assert fields["request_id"] == response.headers["x-request-id"]
    assert fields["status"] == 200 and fields["user_id"].startswith("usr_")
    assert fields["model"] == MODEL and fields["upstream"] == "livepeer"
    assert (fields["prompt_tokens"], fields["completion_tokens"]) == (42, 2)
    assert fields["ttft_ms"] > 0 and fields["message_id"] == response.headers["x-message-id"]
    formatted = JsonFormatter().format(line)
    assert orjson.loads(formatted)["request_id"] == fields["request_id"]
    everything = "\n".join(JsonFormatter().format(r) for r in caplog.records)
    for secret in ("my private question", "secret answer", "lp-very-secret", "chatrelay_session="):
        assert secret not in everything


async def test_log_content_when_asked(
    relay_for, fake: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    fake.script = livepeer_events(["shown"])
    caplog.set_level(logging.INFO, logger="chatrelay.requests")
    async with relay_for(log_content=True) as relay:
        await chat(relay, user("visible question"))
        await wait_until(lambda: any("answer" in r.__dict__ for r in caplog.records))
    [line] = [r for r in caplog.records if "answer" in r.__dict__]
    assert line.__dict__["question"] == "visible question" and line.__dict__["answer"] == "shown"


async def test_metrics_add_up_across_worker_processes(fake: FakeUpstream, tmp_path: Path) -> None:
    """Two processes sharing PROMETHEUS_MULTIPROC_DIR: either one's /metrics counts both."""
    fake.script = livepeer_events(["ok"])
    metrics_dir = tmp_path / "prom"
    metrics_dir.mkdir()
    processes, urls = [], []
    for index in range(2):
        port = free_port()
        env = {
            "PATH": os.environ.get("PATH", ""),
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
            "LIVEPEER_GATEWAY_URL": fake.base_url,
            "CHATRELAY_DATA_DIR": str(tmp_path / f"data{index}"),
            "CHATRELAY_WARM_MODELS": "",
            "CHATRELAY_HEALTH_INTERVAL": "0",
        }
        processes.append(
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "chatrelay",
                "serve",
                "--port",
                str(port),
                env=env,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
        )
        urls.append(f"http://127.0.0.1:{port}")
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            for url in urls:
                for _ in range(300):
                    try:
                        if (await client.get(f"{url}/healthz")).status_code == 200:
                            break
                    except httpx.HTTPError:
                        await asyncio.sleep(0.1)
                response = await client.post(f"{url}/api/chat", json=user("x"))
                assert response.status_code == 200
            metrics = (await client.get(f"{urls[0]}/metrics")).text
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            await process.wait()
    assert sample(metrics, "chatrelay_http_requests_total", route="/api/chat", status="200") == 2
    assert sample(metrics, "chatrelay_tokens_total", model=MODEL, direction="out") == 2
