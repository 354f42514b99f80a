"""The systems the side-by-side benchmark compares, each started as its own process(es) on
127.0.0.1, with its version and settings, and the CPU time and resident memory of its process
tree read from /proc.

- ``direct``: the mock upstream itself (the floor: nothing in between).
- ``nginx``: Debian's nginx as a plain SSE reverse proxy (``proxy_buffering off``), one worker.
- ``python-floor``: a TCP pass-through in Python on uvloop (bench/python_floor.py): what any
  Python relay pays per chunk before it reads a byte of it.
- ``chatrelay``: ``chatrelay serve`` (one uvicorn worker) as in production: every answer stored
  (SQLite in a fresh data dir), token budgets, rate limit and stream slots on, metrics on, an
  API key per request.
- ``litellm``: the LiteLLM proxy (one worker) from its own virtual environment
  (``bench/.venv-litellm``, made by :func:`ensure_litellm`).
"""

from __future__ import annotations

import contextlib
import os
import platform
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

HOST = "127.0.0.1"
BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
LITELLM_VENV = BENCH / ".venv-litellm"
LITELLM_REQUIREMENT = "litellm[proxy]"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def wait_for_http(url: str, timeout: float, process: subprocess.Popen[bytes] | None) -> None:
    """Until ``url`` answers any HTTP status below 500 (or the process dies: its log says why)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status < 500:
                    return
        except urllib.error.HTTPError as error:
            if error.code < 500:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout:g} s")


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (nginx's worker, any helper a server forks)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, ()))
    return found


def thread_cpu(pids: list[int]) -> dict[tuple[int, int], float]:
    """On-CPU seconds of every live thread of ``pids``, by (pid, thread id), to the nanosecond
    (``/proc/PID/task/TID/schedstat``): /proc/PID/stat counts in 10 ms ticks, too coarse for a
    run at C=1 (a few hundred milliseconds of CPU in all)."""
    found: dict[tuple[int, int], float] = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{pid}/task").iterdir():
                with contextlib.suppress(OSError, IndexError, ValueError):
                    nanoseconds = int((task / "schedstat").read_text().split()[0])
                    found[pid, int(task.name)] = nanoseconds / 1e9
    return found


def rss_kb(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_KB
    return total


@dataclass
class System:
    """One started system: where to send requests, and what to measure."""

    name: str
    url: str  # the OpenAI chat completions URL
    process: subprocess.Popen[bytes] | None
    version: str
    settings: dict[str, Any]
    api_key: str | None = None
    workdir: str | None = None
    pids: list[int] = field(default_factory=list)
    # Resident memory before its first run: memory per stream is counted from there.
    rss_idle: int | None = None
    # Each thread's CPU when last read: a thread that has exited keeps its last reading.
    threads_cpu: dict[tuple[int, int], float] = field(default_factory=dict)

    def refresh_pids(self) -> None:
        self.pids = tree(self.process.pid) if self.process is not None else []

    def cpu(self) -> float:
        """CPU seconds of the process tree since it started (threads that ended before the
        first call, at start-up, are not in it: take differences)."""
        self.threads_cpu.update(thread_cpu(self.pids))
        return sum(self.threads_cpu.values())

    def rss(self) -> int:
        return rss_kb(self.pids)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "url": self.url,
            "version": self.version,
            "settings": self.settings,
        }


def _start_script(
    name: str, script: str, arguments: list[str], *, version: str, settings: dict[str, Any]
) -> System:
    """One of bench/'s servers on a free port of 127.0.0.1, started and answering."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(BENCH / script), "--port", str(port), *arguments]
    )
    wait_for_http(f"http://{HOST}:{port}/health", 30, process)
    system = System(
        name=name,
        url=f"http://{HOST}:{port}/v1/chat/completions",
        process=process,
        version=version,
        settings=settings,
    )
    system.refresh_pids()
    return system


def port_of(system: System) -> int:
    port = urlsplit(system.url).port
    assert port is not None
    return port


def start_mock(*, pace_ms: float = 20, chunks: int = 64, chunk_bytes: int = 20) -> System:
    from mock_upstream import loop_name

    return _start_script(
        "direct",
        "mock_upstream.py",
        ["--pace-ms", str(pace_ms), "--chunks", str(chunks), "--chunk-bytes", str(chunk_bytes)],
        version=f"bench/mock_upstream.py on Python {platform.python_version()}, {loop_name()}",
        settings={"process": "one, bare asyncio protocol, one timer per paced chunk"},
    )


