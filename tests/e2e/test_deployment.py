"""Two real chatrelay instances on PostgreSQL and Redis behind a real nginx, started from the
deployment examples in docs/deploy/ (the systemd unit's command, the environment file, the
nginx site), each with two workers (`serve --workers 2`, so four processes): answers re-attach
and stop across instances, and a killed instance's answers are settled by the survivor."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import shutil
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from chatrelay.store.database import Database
from chatrelay.store.models import Instance as InstanceRow
from tests.e2e.test_crash_recovery import log_tail, wait_healthy
from tests.e2e.test_resume import read_rest, read_some
from tests.fake_upstream import FakeUpstream, livepeer_events, paced
from tests.polling import wait_until, wait_until_async
from tests.ports import free_port
from tests.sse_client import DONE, content_of, events_with_ids, user

pytestmark = [
    pytest.mark.parametrize("database_url", ["postgresql"], indirect=True),
    # Each test starts several servers of several processes: two tests at once, on a loaded
    # 2-core CI machine, took over 30 s to start. They take turns on one xdist worker.
    pytest.mark.xdist_group("server_processes"),
]

DEPLOY = Path(__file__).parents[2] / "docs" / "deploy"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
WORDS = [f" w{i}" for i in range(150)]
WHOLE = "".join(WORDS)
# Every instance runs this many workers on its port (issue 25: the scale-out on several cores).
WORKERS = 2


def unit_command(port: int) -> list[str]:
    """The systemd unit's ExecStart for instance ``port``, with this checkout's chatrelay."""
    unit = (DEPLOY / "chatrelay@.service").read_text()
    exec_start = re.search(r"^ExecStart=(.+)$", unit, re.MULTILINE)
    assert exec_start is not None
    command = shlex.split(exec_start.group(1).replace("%i", str(port)))
    assert command[0].endswith("/chatrelay")
    return [sys.executable, "-m", "chatrelay", *command[1:], "--workers", str(WORKERS)]


def unit_environment() -> dict[str, str]:
    """The example environment file plus the unit's own Environment= lines."""
    env: dict[str, str] = {}
    lines = (DEPLOY / "chatrelay.env").read_text().splitlines()
    unit = (DEPLOY / "chatrelay@.service").read_text().splitlines()
    lines += [line.removeprefix("Environment=") for line in unit if line.startswith("Environment=")]
    for line in lines:
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    return env


def nginx_config(tmp: Path, listen: int, backends: list[int]) -> Path:
    """docs/deploy/nginx.conf with the test's ports, inside a main config of the test's own."""
    site = (DEPLOY / "nginx.conf").read_text()
    site = site.replace("listen 80;", f"listen 127.0.0.1:{listen};")
    servers = iter(backends)
    site = re.sub(r"server 127\.0\.0\.1:\d+", lambda _: f"server 127.0.0.1:{next(servers)}", site)
    (tmp / "site.conf").write_text(site)
    temp = "\n".join(
        f"    {kind}_temp_path {tmp / kind};" for kind in ("client_body", "proxy", "fastcgi")
    )
    main = tmp / "nginx.conf"
    main.write_text(
        ("user root;\n" if os.geteuid() == 0 else "")
        + f"daemon off;\nworker_processes 1;\npid {tmp / 'nginx.pid'};\n"
        f"error_log {tmp / 'error.log'} warn;\n"
        "events { worker_connections 1024; }\n"
        "http {\n    access_log off;\n"
        f"{temp}\n    uwsgi_temp_path {tmp / 'uwsgi'};\n    scgi_temp_path {tmp / 'scgi'};\n"
        f"    include {tmp / 'site.conf'};\n}}\n"
    )
    return main


async def instances_are(database_url: str, count: int) -> bool:
    db = Database(database_url)
    try:
        async with db.read() as session:
            return len((await session.scalars(select(InstanceRow.id))).all()) == count
    finally:
        await db.close()


@dataclass
class Instance:
    process: asyncio.subprocess.Process
    url: str


@dataclass
class Deployment:
    instances: list[Instance]
    url: str  # nginx


