"""`chatrelay serve --workers 2` (cli/workers.py): two processes answer on one port, sharing
through Redis what they must (a stop sent to one reaches the answer the other generates), each
an instance of its own; `/metrics` adds them up; a worker that dies is replaced and its answer
settled by its sibling, after a pause that doubles if it dies soon after starting (also while
its sibling still starts); workers whose supervisor is killed free the port. The server logs to
a file whose tail a failed wait shows.

Which worker a request reaches is the kernel's choice. A test picks it by freezing the other
worker (SIGSTOP) while a new connection makes its first request: only the running one can
accept it, and the connection (kept alive) stays with it after the other is thawed. Which
worker generates an answer is read from the database (its row names its instance, whose row
names its pid)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from chatrelay.cli.workers import FIRST_RETRY, SETTLED
from chatrelay.store.database import Database
from chatrelay.store.models import Instance, MessageRow
from tests.e2e.test_crash_recovery import log_tail, wait_healthy
from tests.e2e.test_resume import read_rest, read_some
from tests.fake_upstream import FakeUpstream, livepeer_events, paced
from tests.polling import wait_until, wait_until_async
from tests.ports import free_port
from tests.sse_client import DONE, user

pytestmark = [
    pytest.mark.parametrize("database_url", ["sqlite"], indirect=True),
    # Each test starts several servers of several processes: two tests at once, on a loaded
    # 2-core CI machine, took over 30 s to start. They take turns on one xdist worker.
    pytest.mark.xdist_group("server_processes"),
]

WORDS = [f" w{i}" for i in range(150)]
STARTING = re.compile(r"worker (\d+) starting")


@dataclass
class Served:
    """A running `chatrelay serve --workers 2`, its database, and the file its supervisor and
    workers log to."""

    process: asyncio.subprocess.Process
    url: str
    db: Database
    log: Path

    def supervisor_said(self) -> list[str]:
        """What the supervisor (cli/workers.py) has logged so far, in order."""
        said = []
        for line in self.log.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):  # a line half written
                entry = json.loads(line)
                if entry.get("logger") == "chatrelay.cli.workers":
                    said.append(entry["message"])
        return said

    def started_workers(self) -> list[int]:
        """The pids of the workers the supervisor has started, in order."""
        return [int(m[1]) for m in map(STARTING.fullmatch, self.supervisor_said()) if m]

    async def until(self, check: Callable[[], Awaitable[object]]) -> None:
        """wait_until_async, failing with the tail of the server's log (what it was doing)."""
        try:
            await wait_until_async(check)
        except AssertionError as error:
            raise AssertionError(f"{error}; the server's log ends:\n{log_tail(self.log)}") from None

    async def workers(self) -> dict[int, str]:
        """The live instances: their instance id by pid."""
        async with self.db.read() as session:
            rows = (await session.execute(select(Instance.pid, Instance.id))).all()
        return {pid: instance_id for pid, instance_id in rows}

    async def generated_by(self, answer_id: str) -> int:
        """The pid of the worker that generates (or generated) an answer."""
        async with self.db.read() as session:
            query = select(MessageRow.instance_id).where(MessageRow.id == answer_id)
            instance_id = await session.scalar(query)
        assert instance_id is not None
        return int(instance_id.split(":")[1])  # host:pid:random (store/instances.py)

    @contextlib.asynccontextmanager
    async def client_on(self, pid: int, **options: Any) -> AsyncIterator[httpx.AsyncClient]:
        """A client whose one kept-alive connection is served by worker ``pid``."""
        others = [other for other in await self.workers() if other != pid]
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(base_url=self.url, limits=limits, timeout=30, **options) as c:
            for other in others:
                os.kill(other, signal.SIGSTOP)
            try:
                first = await c.get("/healthz")
            finally:
                for other in others:
                    os.kill(other, signal.SIGCONT)
            assert first.status_code == 200
            c.event_hooks["response"] = [_same_connection(_peer_of(first))]
            yield c


def _peer_of(response: httpx.Response) -> Any:
    return response.extensions["network_stream"].get_extra_info("client_addr")


def _same_connection(address: Any) -> Any:
    async def check(response: httpx.Response) -> None:
        assert _peer_of(response) == address, "the kept-alive connection was replaced"

    return check


