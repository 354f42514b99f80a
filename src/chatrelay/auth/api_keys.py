"""API keys: ``cr_`` + 32 random bytes, shown once, kept only as a SHA-256 hash.

Usage::

    issued = issue_api_key()          # issued.key to the person, issued.key_hash to the table
    key = bearer_token(request.headers.get("authorization"))
    row = lookup by api_key_hash(key)

A fast hash is right here, unlike for passwords: a key carries 256 bits of randomness, so
nobody can guess one from its hash however fast they hash, and a lookup costs microseconds
on every request instead of argon2's fraction of a second.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

KEY_PREFIX = "cr_"
PREFIX_CHARS = 10  # "cr_" and 7 random characters: enough to tell keys apart in a listing
# last_used_at is written at most this often per key, not on every request.
LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class IssuedKey:
    key: str
    key_hash: str
    prefix: str


def api_key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def issue_api_key() -> IssuedKey:
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    return IssuedKey(key=key, key_hash=api_key_hash(key), prefix=key[:PREFIX_CHARS])


def bearer_token(authorization: str | None) -> str | None:
    """The credential of an ``Authorization: Bearer ...`` header, else None."""
    if not authorization:
        return None
    scheme, _, credential = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return credential.strip()