@contextlib.asynccontextmanager
async def deployment(
    fake: FakeUpstream, database_url: str, redis: dict[str, str], tmp_path: Path, **extra: str
) -> AsyncIterator[Deployment]:
    env = {
        **unit_environment(),
        "PATH": os.environ.get("PATH", ""),
        "LIVEPEER_GATEWAY_URL": fake.base_url,
        "CHATRELAY_DATABASE_URL": database_url,
        "CHATRELAY_REDIS_URL": redis["redis_url"],
        "CHATRELAY_REDIS_PREFIX": redis["redis_prefix"],
        "CHATRELAY_SECRET_KEY": "a-test-secret-shared-by-every-instance",
        "CHATRELAY_DATA_DIR": str(tmp_path / "data"),
        "CHATRELAY_INSTANCE_HEARTBEAT": "0.5",
        "CHATRELAY_RETRY_DEADLINE": "0",
        # The workers' metrics directories, gone with the test's files (a killed instance
        # cannot remove its own).
        "TMPDIR": str(tmp_path),
        # The site's name, and the address the tests reach nginx and the instances by.
        "CHATRELAY_ALLOWED_HOSTS": unit_environment()["CHATRELAY_ALLOWED_HOSTS"] + ",127.0.0.1",
        **extra,
    }
    ports = [free_port(), free_port()]
    processes: list[asyncio.subprocess.Process] = []
    nginx: asyncio.subprocess.Process | None = None
    try:
        # Started together, as systemd would: they take turns migrating the fresh database.
        logs = [tmp_path / f"instance-{n}.log" for n in range(len(ports))]
        for port, log in zip(ports, logs, strict=True):
            with log.open("wb") as log_file:  # the child has its own copy
                process = await asyncio.create_subprocess_exec(
                    *unit_command(port),
                    env=env,
                    stdout=log_file,
                    stderr=asyncio.subprocess.STDOUT,
                    # An instance is a process group, as systemd's control group: killed whole.
                    start_new_session=True,
                )
            processes.append(process)
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        instances = [Instance(p, url) for p, url in zip(processes, urls, strict=True)]
        await asyncio.gather(
            *(wait_healthy(i.url, i.process, log) for i, log in zip(instances, logs, strict=True))
        )
        # Every worker of every instance has joined (each is an instance row of its own).
        try:
            await wait_until_async(lambda: instances_are(database_url, len(ports) * WORKERS))
        except AssertionError as error:
            tails = "\n".join(f"{log.name}:\n{log_tail(log)}" for log in logs)
            raise AssertionError(f"{error}; the instances' logs end:\n{tails}") from None
        listen = free_port()
        config = nginx_config(tmp_path, listen, ports)
        nginx = await asyncio.create_subprocess_exec(NGINX, "-p", str(tmp_path), "-c", str(config))
        await wait_healthy(f"http://127.0.0.1:{listen}", nginx)
        yield Deployment(instances, f"http://127.0.0.1:{listen}")
    finally:
        for process in [*processes, *([nginx] if nginx else [])]:
            if process.returncode is None:
                process.terminate()
                await process.wait()


@pytest.fixture
def deploy(fake: FakeUpstream, database_url: str, redis_limits: dict[str, str], tmp_path: Path):  # type: ignore[no-untyped-def]
    if not Path(NGINX).exists():
        if os.environ.get("CI") == "true":
            pytest.fail("nginx is not installed (CI must test the deployment)")
        pytest.skip("nginx is not installed (apt-get install nginx)")

    def start(**extra: str) -> contextlib.AbstractAsyncContextManager[Deployment]:
        return deployment(fake, database_url, redis_limits, tmp_path, **extra)

    return start


async def test_resume_and_stop_through_the_other_instance(fake: FakeUpstream, deploy) -> None:
    fake.script = paced(livepeer_events(WORDS), 0.01)
    async with deploy() as site:
        a, b = site.instances
        async with httpx.AsyncClient(base_url=a.url, timeout=15) as on_a:
            async with on_a.stream("POST", "/api/chat", json=user("long")) as response:
                message_id = response.headers["x-message-id"]
                conversation_id = response.headers["x-conversation-id"]
                before, last_id = await read_some(response, 10)
            # The client's connection is gone; it comes back through the other instance.
            async with httpx.AsyncClient(base_url=b.url, timeout=15, cookies=on_a.cookies) as on_b:
                url = f"/api/messages/{message_id}/stream"
                async with on_b.stream("GET", url, headers={"Last-Event-ID": last_id}) as resumed:
                    assert resumed.status_code == 200
                    rest, events, ids = await read_rest(resumed)
                assert before + rest == WHOLE  # every token once, in order
                assert ids[0] == str(int(last_id) + 1) and events[-1] == DONE

                # A second answer, generated by A, stopped through B.
                fake.script = paced(livepeer_events(WORDS), 0.05)
                fake.disconnected_at = fake.finished_at = None
                again = {"conversation_id": conversation_id, **user("again")}
                async with on_a.stream("POST", "/api/chat", json=again) as response:
                    second_id = response.headers["x-message-id"]
                    stopped_before, _ = await read_some(response, 3)
                    stop = await on_b.post(f"/api/messages/{second_id}/stop")
                    assert stop.json() == {"id": second_id, "status": "stopping"}
                    rest, events, _ = await read_rest(response)
                await wait_until(lambda: fake.disconnected_at is not None)
                # The upstream request was cut by the other instance's stop, not let run to
                # its end (4 s away).
                assert fake.finished_at is None
                assert events[-2]["x_chatrelay"] == {"status": "stopped"}
                listing = (await on_b.get(f"/api/conversations/{conversation_id}")).json()
    answers = [m for m in listing["messages"] if m["role"] == "assistant"]
    assert answers[0]["status"] == "complete" and answers[0]["content"] == WHOLE
    stored_stop = next(m for m in answers if m["id"] == second_id)
    assert stored_stop["status"] == "stopped"
    assert stored_stop["content"].startswith(stopped_before)  # the partial text is kept