def _parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _is_gone(pid: int) -> bool:
    """No such process, or a zombie waiting to be reaped (it holds nothing any more)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@contextlib.asynccontextmanager
async def _serving(
    fake: FakeUpstream, database_url: str, redis_limits: dict[str, str], tmp_path: Path
) -> AsyncIterator[Served]:
    """`chatrelay serve --workers 2` just started, stopped when done."""
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "LIVEPEER_GATEWAY_URL": fake.base_url,
        "CHATRELAY_DATABASE_URL": database_url,
        "CHATRELAY_DATA_DIR": str(tmp_path / "data"),
        "CHATRELAY_REDIS_URL": redis_limits["redis_url"],
        "CHATRELAY_REDIS_PREFIX": redis_limits["redis_prefix"],
        "CHATRELAY_RETRY_DEADLINE": "0",
        "CHATRELAY_FLUSH_INTERVAL": "0.1",
        # A dead sibling is noticed at the next beat; a frozen one is not taken for dead (12 s).
        "CHATRELAY_INSTANCE_HEARTBEAT": "2",
        # Where the supervisor makes its metrics directory: gone with the test's files even
        # when the test kills the supervisor before it can remove it.
        "TMPDIR": str(tmp_path),
    }
    log = tmp_path / "serve.log"
    with log.open("wb") as log_file:  # the child has its own copy
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "chatrelay", "serve", "--port", str(port), "--workers", "2",
            env=env, stdout=log_file, stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # its own process group: whatever happens, all of it ends
        )  # fmt: skip
    db = Database(database_url)
    try:
        yield Served(process, f"http://127.0.0.1:{port}", db, log)
    finally:
        if process.returncode is None:
            process.terminate()  # the workers first, then the supervisor, as in production
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                os.killpg(process.pid, signal.SIGKILL)  # its group: supervisor and workers
                await process.wait()
        await db.close()


@pytest.fixture
async def served(
    fake: FakeUpstream, database_url: str, redis_limits: dict[str, str], tmp_path: Path
) -> AsyncIterator[Served]:
    """`chatrelay serve --workers 2` whose two workers have joined the instances."""
    async with _serving(fake, database_url, redis_limits, tmp_path) as site:
        await wait_healthy(site.url, site.process, site.log)
        await site.until(lambda: _count_is(site, 2))
        yield site


async def _count_is(site: Served, count: int) -> bool:
    return len(await site.workers()) == count


async def test_two_workers_answer_on_one_port_and_metrics_add_them_up(
    fake: FakeUpstream, served: Served
) -> None:
    fake.script = livepeer_events(["hello", " there"])
    workers = await served.workers()
    assert len(workers) == 2
    # Two processes of this one `chatrelay serve`, each an instance of its own.
    assert all(_parent_of(pid) == served.process.pid for pid in workers)
    for pid in workers:
        async with served.client_on(pid) as client:
            answer = await client.post("/api/chat", json=user("hi"))
            assert answer.status_code == 200
            assert "hello" in answer.text and " there" in answer.text
            assert await served.generated_by(answer.headers["x-message-id"]) == pid
    # Either worker's /metrics counts both workers' answers.
    for pid in workers:
        async with served.client_on(pid) as client:
            metrics = (await client.get("/metrics")).text
        assert 'chatrelay_http_requests_total{route="/api/chat",status="200"} 2.0' in metrics
    # SIGTERM: both workers stop, then the supervisor, cleanly.
    served.process.terminate()
    assert await served.process.wait() == 0
    assert all(_is_gone(pid) for pid in workers)


async def test_a_stop_sent_to_one_worker_stops_the_answer_of_the_other(
    fake: FakeUpstream, served: Served
) -> None:
    fake.script = paced(livepeer_events(WORDS), 0.05)
    async with httpx.AsyncClient(base_url=served.url, timeout=30) as asking:
        async with asking.stream("POST", "/api/chat", json=user("long")) as response:
            answer_id = response.headers["x-message-id"]
            before, _ = await read_some(response, 3)
            generator = await served.generated_by(answer_id)
            other = next(pid for pid in await served.workers() if pid != generator)
            async with served.client_on(other, cookies=asking.cookies) as stopping:
                stop = await stopping.post(f"/api/messages/{answer_id}/stop")
            assert stop.json() == {"id": answer_id, "status": "stopping"}
            rest, events, _ = await read_rest(response)
        await wait_until(lambda: fake.disconnected_at is not None)
        # The upstream request was cut by the stop, not let run to its end (7 s away).
        assert fake.finished_at is None
        assert events[-2]["x_chatrelay"] == {"status": "stopped"} and events[-1] == DONE
        conversation_id = response.headers["x-conversation-id"]
        conversation = (await asking.get(f"/api/conversations/{conversation_id}")).json()
    stored = conversation["messages"][-1]
    assert stored["status"] == "stopped" and stored["content"] == before + rest


async def test_a_dead_worker_is_replaced_and_its_answer_settled_by_the_other(
    fake: FakeUpstream, served: Served
) -> None:
    fake.script = paced(livepeer_events([f" w{i}" for i in range(2000)]), 0.01)
    async with httpx.AsyncClient(base_url=served.url, timeout=30) as client:
        async with client.stream("POST", "/api/chat", json=user("long")) as response:
            answer_id = response.headers["x-message-id"]
            before, _ = await read_some(response, 20)
            dead = await served.generated_by(answer_id)
            os.kill(dead, signal.SIGKILL)
            with contextlib.suppress(httpx.HTTPError):
                await read_rest(response)

        async def replaced() -> bool:
            workers = await served.workers()
            return len(workers) == 2 and dead not in workers

        await served.until(replaced)  # a new worker, and the dead one's row gone
        replacement = next(iter(set(await served.workers()) - {dead}))
        assert _parent_of(replacement) == served.process.pid

        async def told_interrupted() -> bool:
            resumed = await client.get(f"/api/messages/{answer_id}/stream")
            return '"x_chatrelay":{"status":"interrupted"}' in resumed.text

        # Settled by the survivor (its process is gone: at the next heartbeat), the text kept.
        await served.until(told_interrupted)
        resumed = await client.get(f"/api/messages/{answer_id}/stream")
        assert resumed.text.rstrip().endswith("data: [DONE]")
        fake.script = livepeer_events(["still", " here"])
        for pid in await served.workers():  # both the survivor and the replacement answer
            async with served.client_on(pid, cookies=client.cookies) as on_worker:
                again = await on_worker.post("/api/chat", json=user("again"))
            assert again.status_code == 200 and "still" in again.text
    assert before.startswith(" w0")


async def test_a_worker_that_dies_while_its_sibling_still_starts_is_replaced(
    fake: FakeUpstream, database_url: str, redis_limits: dict[str, str], tmp_path: Path
) -> None:
    """One worker serves (and may be killed) while the other has not finished starting: it
    is replaced, not taken for a start that failed, which would stop everything."""
    async with _serving(fake, database_url, redis_limits, tmp_path) as served:
        await served.until(partial(_started_more_than, served, 1))
        first, slow = served.started_workers()
        os.kill(slow, signal.SIGSTOP)  # still starting, as on a loaded machine
        try:
            await served.until(partial(_said, served, f"worker {first} serves"))
            os.kill(first, signal.SIGKILL)
            await served.until(partial(_started_more_than, served, 2))
        finally:
            os.kill(slow, signal.SIGCONT)
        assert served.process.returncode is None
        await served.until(partial(_said, served, "2 workers serving on "))
        replacement = served.started_workers()[2]
        assert set(await served.workers()) == {slow, replacement}


async def test_a_worker_that_dies_soon_after_it_started_is_replaced_after_a_doubling_pause(
    served: Served,
) -> None:
    """A worker that crashes right after every start (the database gone, a bug) is not started
    again and again in a tight loop: each replacement waits twice as long as the last. One that
    served long enough is replaced at once."""

    await served.until(partial(_said, served, "2 workers serving on "))
    both_serving = time.monotonic()  # the supervisor has counted both as serving since before
    # The one that said so last: it has served a moment, far from SETTLED.
    serves = [m for m in served.supervisor_said() if m.endswith(" serves")]
    victim = int(serves[-1].split()[1])
    survivor = next(pid for pid in await served.workers() if pid != victim)
    pause = FIRST_RETRY
    for _ in range(3):
        starts = len(served.started_workers())
        killed_at = time.monotonic()  # before the kill: the supervisor notices it after
        os.kill(victim, signal.SIGKILL)
        await served.until(partial(_started_more_than, served, starts))
        replaced_at = time.monotonic()
        said_then = served.supervisor_said()
        assert any(
            re.fullmatch(
                rf"worker {victim} ended [\d.]+ s after it started serving, under {SETTLED:g} s "
                rf"\(exit status -9\): starting another in {pause:g} s",
                message,
            )
            for message in said_then
        ), said_then
        # Started no sooner than the pause after the kill (a lower bound: load only adds).
        assert replaced_at - killed_at >= pause
        victim = served.started_workers()[-1]
        await served.until(partial(_said, served, f"worker {victim} serves"))
        pause *= 2
    # The survivor has served longer than SETTLED: when it dies, another starts at once.
    await wait_until(lambda: time.monotonic() - both_serving > SETTLED)
    starts = len(served.started_workers())
    os.kill(survivor, signal.SIGKILL)
    await served.until(partial(_started_more_than, served, starts))
    ended = [m for m in served.supervisor_said() if m.startswith(f"worker {survivor} ended")]
    assert len(ended) == 1 and ended[0].endswith("(exit status -9): starting another at once")


async def _said(served: Served, beginning: str) -> bool:
    return any(message.startswith(beginning) for message in served.supervisor_said())


async def _started_more_than(served: Served, starts: int) -> bool:
    return len(served.started_workers()) > starts


async def test_workers_whose_supervisor_is_killed_stop_and_free_the_port(
    served: Served,
) -> None:
    workers = list(await served.workers())
    served.process.send_signal(signal.SIGKILL)  # the supervisor alone, not its group
    await served.process.wait()

    async def all_gone() -> bool:
        return all(_is_gone(pid) for pid in workers)

    await served.until(all_gone)
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient(base_url=served.url) as client:
            await client.get("/healthz")
