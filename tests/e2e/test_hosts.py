"""The Host allow-list (chatrelay/http/hosts.py): DNS rebinding against a real server on
loopback."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from tests.conftest import RelayFactory
from tests.fake_upstream import FakeUpstream, livepeer_events
from tests.ports import free_port
from tests.sse_client import user


async def test_a_page_on_a_rebound_name_is_refused_before_any_route(
    relay_for: RelayFactory, fake: FakeUpstream
) -> None:
    """A page on rebind.evil.example, its name made to resolve to 127.0.0.1, posts to the
    relay from its own origin: before, the CSRF check passed (Origin and Host agree) and the
    answer streamed, on a fresh guest's budget."""
    fake.script = livepeer_events(["Hel", "lo"])
    async with relay_for("livepeer") as relay:
        port = relay.url.rsplit(":", 1)[1]
        evil = f"rebind.evil.example:{port}"
        headers = {"Host": evil, "Origin": f"http://{evil}"}
        refused = await relay.client.post("/api/chat", json=user("hi"), headers=headers)
        assert refused.status_code == 400
        assert refused.json()["error"]["code"] == "host_not_allowed"
        assert "CHATRELAY_ALLOWED_HOSTS" in refused.json()["error"]["message"]
        assert "set-cookie" not in refused.headers  # no guest made, nothing ran
        assert fake.requests == []
        page = await relay.client.get("/", headers={"Host": evil})
        assert page.status_code == 400 and "set-cookie" not in page.headers
        # The page's own origin still works.
        own = f"127.0.0.1:{port}"
        sent = await relay.client.post(
            "/api/chat", json=user("hi"), headers={"Origin": f"http://{own}"}
        )
        assert sent.status_code == 200 and len(fake.requests) == 1


async def test_on_loopback_the_loopback_names_are_served(relay_for: RelayFactory) -> None:
    async with relay_for("livepeer") as relay:
        port = relay.url.rsplit(":", 1)[1]
        for host in ["localhost", f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"]:
            response = await relay.client.get("/healthz", headers={"Host": host})
            assert response.status_code == 200, host
        for host in ["localhost.evil.example", f"127.0.0.1.nip.io:{port}", "[::2]", ""]:
            response = await relay.client.get("/healthz", headers={"Host": host})
            assert response.status_code == 400, host


async def test_the_configured_names_replace_the_defaults(relay_for: RelayFactory) -> None:
    allowed = ["chat.example.com", "*.example.org", "api.example.net:8443"]
    async with relay_for("livepeer", allowed_hosts=allowed) as relay:
        for host, status in [
            ("chat.example.com", 200),
            ("CHAT.example.com:443", 200),
            ("a.example.org", 200),
            ("b.a.example.org:80", 200),
            ("example.org", 400),
            ("api.example.net:8443", 200),
            ("api.example.net", 400),
            ("127.0.0.1", 400),
        ]:
            response = await relay.client.get("/healthz", headers={"Host": host})
            assert response.status_code == status, host


async def test_bound_elsewhere_the_names_are_required(tmp_path: Path) -> None:
    """Before: it went on to listen for any Host (here it failed to bind, exit 3)."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "CHATRELAY_DATA_DIR": str(tmp_path / "data"),
        "CHATRELAY_EMBEDDED": "false",
    }
    command = [sys.executable, "-m", "chatrelay", "serve", "--port", str(free_port())]
    # 192.0.2.1 (TEST-NET-1): never bound, the check comes first.
    process = await asyncio.create_subprocess_exec(
        *command, "--host", "192.0.2.1", env=env, stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 2
    assert b"CHATRELAY_ALLOWED_HOSTS" in stderr