async def test_through_nginx_tokens_stream_and_the_session_works_everywhere(
    fake: FakeUpstream, deploy
) -> None:
    fake.script = paced(livepeer_events(WORDS[:20]), 0.02)
    async with deploy() as site:
        async with httpx.AsyncClient(base_url=site.url, timeout=15) as client:
            registered = await client.post(
                "/api/auth/register", json={"username": "ada", "password": "correct horse 1"}
            )
            assert registered.status_code in (200, 201), registered.text
            arrivals: list[float] = []
            async with client.stream("POST", "/api/chat", json=user("via nginx")) as response:
                # (nginx takes chatrelay's X-Accel-Buffering: no for itself and drops it.)
                assert response.headers["content-type"].startswith("text/event-stream")
                message_id = response.headers["x-message-id"]
                text = ""
                async for _, event in events_with_ids(response):
                    if content := content_of(event):
                        arrivals.append(asyncio.get_running_loop().time())
                        text += content
            assert text == "".join(WORDS[:20])
            # Tokens arrive one by one (nginx holds nothing back), not in one burst at the end.
            assert arrivals[-1] - arrivals[0] > 0.2
            # The same session cookie works on each instance directly.
            for instance in site.instances:
                async with httpx.AsyncClient(
                    base_url=instance.url, cookies=client.cookies
                ) as direct:
                    me = (await direct.get("/api/me")).json()
                    assert me["username"] == "ada"
                    replay = await direct.get(f"/api/messages/{message_id}/stream")
                    assert replay.status_code == 200 and "w19" in replay.text


async def test_a_killed_instance_is_settled_by_the_survivor(fake: FakeUpstream, deploy) -> None:
    fake.script = paced(livepeer_events([f" w{i}" for i in range(2000)]), 0.01)
    async with deploy() as site:
        a, b = site.instances
        async with httpx.AsyncClient(base_url=a.url, timeout=15) as on_a:
            async with on_a.stream("POST", "/api/chat", json=user("long")) as response:
                message_id = response.headers["x-message-id"]
                conversation_id = response.headers["x-conversation-id"]
                before, _ = await read_some(response, 30)

                async def flushed() -> bool:  # what A sent so far is in its row (on its timer)
                    async with httpx.AsyncClient(base_url=b.url, cookies=on_a.cookies) as on_b:
                        listing = (await on_b.get(f"/api/conversations/{conversation_id}")).json()
                    content: str = listing["messages"][-1]["content"]
                    return content.startswith(before)

                await wait_until_async(flushed)
                # The whole instance (its supervisor and workers), as a crash of the host.
                os.killpg(a.process.pid, signal.SIGKILL)
                await a.process.wait()
            cookies = on_a.cookies
        async with httpx.AsyncClient(base_url=b.url, timeout=15, cookies=cookies) as on_b:

            async def answer_status() -> str:
                listing = (await on_b.get(f"/api/conversations/{conversation_id}")).json()
                status: str = listing["messages"][-1]["status"]
                return status

            for _ in range(100):
                if await answer_status() == "interrupted":
                    break
                await asyncio.sleep(0.1)
            listing = (await on_b.get(f"/api/conversations/{conversation_id}")).json()
            answer = listing["messages"][-1]
            assert answer["status"] == "interrupted"
            assert answer["content"].startswith(before)  # the text it had is kept
            # A client following it through the survivor is told how it ended, not left hanging.
            resumed = await on_b.get(f"/api/messages/{message_id}/stream")
            assert resumed.status_code == 200
            assert '"x_chatrelay":{"status":"interrupted"}' in resumed.text
            assert resumed.text.rstrip().endswith("data: [DONE]")
        # New requests through nginx go to the survivor.
        fake.script = livepeer_events(["still", " here"])
        async with httpx.AsyncClient(base_url=site.url, timeout=15, cookies=cookies) as client:
            for _ in range(3):
                async with client.stream("POST", "/api/chat", json=user("hello?")) as response:
                    assert response.status_code == 200
                    text, _, _ = await read_rest(response)
                assert text == "still here"


async def test_rate_limit_is_global_behind_nginx(fake: FakeUpstream, deploy) -> None:
    fake.script = livepeer_events(["ok"])
    async with deploy(CHATRELAY_RATE_LIMIT="4/minute") as site:
        statuses = []
        # Each request a new client (no cookie): nginx spreads them over both instances.
        for _ in range(6):
            async with httpx.AsyncClient(base_url=site.url, timeout=15) as client:
                response = await client.post(
                    "/api/chat", json=user("hi"), headers={"X-Forwarded-For": "203.0.113.9"}
                )
                statuses.append(response.status_code)
        refused = response
    assert statuses == [200, 200, 200, 200, 429, 429]
    assert int(refused.headers["retry-after"]) >= 1
