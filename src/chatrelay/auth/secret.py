"""The server's secret key: from ``CHATRELAY_SECRET_KEY``, else made once and kept on disk.

Usage::

    key = load_secret_key(settings)   # the same value on every restart

The key signs session cookies, so changing it signs everyone out. It is never logged.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from chatrelay.config import Settings

log = logging.getLogger(__name__)
SECRET_KEY_FILE = "secret_key"


def load_secret_key(settings: Settings) -> str:
    if settings.secret_key is not None:
        key = settings.secret_key.get_secret_value().strip()
        if not key:
            raise ValueError("CHATRELAY_SECRET_KEY is set but empty")
        return key
    return _key_from_file(settings.data_dir / SECRET_KEY_FILE)


def _key_from_file(path: Path) -> str:
    if not path.exists():
        _create_key_file(path)
    if path.stat().st_mode & 0o077:
        log.warning("%s is readable by other users; it should be mode 0600", path)
    key = path.read_text(encoding="utf-8").strip()
    if not key:
        raise ValueError(f"{path} is empty: delete it to make a new key, or set it")
    return key


def _create_key_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written whole to a private temporary file, then linked into place: a second process
    # starting at the same moment either wins the link or reads the complete winner.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(secrets.token_urlsafe(48) + "\n")
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass
        else:
            log.info("Generated a new secret key in %s", path)
    finally:
        temporary.unlink(missing_ok=True)
