"""The per-process memory of credentials: what it remembers, and what it must not."""

from __future__ import annotations

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
