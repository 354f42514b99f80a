"""`chatrelay serve --workers N`: N server processes answering on one port.

Usage::

    problems = refusals(settings)        # why these settings cannot run several workers
    status = Workers(settings).run()     # after SIGINT/SIGTERM: 0; 3 if the workers could not start

This process binds the listening socket once (uvicorn's ``Config.bind_socket``) and starts
``settings.workers`` workers with multiprocessing's spawn, each inheriting the socket: the
kernel hands every new connection to one of the workers waiting on it. Each worker is a whole
chatrelay (its own app, its own row in ``instances`` and heartbeat, uvicorn's quiet server of
cli/quiet_server.py); what they must share (limits, budgets, re-attach, stops) is in Redis,
which is why several workers need it, and the rest is in the database. The supervisor serves
nothing itself. It

- migrates the database once, in a process of its own, before any worker starts (workers
  migrating together would race on SQLite, which has no lock for it);
- replaces a worker that dies after serving a while (``SETTLED``, 10 s) at once; one that cannot
  start, or dies within 10 s of starting to serve (it would crash again: the database gone, a
  bug), is replaced after a pause that doubles up to 30 s, while the other workers serve on, not
  in a tight loop. The pause starts over once a worker started since has served 10 s. A worker
  that cannot start (never serves) while they are all first starting stops everything, with
  status 3 (the settings or the database are wrong, and would be for every worker); one that
  served and died then is replaced like any other;
- keeps ``/metrics`` adding up every worker's figures: ``PROMETHEUS_MULTIPROC_DIR`` is a new
  empty directory of its own unless set, and a worker that has ended has its live gauges
  removed (prometheus-client's ``mark_process_dead``);
- on SIGINT or SIGTERM, sends every worker SIGTERM (each lets its answers end for up to 5 s,
  as one process does) and waits for them.

A worker whose supervisor is killed outright stops by itself (cli/quiet_server.py).

uvicorn's own ``--workers`` supervisor (uvicorn/supervisors/multiprocess.py) works the same
way and lends the socket, but is not used as it is: it pickles its ``Config`` into each worker
(chatrelay's connection-limited protocol is a class made from the settings at start, which
cannot be pickled), runs uvicorn's plain ``Server`` (not the quiet loop), and exits 0 when its
workers could not start.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from socket import socket
from types import FrameType

import uvicorn

from chatrelay.cli.quiet_server import STARTUP_FAILURE, QuietServer
from chatrelay.config import Settings

log = logging.getLogger(__name__)
_spawn = multiprocessing.get_context("spawn")
# A worker told to stop has this long to finish (5 s for its answers, then its shutdown).
STOP_TIMEOUT = 15.0
# Seconds before another try at starting a worker that could not start, doubling up to the last.
FIRST_RETRY, LAST_RETRY = 1.0, 30.0
# A worker that ends within this many seconds of starting to serve counts as one that could not
# start (replaced after the pause); one that served longer is replaced at once.
SETTLED = 10.0
# How often the supervisor looks at its workers when none has ended or reported.
WATCH_SECONDS = 0.5


def refusals(settings: Settings) -> list[str]:
    """Why ``settings`` cannot run ``settings.workers`` workers, each in one line; none if they
    can."""
    count = settings.workers
    problems = []
    if not settings.redis_url:
        problems.append(
            f"chatrelay serve --workers {count} needs CHATRELAY_REDIS_URL (e.g. "
            "redis://127.0.0.1:6379/0): the workers share rate limits, stream slots, budgets, "
            "re-attach and stops through Redis, and without it each would keep its own. Set it, "
            "or run one worker (docs/operations.md#several-workers)."
        )
    if not settings.has_remote_upstream and settings.embedded:
        problems.append(
            f"chatrelay serve --workers {count} needs an upstream (LIVEPEER_GATEWAY_URL, "
            "OPENAI_BASE_URL or [[upstreams]]): with none, every worker would start an embedded "
            "model of its own, the same model loaded once per worker on the same cores. Run "
            "llama.cpp's server once and set OPENAI_BASE_URL to it, or run one worker."
        )
    return problems


@dataclass
class _Worker:
    process: BaseProcess
    ready: Connection  # receives one message when the worker serves; EOF if it ends before
    serving_since: float | None = None  # time.monotonic() when it said that it serves

    @property
    def started(self) -> bool:
        return self.serving_since is not None

    def look(self) -> bool:
        """Note whether the worker has said that it serves; whether it has just said so."""
        if self.started or not self.ready.poll():
            return False
        with contextlib.suppress(EOFError, OSError):
            if self.ready.recv():
                self.serving_since = time.monotonic()
        return self.started

    def served(self, now: float) -> float | None:
        """How many seconds it has served by ``now``; None if it has not said that it serves."""
        return None if self.serving_since is None else now - self.serving_since


class Workers:
    """The supervisor of ``settings.workers`` workers on one listening socket."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.workers: list[_Worker] = []
        self._stopping = False

    def run(self) -> int:
        """Serve until SIGINT or SIGTERM; the exit status."""
        for stop_signal in (signal.SIGINT, signal.SIGTERM):
            signal.signal(stop_signal, self._stop)
        settings = self.settings
        # As uvicorn binds for its own workers (SO_REUSEADDR, inheritable; status 3 if taken).
        address = uvicorn.Config(
            "chatrelay.app:create_app", host=settings.host, port=settings.port, log_config=None
        )
        listening = address.bind_socket()
        metrics_dir = _own_metrics_dir()
        try:
            if not self._migrate():
                return STARTUP_FAILURE
            if self._stopping:
                return 0
            self.workers = [self._start(listening) for _ in range(settings.workers)]
            return self._supervise(listening)
        finally:
            self._stop_all()
            listening.close()
            if metrics_dir is not None:
                shutil.rmtree(metrics_dir, ignore_errors=True)

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        if not self._stopping:
            log.info("%s: stopping the workers", signal.Signals(signum).name)
        self._stopping = True

    def _migrate(self) -> bool:
        """The database migrated once, by a process that ends with it (this one stays small)."""
        migration = _spawn.Process(target=_migrate, args=(self.settings,), name="migrate")
        migration.start()
        migration.join()
        if migration.exitcode != 0:
            log.error("the database could not be migrated (see above): not starting workers")
        return migration.exitcode == 0

    def _start(self, listening: socket) -> _Worker:
        ready, told = _spawn.Pipe(duplex=False)
        process = _spawn.Process(
            target=serve_worker,
            args=(self.settings, listening, told, os.getpid()),
            name="chatrelay-worker",
        )
        process.start()
        told.close()  # the worker has its own copy: when it ends, ``ready`` reads EOF
        log.info("worker %s starting", process.pid)
        return _Worker(process, ready)

    def _supervise(self, listening: socket) -> int:
        count = self.settings.workers
        serving = False  # every worker of the first start has started
        # When the next worker may start, the pause after the next failed start, and when the
        # last one failed (could not start, or ended before it settled).
        retry_at, pause, failed_at = 0.0, FIRST_RETRY, -1.0
        while not self._stopping:
            workers = self.workers
            waiting = [w.ready for w in workers if not w.started]
            wait([*(w.process.sentinel for w in workers), *waiting], WATCH_SECONDS)
            for worker in workers:
                if worker.look():
                    log.info("worker %s serves", worker.process.pid)
            if not serving and len(workers) == count and all(w.started for w in workers):
                serving = True
                log.info("%d workers serving on %s:%d", count, *listening.getsockname()[:2])
            ended = [w for w in workers if not w.process.is_alive()]
            now = time.monotonic()  # after they ended: a pause is counted from then
            if pause > FIRST_RETRY and any(_settled_since(w, failed_at, now) for w in workers):
                pause = FIRST_RETRY  # a worker started since the last failure has settled
            for worker in ended:
                self._forget(worker)
                pid, code, served = worker.process.pid, worker.process.exitcode, worker.served(now)
                if served is None and not serving:
                    log.error("worker %s could not start (exit status %s): stopping", pid, code)
                    return STARTUP_FAILURE
                if served is not None and served >= SETTLED:
                    log.warning(
                        "worker %s ended after serving %.0f s (exit status %s): starting "
                        "another at once",
                        *(pid, served, code),
                    )
                    retry_at, pause = 0.0, FIRST_RETRY
                    continue
                # One that could not start, or crashed soon after, would likely do it again:
                # not started again and again in a tight loop.
                why = (
                    "could not start"
                    if served is None
                    else f"ended {served:.1f} s after it started serving, under {SETTLED:g} s"
                )
                log.error(
                    "worker %s %s (exit status %s): starting another in %g s",
                    *(pid, why, code, pause),
                )
                retry_at, pause, failed_at = now + pause, min(pause * 2, LAST_RETRY), now
            while len(self.workers) < count and time.monotonic() >= retry_at:
                self.workers.append(self._start(listening))
        return 0

    def _forget(self, worker: _Worker) -> None:
        worker.process.join()
        worker.ready.close()
        self.workers.remove(worker)
        if worker.process.pid is not None:
            _mark_dead(worker.process.pid)

    def _stop_all(self) -> None:
        for worker in self.workers:
            if worker.process.pid is not None and worker.process.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for worker in list(self.workers):
            process = worker.process
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                log.warning("worker %s did not stop in %g s: killed", process.pid, STOP_TIMEOUT)
                process.kill()
            self._forget(worker)