NGINX_CONF = """
worker_processes {workers};
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    upstream mock {{
        server 127.0.0.1:{upstream_port};
        keepalive 1024;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_cache off;
            proxy_read_timeout 300s;
        }}
    }}
}}
"""


def nginx_available() -> bool:
    return Path(NGINX).exists()


def start_nginx(mock: System, *, workers: int = 1) -> System:
    workdir = tempfile.mkdtemp(prefix="bench-nginx-")
    port = free_port()
    upstream_port = port_of(mock)
    conf = Path(workdir, "nginx.conf")
    conf.write_text(
        NGINX_CONF.format(workers=workers, dir=workdir, port=port, upstream_port=upstream_port)
    )
    version = subprocess.run([NGINX, "-v"], capture_output=True, text=True).stderr.strip()
    process = subprocess.Popen(
        [NGINX, "-p", workdir, "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://{HOST}:{port}/v1/chat/completions"
    wait_for_http(f"http://{HOST}:{port}/health", 30, process)
    system = System(
        name="nginx",
        url=url,
        process=process,
        version=version.replace("nginx version: ", ""),
        settings={
            "worker_processes": workers,
            "proxy_buffering": "off",
            "proxy_http_version": "1.1",
            "upstream keepalive": 1024,
            "access_log": "off",
        },
        workdir=workdir,
    )
    time.sleep(0.2)  # the worker is forked after the master listens
    system.refresh_pids()
    return system


def start_python_floor(mock: System) -> System:
    """bench/python_floor.py: bytes passed on by a Python process, nothing else."""
    import uvloop

    return _start_script(
        "python-floor",
        "python_floor.py",
        ["--upstream-port", str(port_of(mock))],
        version=f"bench/python_floor.py on Python {platform.python_version()}, "
        f"uvloop {uvloop.__version__}",
        settings={"what": "TCP pass-through, written from the read callback; one process"},
    )


# chatrelay as in production: stored answers, quotas on (limits far above the load, so they
# are checked on every request but never refuse one), metrics on, JSON request log to a file.
CHATRELAY_ENV = {
    "CHATRELAY_MODELS": "bench",
    "CHATRELAY_WARM_MODELS": "",
    "CHATRELAY_MAX_TOKENS_LIMIT": "100000",
    "CHATRELAY_USER_TOKEN_BUDGET": "1000000000000",
    "CHATRELAY_GUEST_TOKEN_BUDGET": "1000000000000",
    "CHATRELAY_RATE_LIMIT": "100000000/minute",
    "CHATRELAY_MAX_STREAMS_PER_IP": "100000",
}


def _chatrelay_version(src: Path | None = None) -> str:
    """The version and the commit of the code that runs (``src``: another checkout's)."""
    from importlib.metadata import version

    checkout = src.parent if src is not None else ROOT
    commit = subprocess.run(
        ["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(checkout), "status", "--porcelain", "src"], capture_output=True, text=True
    ).stdout.strip()
    return f"{version('chatrelay')} ({commit}{'+changes' if dirty else ''})"


# Proposed changes to chatrelay, tried without editing it: Python run in the server process
# before it starts (``--chatrelay-prelude gc,key-cache``), so a profile's suggestion can be
# measured side by side with the code as it is.
EXPERIMENTS = {
    # Fewer, shorter collections: objects that live as long as the process (routes, models,
    # settings, SQLAlchemy's caches) are frozen out of the collector once startup is over,
    # the young generation is collected every 10,000 allocations instead of 700 and the old
    # ones far more rarely. Without it, full collections of 80-110 ms under load stall every
    # open stream at once (see "gc-pauses").
    "gc": (
        "import gc, threading\n"
        "gc.set_threshold(10_000, 50, 100)\n"
        "threading.Timer(5, gc.freeze).start()\n"
    ),
    # The API key's owner looked up once per key per 5 s instead of once per request (a
    # revoked key would then work for at most 5 s more).
    "key-cache": (
        "import time\n"
        "import chatrelay.auth.identity as _identity\n"
        "_lookup, _cache = _identity._from_api_key, {}\n"
        "async def _cached(request, key):\n"
        "    now = time.monotonic()\n"
        "    hit = _cache.get(key)\n"
        "    if hit is not None and now - hit[0] < 5:\n"
        "        return hit[1]\n"
        "    found = await _lookup(request, key)\n"
        "    _cache[key] = (now, found)\n"
        "    return found\n"
        "_identity._from_api_key = _cached\n"
    ),
    # Every collection over 5 ms, with its generation, in $TMPDIR/chatrelay-gc-<pid>.log.
    "gc-pauses": (
        "import gc, os, tempfile, time\n"
        "_gc_path = os.path.join(tempfile.gettempdir(), f'chatrelay-gc-{os.getpid()}.log')\n"
        "_gc_log = open(_gc_path, 'a')\n"
        "_gc_started = [0.0]\n"
        "def _gc_timed(phase, info):\n"
        "    if phase == 'start':\n"
        "        _gc_started[0] = time.perf_counter()\n"
        "        return\n"
        "    pause = (time.perf_counter() - _gc_started[0]) * 1000\n"
        "    if pause > 5:\n"
        "        _gc_log.write(f\"gen{info['generation']} {pause:.1f} ms\\n\")\n"
        "        _gc_log.flush()\n"
        "gc.callbacks.append(_gc_timed)\n"
    ),
    # Where the memory goes: tracemalloc snapshots, taken when bench/memory_breakdown.py asks
    # (a file $TMPDIR/chatrelay-memory-<pid>.<idle|open>.request), written beside it as
    # .snapshot. Slows the server down (run it at a C it still keeps up with).
    "memory-top": (
        "import os, tempfile, threading, time, tracemalloc\n"
        "tracemalloc.start(1)\n"
        "_mem_path = os.path.join(tempfile.gettempdir(), f'chatrelay-memory-{os.getpid()}')\n"
        "def _mem_watch():\n"
        "    while True:\n"
        "        time.sleep(0.2)\n"
        "        for name in ('idle', 'open', 'after'):\n"
        "            if os.path.exists(f'{_mem_path}.{name}.request'):\n"
        "                tracemalloc.take_snapshot().dump(f'{_mem_path}.{name}.snapshot')\n"
        "                os.remove(f'{_mem_path}.{name}.request')\n"
        "threading.Thread(target=_mem_watch, daemon=True).start()\n"
    ),
    # (A probe) a full collection every second, with what it found logged to
    # $TMPDIR/chatrelay-gc-found-<pid>.log: how much of the memory per stream is cyclic garbage
    # that waits for the rare full collections. Stalls streams (a full collection is long).
    "gc-every-second": (
        "import gc, os, tempfile, threading, time\n"
        "_found_path = f'chatrelay-gc-found-{os.getpid()}.log'\n"
        "_found = open(os.path.join(tempfile.gettempdir(), _found_path), 'a')\n"
        "def _collect_often():\n"
        "    while True:\n"
        "        time.sleep(1)\n"
        "        _found.write(f'{gc.collect()}\\n')\n"
        "        _found.flush()\n"
        "threading.Thread(target=_collect_often, daemon=True).start()\n"
    ),
    # Finished answers forgotten at once instead of kept for re-attaching clients: how much
    # of the memory per stream is theirs.
    "no-finished-jobs": "import os\nos.environ['CHATRELAY_FINISHED_JOB_TTL'] = '0'\n",
    # SQLite writers wait for each other in the event loop (one asyncio.Lock) instead of in
    # SQLite's busy handler, which sleeps 1, 2, 5, ... up to 100 ms between retries even when
    # the lock was freed a microsecond later (the all-threads profile: ~40% of the samples).
    "sqlite-writer-lock": (
        "import asyncio, contextlib\n"
        "from chatrelay.store import database as _database\n"
        "_transaction, _locks = _database.Database.transaction, {}\n"
        "@contextlib.asynccontextmanager\n"
        "async def _serialised(self):\n"
        "    lock = _locks.setdefault(id(self), asyncio.Lock())\n"
        "    async with lock, _transaction(self) as session:\n"
        "        yield session\n"
        "_database.Database.transaction = _serialised\n"
    ),
    # SQLite's per-request writes run on the event loop itself instead of the writer thread:
    # no hop (a wake-up of each thread) per write, but the loop waits for SQLite meanwhile.
    "inline-writes": (
        "from chatrelay.store import database as _database\n"
        "async def _write_inline(self, work):\n"
        "    if self._sync_engine is None:\n"
        "        async with self.engine.begin() as connection:\n"
        "            return await connection.run_sync(work)\n"
        "    async with self._writer:\n"
        "        return _database._write_with(self._sync_engine, work)\n"
        "_database.Database.write = _write_inline\n"
    ),
    # POST /v1/chat/completions served without FastAPI's request handling (routing through
    # the included routers, dependency solving, its exit stacks): a plain ASGI endpoint ahead
    # of the routes reads the body, validates it with pydantic, finds the API key's user and
    # calls the same endpoint function. What a leaner request path would save. (Landed as
    # chatrelay/served.py, which hands bad requests back to FastAPI's route; this copy answers
    # them itself and is kept only to reproduce the measurement in docs/benchmarks.md.)
    "lean-route": (
        "import chatrelay.app as _app\n"
        "from fastapi.exceptions import RequestValidationError as _Invalid\n"
        "from pydantic import ValidationError as _PydanticError\n"
        "from starlette.requests import Request as _Request\n"
        "from starlette.routing import Route as _Route\n"
        "from chatrelay import openai_api as _api\n"
        "class _Lean:\n"
        "    async def __call__(self, scope, receive, send):\n"
        "        request = _Request(scope, receive)\n"
        "        try:\n"
        "            body = _api.CompletionRequest.model_validate_json(await request.body())\n"
        "        except _PydanticError as error:\n"
        "            raise _Invalid([{**e, 'loc': ('body', *e['loc'])} for e in error.errors()])\n"
        "        user = await _api.api_user(request)\n"
        "        conversation = request.headers.get('x-conversation-id')\n"
        "        response = await _api.chat_completions(body, request, user, conversation)\n"
        "        await response(scope, receive, send)\n"
        "_create = _app.create_app\n"
        "def _create_lean(*args, **kwargs):\n"
        "    app = _create(*args, **kwargs)\n"
        "    lean = _Route('/v1/chat/completions', endpoint=_Lean(), methods=['POST'])\n"
        "    app.router.routes.insert(0, lean)\n"
        "    return app\n"
        "_app.create_app = _create_lean\n"
    ),
}


# Experiments that are environment variables of chatrelay's process (the allocators: they
# must be set before Python starts).
ENV_EXPERIMENTS = {
    # Python's objects from the C library's malloc instead of its own small-object arenas.
    "malloc": {"PYTHONMALLOC": "malloc"},
    # One glibc malloc arena for all threads (the SQLite writer thread has its own otherwise).
    "one-arena": {"MALLOC_ARENA_MAX": "1"},
}


# ``src=PATH``: chatrelay's code from another checkout's src/ (an older commit, say, for a
# before/after comparison in one interleaved run: ``git worktree add /tmp/base <commit>``,
# then ``--systems chatrelay,chatrelay:src=/tmp/base/src``).
SOURCE = "src="


def _names(names_or_code: str) -> list[str]:
    return [n.strip() for n in names_or_code.split(",") if n.strip()]


def _known(name: str) -> bool:
    return name in EXPERIMENTS or name in ENV_EXPERIMENTS or name.startswith(SOURCE)


def prelude_code(names_or_code: str) -> str:
    """Named experiments (comma list) or Python code as it is."""
    names = _names(names_or_code)
    if names and all(_known(n) for n in names):
        return "".join(EXPERIMENTS.get(n, "") for n in names)
    return names_or_code


def source_of(names_or_code: str) -> Path | None:
    """The src/ of another checkout that an experiment runs, if one does."""
    sources = [n.removeprefix(SOURCE) for n in _names(names_or_code) if n.startswith(SOURCE)]
    return Path(sources[-1]) if sources else None


def experiment_env(names_or_code: str) -> dict[str, str]:
    env = {k: v for n in _names(names_or_code) for k, v in ENV_EXPERIMENTS.get(n, {}).items()}
    source = source_of(names_or_code)
    if source is not None:
        env["PYTHONPATH"] = str(source)
    return env


def start_chatrelay(
    mock: System, *, prelude: str = "", name: str = "chatrelay", **extra_env: str
) -> System:
    """``prelude``: Python run in the server process before chatrelay starts, for experiments
    (e.g. ``import gc; gc.set_threshold(10_000, 50, 100)``); shown in the settings."""
    workdir = tempfile.mkdtemp(prefix="bench-chatrelay-")
    port = free_port()
    mock_base = mock.url.rsplit("/v1/", 1)[0]
    # Nothing of the caller's own chatrelay configuration leaks in (a Redis URL, a gateway).
    inherited = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CHATRELAY_", "OPENAI_", "LIVEPEER_", "PROMETHEUS_"))
    }
    env = {
        **inherited,
        "OPENAI_BASE_URL": mock_base,
        "CHATRELAY_DATA_DIR": workdir,
        **CHATRELAY_ENV,
        **experiment_env(prelude),
        **extra_env,
    }
    command = [sys.executable, "-m", "chatrelay"]
    serve = [*command, "serve"]
    experiment, prelude = prelude, prelude_code(prelude)
    if prelude:
        serve = [
            sys.executable,
            "-c",
            f"{prelude}\nfrom chatrelay.cli import main\nmain()",
            "serve",
        ]
    # An account and an API key, made the way an operator would, before the server starts.
    subprocess.run(
        [*command, "users", "create", "bench", "--password", "bench-password"],
        env=env,
        check=True,
        capture_output=True,
        cwd=workdir,
    )
    key = subprocess.run(
        [*command, "keys", "create", "--user", "bench", "--name", "bench"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        cwd=workdir,
    ).stdout.strip()
    log = open(Path(workdir, "chatrelay.log"), "wb")  # noqa: SIM115 (lives as long as the process)
    process = subprocess.Popen(
        [*serve, "--port", str(port)], env=env, stdout=log, stderr=log, cwd=workdir
    )
    wait_for_http(f"http://{HOST}:{port}/healthz", 60, process)
    settings = {
        "workers": 1,
        "server": "uvicorn (chatrelay serve)",
        "persistence": f"SQLite in a fresh data dir ({workdir}/chatrelay.db)",
        "quotas": "user token budget, rate limit and stream slots in process (limits above the "
        "load)",
        "metrics": "on (/metrics, one process)",
        "request log": "JSON lines to a file",
        "auth": "API key (Bearer)",
    }
    if experiment:
        settings["experiment (code run before chatrelay starts)"] = experiment
    settings.update(
        {k: v for k, v in env.items() if k.startswith("CHATRELAY_") and k != "CHATRELAY_DATA_DIR"}
    )
    system = System(
        name=name,
        url=f"http://{HOST}:{port}/v1/chat/completions",
        process=process,
        version=_chatrelay_version(source_of(experiment)),
        settings=settings,
        api_key=key,
        workdir=workdir,
    )
    system.refresh_pids()
    return system


def litellm_python() -> Path:
    return LITELLM_VENV / "bin" / "python"


def ensure_litellm() -> bool:
    """Install ``litellm[proxy]`` into bench/.venv-litellm once (about a minute from PyPI)."""
    if (LITELLM_VENV / "bin" / "litellm").exists():
        return True
    print(f"installing {LITELLM_REQUIREMENT} into {LITELLM_VENV} ...", flush=True)
    made = subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)])
    if made.returncode != 0:
        return False
    pip = [str(litellm_python()), "-m", "pip", "install", "--quiet", "--progress-bar", "off"]
    return subprocess.run([*pip, LITELLM_REQUIREMENT]).returncode == 0


