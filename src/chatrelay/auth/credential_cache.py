"""A short memory of whom a session cookie or API key belongs to, per process.

Every request names its user by a credential, and looking it up is a database read (with a
write now and then): at hundreds of requests a second that read was a large part of what a
request cost. So a found credential is remembered for ``ttl`` seconds (5 by default,
``CHATRELAY_AUTH_CACHE_SECONDS``; 0 turns it off). Sign-in, sign-up and sign-out in this
process forget at once the session they replace, and an admin's change to a user (disabled,
budget) or a key (revoked) in this process forgets that user's or key's credentials at once;
a session deleted by another instance, a change made there or with the CLI (``chatrelay keys
revoke``, ``chatrelay users budget``) take effect here within ``ttl`` seconds. Unknown
credentials are never remembered (each is a read).

Requests that miss the same credential at the same time share one read (:meth:`read`): a
burst of one key's requests (an agent's parallel calls, a retry storm) found the memory
expired and made one database read each, hundreds at once, every ``ttl`` seconds (issue 25).

Usage::

    cache = CredentialCache(ttl=5.0)
    entry = cache.get(key)              # None: look it up:
    entry = await cache.read(key, read) # read() shared by the requests missing key together
    cache.forget(key)
    cache.forget_user(user_id)          # every credential of that user
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from chatrelay.store.models import User

# Bounded: a flood of distinct valid credentials cannot grow the process without limit.
MAX_ENTRIES = 50_000


@dataclass(slots=True)
class CachedCredential:
    user: User
    # Sessions: when the session expires (the cookie refresh reads it). Keys: the key's id and
    # when its use was last recorded.
    expires_at: datetime | None = None
    api_key_id: str | None = None
    last_used_at: datetime | None = None
    remembered_until: float = 0.0
    api_key_spend_limit: int | None = None  # the key's own spend limit (nanos), if any


class CredentialCache:
    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._entries: dict[str, CachedCredential] = {}
        # Credentials forgotten on purpose (sign-out, sign-in replacing a session), until when:
        # a request that read one just before it was deleted must not remember it again.
        self._forgotten: dict[str, float] = {}
        # The same for users an admin changed (disabled, budget): by user id, until when.
        self._forgotten_users: dict[str, float] = {}
        # The reads under way, by key: a request missing a key being read waits for that read.
        self._reading: dict[str, asyncio.Future[CachedCredential | None]] = {}

    async def read(
        self, key: str, read: Callable[[], Awaitable[CachedCredential | None]]
    ) -> CachedCredential | None:
        """``read()``'s credential for ``key`` (None: unknown), remembered (:meth:`put`); the
        requests that ask for ``key`` while it is read wait for that read instead of their own.
        One that gives up waiting (its client left) does not cancel the read of the others."""
        reading = self._reading.get(key)
        if reading is None:
            reading = asyncio.ensure_future(self._read_and_put(key, read))
            self._reading[key] = reading
            # Retrieved even when every request waiting for it gave up (no "never retrieved").
            reading.add_done_callback(_retrieve)
        return await asyncio.shield(reading)

    async def _read_and_put(
        self, key: str, read: Callable[[], Awaitable[CachedCredential | None]]
    ) -> CachedCredential | None:
        try:
            entry = await read()
            if entry is not None:
                self.put(key, entry)
            return entry
        finally:
            if self._reading.get(key) is asyncio.current_task():
                del self._reading[key]

    def get(self, key: str) -> CachedCredential | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.remembered_until < time.monotonic():
            del self._entries[key]
            return None
        return entry

    def put(self, key: str, entry: CachedCredential) -> None:
        if self.ttl <= 0:
            return
        until = self._forgotten.get(key)
        if until is not None:
            if until > time.monotonic():
                return
            del self._forgotten[key]
        if self._forgotten_users and self._user_forgotten(entry.user.id):
            return
        if len(self._entries) >= MAX_ENTRIES:
            self._drop_expired()
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()
        entry.remembered_until = time.monotonic() + self.ttl
        self._entries[key] = entry

    def forget(self, key: str) -> None:
        self._entries.pop(key, None)
        self._reading.pop(key, None)  # a read under way may have found what is forgotten now
        if self.ttl > 0:
            if len(self._forgotten) >= MAX_ENTRIES:
                self._forgotten.clear()
            self._forgotten[key] = time.monotonic() + self.ttl

    def forget_user(self, user_id: str) -> None:
        """Every credential of ``user_id`` (its sessions and keys): an admin changed the user,
        and this process must see the change from the next request on. A scan of the whole
        memory, which an admin's action can afford and a request never pays."""
        for key in [k for k, e in self._entries.items() if e.user.id == user_id]:
            del self._entries[key]
        self._reading.clear()  # whose reads are under way is not known before they end
        if self.ttl > 0:
            if len(self._forgotten_users) >= MAX_ENTRIES:
                self._forgotten_users.clear()
            self._forgotten_users[user_id] = time.monotonic() + self.ttl

    def _user_forgotten(self, user_id: str) -> bool:
        until = self._forgotten_users.get(user_id)
        if until is None:
            return False
        if until > time.monotonic():
            return True
        del self._forgotten_users[user_id]
        return False

    def _drop_expired(self) -> None:
        now = time.monotonic()
        for key in [k for k, e in self._entries.items() if e.remembered_until < now]:
            del self._entries[key]


def _retrieve(reading: asyncio.Future[CachedCredential | None]) -> None:
    if not reading.cancelled():
        with contextlib.suppress(Exception):
            reading.exception()
