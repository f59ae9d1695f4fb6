"""Shared test set-up.

The tests import ``marketpulse`` from this checkout's ``src`` (not whichever checkout was
installed in editable mode), and so do the subprocesses they start with
``python -m marketpulse``.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = str(Path(__file__).resolve().parent.parent / "src")
if sys.path[0] != SRC:
    sys.path.insert(0, SRC)
os.environ["PYTHONPATH"] = os.pathsep.join(
    [SRC, *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != SRC]]
)


# -- PostgreSQL: a database per test --------------------------------------------------------


POSTGRES_SERVER = os.environ.get(
    "MARKETPULSE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432"
)
"""The PostgreSQL server the tests use (trust auth; ``scripts/test.sh`` makes sure it runs)."""


async def _admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(f"{POSTGRES_SERVER}/postgres", timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database's URL, dropped after the test (with whatever still uses
    it). Skips, saying why, only when no server answers at ``POSTGRES_SERVER``."""
    name = f"mp_test_{secrets.token_hex(6)}"
    try:
        asyncio.run(_admin(f"CREATE DATABASE {name}"))
    except OSError as exc:
        pytest.skip(
            f"no PostgreSQL server answers at {POSTGRES_SERVER} ({exc}); scripts/test.sh starts one"
        )
    try:
        yield f"{POSTGRES_SERVER}/{name}"
    finally:
        asyncio.run(_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
