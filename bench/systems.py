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
import re
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


# Studies: Python run in the server process before chatrelay starts (``--chatrelay-prelude
# gc-pauses``, or a system ``chatrelay:gc-pauses``), one file each in bench/studies/ (see its
# README). Experiments whose conclusions are in docs/benchmarks.md were retired from here.
STUDIES = BENCH / "studies"

# ``src=PATH``: chatrelay's code from another checkout's src/ (an older commit, say, for a
# before/after comparison in one interleaved run: ``git worktree add /tmp/base <commit>``,
# then ``--systems chatrelay,chatrelay:src=/tmp/base/src``).
SOURCE = "src="

# A comma list of these is study names (and src=PATH); anything else is Python code as it is.
_NAME = re.compile(r"[a-z][a-z0-9_-]*")


def _names(names_or_code: str) -> list[str]:
    return [n.strip() for n in names_or_code.split(",") if n.strip()]


def study_path(name: str) -> Path | None:
    path = STUDIES / f"{name.replace('-', '_')}.py"
    return path if path.is_file() else None


def studies() -> list[Path]:
    return sorted(STUDIES.glob("*.py"))


def _are_names(names: list[str]) -> bool:
    return bool(names) and all(n.startswith(SOURCE) or _NAME.fullmatch(n) for n in names)


def prelude_code(names_or_code: str) -> str:
    """Named studies (comma list, with or without ``src=PATH``) or Python code as it is."""
    names = _names(names_or_code)
    if not _are_names(names):
        return names_or_code
    code = []
    for name in names:
        if name.startswith(SOURCE):
            continue
        path = study_path(name)
        if path is None:
            known = ", ".join(p.stem.replace("_", "-") for p in studies())
            raise SystemExit(
                f"no study {name!r} in bench/studies/ ({known}); retired experiments: "
                "docs/benchmarks.md"
            )
        code.append(f"__import__('runpy').run_path({str(path)!r})\n")
    return "".join(code)


def source_of(names_or_code: str) -> Path | None:
    """The src/ of another checkout that an experiment runs, if one does."""
    sources = [n.removeprefix(SOURCE) for n in _names(names_or_code) if n.startswith(SOURCE)]
    return Path(sources[-1]) if sources else None


def experiment_env(names_or_code: str) -> dict[str, str]:
    source = source_of(names_or_code)
    return {"PYTHONPATH": str(source)} if source is not None else {}


def start_chatrelay(
    mock: System, *, prelude: str = "", name: str = "chatrelay", **extra_env: str
) -> System:
    """``prelude``: studies of bench/studies/ and ``src=PATH`` (a comma list), or Python code,
    run in the server process before chatrelay starts (e.g. ``import gc; gc.freeze()``);
    shown in the settings."""
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
            # As ``python -m chatrelay`` (in whichever tree is on the path), after the prelude.
            f"{prelude}\nimport runpy\nrunpy.run_module('chatrelay', run_name='__main__')",
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
    # The server writes to its own copy of the descriptor: ours is closed once it has it.
    with open(Path(workdir, "chatrelay.log"), "wb") as log:
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
    with open(Path(workdir, "litellm.log"), "wb") as log:  # the server has its own copy
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
