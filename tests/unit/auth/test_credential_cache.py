"""The per-process memory of credentials: what it remembers, and what it must not."""

from __future__ import annotations

import asyncio

import pytest

from chatrelay.auth.credential_cache import CachedCredential, CredentialCache
from chatrelay.store.models import User


def entry() -> CachedCredential:
    return CachedCredential(user=User(id="usr_1"))


def test_remembers_a_found_credential_until_forgotten() -> None:
    cache = CredentialCache(ttl=60)
    assert cache.get("s:a") is None
    cache.put("s:a", entry())
    found = cache.get("s:a")
    assert found is not None and found.user.id == "usr_1"
    cache.forget("s:a")
    assert cache.get("s:a") is None


def test_a_forgotten_credential_is_not_remembered_again_by_a_late_lookup() -> None:
    """A request that read the session just before sign-out deleted it must not put it back."""
    cache = CredentialCache(ttl=60)
    cache.forget("s:signed-out")
    cache.put("s:signed-out", entry())
    assert cache.get("s:signed-out") is None
    cache.put("s:other", entry())
    assert cache.get("s:other") is not None


def test_zero_ttl_remembers_nothing() -> None:
    cache = CredentialCache(ttl=0)
    cache.put("k:a", entry())
    assert cache.get("k:a") is None


def test_an_expired_entry_is_gone() -> None:
    cache = CredentialCache(ttl=60)
    cache.put("k:a", entry())
    found = cache.get("k:a")
    assert found is not None
    found.remembered_until = 0.0  # as if its time had passed
    assert cache.get("k:a") is None


async def test_requests_missing_a_credential_together_share_one_read() -> None:
    """A burst of one key's requests finding the memory expired: one read, not one each."""
    cache = CredentialCache(ttl=60)
    reads, release = 0, asyncio.Event()

    async def read() -> CachedCredential:
        nonlocal reads
        reads += 1
        await release.wait()
        return entry()

    waiting = [asyncio.create_task(cache.read("k:a", read)) for _ in range(50)]
    await asyncio.sleep(0)
    release.set()
    found = await asyncio.gather(*waiting)
    assert reads == 1
    assert all(f is found[0] for f in found) and found[0].user.id == "usr_1"
    assert cache.get("k:a") is found[0]  # remembered for the requests that come next


async def test_a_request_that_gives_up_waiting_does_not_cancel_the_others_read() -> None:
    cache = CredentialCache(ttl=60)
    release = asyncio.Event()

    async def read() -> CachedCredential:
        await release.wait()
        return entry()

    first = asyncio.create_task(cache.read("k:a", read))
    second = asyncio.create_task(cache.read("k:a", read))
    await asyncio.sleep(0)
    first.cancel()  # its client left
    release.set()
    assert (await second).user.id == "usr_1"
    assert first.cancelled()


async def test_an_unknown_credential_or_a_failed_read_is_read_again_next_time() -> None:
    cache = CredentialCache(ttl=60)
    results: list[CachedCredential | Exception | None] = [None, RuntimeError("db away"), entry()]
    reads = 0

    async def read() -> CachedCredential | None:
        nonlocal reads
        reads += 1
        result = results.pop(0)
        if isinstance(result, Exception):
            raise result
        return result

    assert await cache.read("k:a", read) is None
    with pytest.raises(RuntimeError):
        await cache.read("k:a", read)
    found = await cache.read("k:a", read)
    assert found is not None and reads == 3


async def test_a_credential_forgotten_while_it_is_read_is_read_anew_by_later_requests() -> None:
    """Signed out while a request was reading the session: requests after the sign-out must not
    take the old read's answer."""
    cache = CredentialCache(ttl=60)
    release = asyncio.Event()
    reads = 0

    async def read() -> CachedCredential:
        nonlocal reads
        reads += 1
        await release.wait()
        return entry()

    before = asyncio.create_task(cache.read("s:a", read))
    await asyncio.sleep(0)
    cache.forget("s:a")
    after = asyncio.create_task(cache.read("s:a", read))
    await asyncio.sleep(0)
    release.set()
    await asyncio.gather(before, after)
    assert reads == 2
    assert cache.get("s:a") is None  # the forgotten session is not remembered by either
