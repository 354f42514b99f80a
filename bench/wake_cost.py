"""What one wake-up of an idle Python process costs on this machine: the floor under a relay's
CPU per chunk at low concurrency, where every chunk arrives alone and wakes the process.

    .venv/bin/python bench/wake_cost.py [--seconds 5]

Two processes on 127.0.0.1, one uvloop event loop each, pass a 40-byte message back and forth
over a TCP connection, waiting ``--gap-ms`` between rounds (as paced chunks do): each message
wakes an idle process, which reads it and writes one back. It prints the CPU each process uses
per wake-up (its own thread's CPU time), for gaps of 20, 2 and 0 ms. With no gap each process
still waits for the other, but only for microseconds, its caches warm: that is close to the cost
of the read and the write alone.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import socket
import time
from typing import Any

import uvloop

MESSAGE = b"x" * 40


def thread_cpu() -> float:
    return time.thread_time()


async def echo(port_ready: Any, result: Any) -> None:
    """Answers each message at once; reports its CPU per message when the client leaves."""
    server_socket = socket.create_server(("127.0.0.1", 0))
    port_ready.send(server_socket.getsockname()[1])
    loop = asyncio.get_running_loop()
    connection, _ = await loop.sock_accept(server_socket)
    connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    reader, writer = await asyncio.open_connection(sock=connection)
    started, count = thread_cpu(), 0
    while data := await reader.read(4096):
        writer.write(data)
        count += len(data) // len(MESSAGE)
    result.put((thread_cpu() - started) / max(count, 1))
    writer.close()


def run_echo(port_ready: Any, result: Any) -> None:
    uvloop.run(echo(port_ready, result))


async def ping(port: int, gap_s: float, seconds: float) -> float:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    started, count = thread_cpu(), 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        writer.write(MESSAGE)
        await reader.readexactly(len(MESSAGE))
        count += 1
        if gap_s:
            await asyncio.sleep(gap_s)
    used = (thread_cpu() - started) / count
    writer.close()
    return used


def measure(gap_ms: float, seconds: float) -> tuple[float, float]:
    parent, child = multiprocessing.Pipe()
    result: Any = multiprocessing.Queue()
    server = multiprocessing.Process(target=run_echo, args=(child, result))
    server.start()
    port = parent.recv()
    client = uvloop.run(ping(port, gap_ms / 1000, seconds))
    echoed = result.get(timeout=30)
    server.join()
    return echoed, client


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    for gap_ms in (20.0, 2.0, 0.0):
        echoed, client = measure(gap_ms, args.seconds)
        print(
            f"gap {gap_ms:>4g} ms: the echoing process uses {echoed * 1e6:6.1f} µs of CPU per "
            f"message (woken by a socket), the sending one {client * 1e6:6.1f} µs (woken by a "
            "timer, then by the answer)"
        )


if __name__ == "__main__":
    main()
