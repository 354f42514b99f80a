"""The floor of any relay written in Python: bytes passed on, nothing else.

A TCP pass-through on uvloop (the event loop chatrelay runs on), one process: each client
connection gets its own connection to the upstream, and whatever either side sends is
written to the other from the read callback, as it arrives. No HTTP parsing, no SSE, no JSON,
no task per connection, no allocation beyond the bytes themselves. What it costs per chunk is
what a Python process pays to be woken by one socket and write to another; a relay that
reads the events (to keep, bill, meter and fail over) can only cost more.

    .venv/bin/python bench/python_floor.py --port 8100 --upstream-port 8001
"""

from __future__ import annotations

import argparse
import asyncio

import uvloop

HOST = "127.0.0.1"


class Pipe(asyncio.Protocol):
    """One side of a connection pair: what it reads goes to ``peer``'s transport."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: Pipe | None = None
        self.early: list[bytes] = []  # what came before the other side was connected

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is None or peer.transport is None:
            self.early.append(data)
        else:
            peer.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()

    # Flow control: a slow reader on one side pauses reading on the other.
    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()


async def serve(port: int, upstream_port: int) -> None:
    loop = asyncio.get_running_loop()
    connecting: set[asyncio.Task[None]] = set()  # referenced until done (the loop's are weak)

    def accepted() -> Pipe:
        client = Pipe()

        async def connect() -> None:
            try:
                _, upstream = await loop.create_connection(Pipe, HOST, upstream_port)
            except OSError:
                if client.transport is not None:
                    client.transport.close()
                return
            assert upstream.transport is not None
            if client.transport is None or client.transport.is_closing():
                upstream.transport.close()  # the client left while this connected
                return
            upstream.peer, client.peer = client, upstream
            for data in client.early:
                upstream.transport.write(data)
            client.early.clear()

        task = loop.create_task(connect())
        connecting.add(task)
        task.add_done_callback(connecting.discard)
        return client

    server = await loop.create_server(accepted, HOST, port, backlog=4096)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream-port", type=int, required=True)
    args = parser.parse_args()
    uvloop.run(serve(args.port, args.upstream_port))


if __name__ == "__main__":
    main()
