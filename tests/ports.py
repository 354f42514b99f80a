"""Free loopback ports for the servers a test starts in another process (chatrelay serve,
nginx, tinyproxy), whose port has to be named before the server binds it.

A port the kernel hands out for ``bind(("127.0.0.1", 0))`` comes from the ephemeral range,
which every outgoing connection draws its local port from too: between the probe closing it
and the server binding it, a connection of another test (of another xdist worker, or of
another run on the machine) may take it. So the ports here are taken below that range, from a
block of their own per xdist worker, starting at a random place in it, each checked bindable
before it is handed out. An in-process relay needs none of this: conftest.serve binds its
socket itself and hands it to uvicorn.
"""

from __future__ import annotations

import os
import random
import socket
from pathlib import Path

LOWEST = 10_000  # below it: the well-known services a machine may run (postgres, redis, ...)


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default


def _block() -> range:
    """This process's ports: its worker's share of [LOWEST, the ephemeral range)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    index = int(worker) if worker.isdigit() else 0
    size = (_ephemeral_start() - LOWEST) // max(workers, 1)
    return range(LOWEST + index * size, LOWEST + (index + 1) * size)


_BLOCK = _block()
_next = random.randrange(len(_BLOCK))


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    """A loopback port no socket is bound to, and no outgoing connection will pick."""
    global _next
    for _ in range(len(_BLOCK)):
        port = _BLOCK[_next % len(_BLOCK)]
        _next += 1
        if _bindable(port):
            return port
    raise RuntimeError(f"no free port in {_BLOCK}")