def _settled_since(worker: _Worker, failed_at: float, now: float) -> bool:
    """Whether ``worker`` started serving after ``failed_at`` and has served ``SETTLED``
    seconds by ``now``: starting workers works again."""
    return (
        worker.serving_since is not None
        and worker.serving_since > failed_at
        and (now - worker.serving_since >= SETTLED)
    )


def _own_metrics_dir() -> str | None:
    """A new directory for the workers' metrics, unless PROMETHEUS_MULTIPROC_DIR names one:
    set in the environment the workers inherit (prometheus-client reads it at import)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return None
    path = tempfile.mkdtemp(prefix="chatrelay-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    return path


def _mark_dead(pid: int) -> None:
    """An ended worker's live gauges (active streams, model status) no longer counted; what
    it counted (requests, tokens) still is."""
    from prometheus_client import multiprocess

    with contextlib.suppress(OSError):
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def _migrate(settings: Settings) -> None:
    from chatrelay.observability import configure_logging
    from chatrelay.store.database import database_url, upgrade_database

    configure_logging()
    upgrade_database(database_url(settings))


def serve_worker(settings: Settings, listening: socket, ready: Connection, parent: int) -> None:
    """A worker's life (in the worker): the app, served on the inherited socket until told to
    stop or its supervisor is gone; status 3 if it could not start."""
    from chatrelay.app import create_app
    from chatrelay.cli.quiet_server import server_options
    from chatrelay.observability import configure_logging

    # A terminal's Ctrl-C reaches every process of the group: the supervisor's SIGTERM then
    # stops each worker once (uvicorn takes SIGINT over while it serves, as in one process).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    configure_logging()

    def started() -> None:
        with contextlib.suppress(OSError):
            ready.send(True)
            ready.close()

    config = uvicorn.Config(create_app(settings, tune_gc=True), **server_options(settings))
    server = QuietServer(config, on_started=started, parent=parent)
    with contextlib.suppress(KeyboardInterrupt):  # raised again by uvicorn once it has stopped
        server.run(sockets=[listening])
    if not server.started:
        sys.exit(STARTUP_FAILURE)
