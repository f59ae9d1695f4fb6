"""The store's admin key as launchers hand it out: made, kept in a 0600 file, put in a child's
environment.

The key reaches ``marketpulse serve`` and ``marketpulse worker`` only through their environment
(``MARKETPULSE_ADMIN_KEY``): never on a command line, never in a log.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

__all__ = ["ADMIN_KEY_ENV", "admin_key_env", "load_admin_key", "new_admin_key"]

ADMIN_KEY_ENV = "MARKETPULSE_ADMIN_KEY"
"""The environment variable the store and the worker read their admin key from."""

ADMIN_KEY_FILE = "admin_key"


def new_admin_key(prefix: str = "mp_admin_") -> str:
    """A fresh random admin key."""
    return prefix + secrets.token_urlsafe(32)


def admin_key_env(key: str) -> dict[str, str]:
    """The environment entry that hands ``key`` to a child (``""`` lets ``serve`` make one)."""
    return {ADMIN_KEY_ENV: key}


def load_admin_key(data_dir: Path) -> str:
    """The admin key of a data directory: ``MARKETPULSE_ADMIN_KEY`` if set, else its key file.

    A new key is generated on first use and written with mode 0600.
    """
    env = os.environ.get(ADMIN_KEY_ENV, "").strip()
    if env:
        return env
    path = data_dir / ADMIN_KEY_FILE
    if path.exists():
        key = path.read_text().strip()
        if key:
            os.chmod(path, 0o600)
            return key
    key = new_admin_key()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    return key
