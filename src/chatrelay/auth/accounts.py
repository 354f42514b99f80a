"""What a username and a password must look like, checked the same way by the API and the CLI.

Usernames are stored lower-cased: the existing unique constraint then makes them unique
regardless of case, with no race between a check and an insert, and sign-in finds a user
through that constraint's index.
"""

from __future__ import annotations

import re

from chatrelay.errors import ChatRelayError

USERNAME_RULE = "3 to 32 characters: letters, digits, '_', '.' or '-'"
_USERNAME = re.compile(r"[A-Za-z0-9_.-]{3,32}")
MIN_PASSWORD_CHARS = 8
# argon2 accepts any length, but hashing megabytes on request is a cheap way to burn our CPU.
MAX_PASSWORD_CHARS = 1024


def normalise_username(username: str) -> str:
    """The stored form of ``username``, or a 422 saying what a valid one looks like."""
    if not _USERNAME.fullmatch(username):
        raise ChatRelayError(
            422, f"A username is {USERNAME_RULE}.", code="invalid_username", param="username"
        )
    return username.lower()


def check_new_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_CHARS:
        raise ChatRelayError(
            422,
            f"A password needs at least {MIN_PASSWORD_CHARS} characters.",
            code="password_too_short",
            param="password",
        )
    if len(password) > MAX_PASSWORD_CHARS:
        raise ChatRelayError(
            422,
            f"A password can have at most {MAX_PASSWORD_CHARS} characters.",
            code="password_too_long",
            param="password",
        )
