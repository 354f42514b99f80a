"""Password hashing with argon2id, off the event loop.

Usage::

    stored = await hash_password("correct horse")
    if await verify_password(stored, attempt): ...
    await burn_verify_time(attempt)   # when there is no user, so timing tells nothing

With argon2-cffi's defaults (RFC 9106 low-memory profile: 64 MiB, 3 passes, 4 lanes) one hash
or verify takes about 0.2 s of CPU. That is the point, and also why it runs in a small pool of
its own: it never blocks the loop, never starves ``asyncio.to_thread`` users, and a burst of
sign-ins costs at most ``_WORKERS`` x 64 MiB of memory at once.
"""

from __future__ import annotations

import asyncio
import functools
import os
import secrets
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()
_WORKERS = max(1, min(4, os.cpu_count() or 1))
_pool = ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="argon2")
T = TypeVar("T")


async def _in_pool(function: functools.partial[T]) -> T:
    return await asyncio.get_running_loop().run_in_executor(_pool, function)


def _verify(stored_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(stored_hash, password)
    except (VerificationError, InvalidHashError):
        return False


@functools.cache
def _dummy_hash() -> str:
    return _hasher.hash(secrets.token_urlsafe(16))


def _burn(password: str) -> None:
    _verify(_dummy_hash(), password)


def prepare() -> None:
    """Make the dummy hash now, in the background, so the first unknown-user sign-in is
    not slower than a known one (the hash would otherwise be made on the spot)."""
    _pool.submit(_dummy_hash)


async def hash_password(password: str) -> str:
    return await _in_pool(functools.partial(_hasher.hash, password))


async def verify_password(stored_hash: str, password: str) -> bool:
    """True when ``password`` matches; False for a wrong password or an unreadable hash."""
    return await _in_pool(functools.partial(_verify, stored_hash, password))


async def burn_verify_time(password: str) -> None:
    """Spend what a real verify spends, for a sign-in whose username does not exist."""
    await _in_pool(functools.partial(_burn, password))


def needs_rehash(stored_hash: str) -> bool:
    """The hash was made with older parameters than today's: store a fresh one."""
    try:
        return _hasher.check_needs_rehash(stored_hash)
    except InvalidHashError:
        return False
