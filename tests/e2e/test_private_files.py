"""What chatrelay leaves on the machine is for its own user only: the SQLite database and its
WAL files, the data directory, and the embedded llama.cpp server (its port and its log).

Other local users are the threat here: they can read world-readable files, plant links in the
shared temporary directory, and connect to any loopback port.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from chatrelay.config import EMBEDDED_MODEL, Settings
from chatrelay.store.database import Database
from tests.conftest import RelayFactory, serve
from tests.e2e.test_auth import browser, register
from tests.sse_client import DONE, read_answer, user


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def usual_umask() -> Iterator[None]:
    """The umask most systems run with (022), whatever this test run was started with."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


async def test_the_database_and_its_wal_files_are_created_private(
    relay_for: RelayFactory, tmp_path: Path, usual_umask: None
) -> None:
    data = tmp_path / "fresh" / "data"
    async with relay_for(data_dir=data) as relay, browser(relay) as client:
        await register(client, "alice")  # a write: the WAL has frames, the -shm its index
        files = ["chatrelay.db", "chatrelay.db-wal", "chatrelay.db-shm"]
        assert {name: oct(mode(data / name)) for name in files} == dict.fromkeys(files, "0o600")
        assert oct(mode(data / "secret_key")) == "0o600"
    assert oct(mode(data)) == "0o700"


def world_readable_database(path: Path) -> Path:
    """A database as an older chatrelay (or sqlite3 itself) made it, and its -wal file."""
    with sqlite3.connect(path) as old:
        old.execute("CREATE TABLE t (x)")
    wal = Path(f"{path}-wal")  # as a crash leaves it, until SQLite next opens the database
    wal.write_bytes(b"")
    os.chmod(path, 0o644)
    os.chmod(wal, 0o644)
    return wal


async def test_an_existing_world_readable_database_is_made_private(
    tmp_path: Path, usual_umask: None
) -> None:
    path = tmp_path / "chatrelay.db"
    wal = world_readable_database(path)
    database = Database(f"sqlite+aiosqlite:///{path}")
    try:
        assert (oct(mode(path)), oct(mode(wal))) == ("0o600", "0o600")
        await database.upgrade()
        assert oct(mode(path)) == "0o600"
    finally:
        await database.close()


def _listening_addresses(port: int) -> set[str]:
    """The IPv4 addresses a local TCP port listens on, as any user can see in /proc/net/tcp."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, _, hex_port = local.partition(":")
        if state == "0A" and int(hex_port, 16) == port:
            found.add(".".join(str(b) for b in reversed(bytes.fromhex(address))))
    return found


def _command_line(pid: int) -> str:
    """A process's arguments, as any local user (and ``ps``) can read them."""
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")


@pytest.mark.slow
async def test_the_embedded_server_answers_only_chatrelay_and_logs_privately(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared_tmp = tmp_path / "tmp"  # this test's own $TMPDIR
    shared_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(shared_tmp))
    # Another user's link, planted where the log used to go (a predictable name).
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (shared_tmp / f"chatrelay-llama-{os.getpid()}.log").symlink_to(victim)
    # Meant for chatrelay (a container's usual setting): never for the embedded server.
    monkeypatch.setenv("HOST", "0.0.0.0")

    async with serve(Settings(max_tokens_limit=16, data_dir=tmp_path / "data")) as relay:
        local_model = relay.context.local_model
        assert local_model is not None and local_model.port is not None
        assert _listening_addresses(local_model.port) == {"127.0.0.1"}
        request = {"model": EMBEDDED_MODEL, "messages": [{"role": "user", "content": "Hi"}]}
        async with httpx.AsyncClient(base_url=local_model.base_url, timeout=30) as local_user:
            for headers in ({}, {"authorization": "Bearer guessed"}):
                direct = await local_user.post(
                    "/v1/chat/completions", json={**request, "max_tokens": 4}, headers=headers
                )
                assert direct.status_code == 401, direct.text
                assert (await local_user.get("/v1/models", headers=headers)).status_code == 401
        # The key is not on its command line, which every local user can read.
        assert local_model._process is not None
        assert local_model.api_key not in _command_line(local_model._process.pid)

        # chatrelay itself is answered: it sends the key.
        body = {**user("Say hi."), "max_tokens": 8, "temperature": 0}
        async with relay.client.stream("POST", "/api/chat", json=body, timeout=60) as response:
            assert response.status_code == 200
            answer = await read_answer(response)
        assert answer.events[-1] == DONE
        assert answer.text.strip()

        log_path = local_model.log_path
        assert log_path is not None
        assert log_path.parent.parent == shared_tmp
        assert oct(mode(log_path.parent)) == "0o700"
        assert oct(mode(log_path)) == "0o600"
        assert not log_path.is_symlink()
        assert log_path.stat().st_size > 0  # its output goes there
    assert victim.read_text() == "precious"
    assert not log_path.parent.exists()  # removed with the server