LITELLM_VERSION = "import importlib.metadata as m; print(m.version('litellm'))"
MASTER_KEY = "sk-bench-" + secrets.token_hex(16)
LITELLM_CONFIG = """
model_list:
  - model_name: bench
    litellm_params:
      model: openai/bench
      api_base: {api_base}
      api_key: sk-bench
litellm_settings:
  telemetry: false
  drop_params: true
general_settings: {{}}
"""


def start_litellm(mock: System) -> System:
    workdir = tempfile.mkdtemp(prefix="bench-litellm-")
    port = free_port()
    api_base = mock.url.rsplit("/chat/completions", 1)[0]  # .../v1
    config = Path(workdir, "config.yaml")
    config.write_text(LITELLM_CONFIG.format(api_base=api_base))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))},
        # Offline: the bundled model price list, no telemetry, no update checks.
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_TELEMETRY": "False",
        "LITELLM_LOG": "ERROR",
        "HOME": workdir,
        # It refuses to start without one; requests then carry it as their API key.
        "LITELLM_MASTER_KEY": MASTER_KEY,
    }
    version = subprocess.run(
        [str(litellm_python()), "-c", LITELLM_VERSION],
        capture_output=True,
        text=True,
        env=env,
    ).stdout.strip()
    log = open(Path(workdir, "litellm.log"), "wb")  # noqa: SIM115 (lives as long as the process)
    process = subprocess.Popen(
        [
            str(LITELLM_VENV / "bin" / "litellm"),
            "--config",
            str(config),
            "--host",
            HOST,
            "--port",
            str(port),
            "--num_workers",
            "1",
            "--telemetry",
            "False",
        ],
        env=env,
        stdout=log,
        stderr=log,
        cwd=workdir,
    )
    wait_for_http(f"http://{HOST}:{port}/health/liveliness", 180, process)
    system = System(
        name="litellm",
        url=f"http://{HOST}:{port}/v1/chat/completions",
        process=process,
        version=f"litellm {version}",
        settings={
            "workers": 1,
            "server": "litellm CLI (uvicorn)",
            "database": "none",
            "master key": "set (no database: checked in memory)",
            "model": "openai/bench -> the mock",
            "LITELLM_LOG": "ERROR",
            "telemetry": "off",
        },
        api_key=MASTER_KEY,
        workdir=workdir,
    )
    system.refresh_pids()
    return system
