"""Which database a store last wrote, and whether the file it is about to open is that one.

A store records its identity (a random store id, made on first start) and its last committed
ts twice: in the database, and in a small marker file beside it (``<database>.marker.json``).
The marker survives what the database may not (the file deleted, truncated, replaced by
another store's, rolled back to an old copy, its WAL lost), so at start :func:`judge`
compares the two and names the loss. The marker is written after commits are durable, at most
about once a second (``_watch.py``), so it never claims more than the database holds: an
ordinary restart, even after a SIGKILL, always agrees with it.
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import orjson

__all__ = [
    "ACCEPT_LOSS_ENV",
    "ACCEPT_LOSS_FLAG",
    "DatabaseState",
    "Marker",
    "judge",
    "marker_path",
    "new_store_id",
    "read_marker",
    "refusal_text",
    "rescued_copies",
    "write_marker",
]

ACCEPT_LOSS_FLAG = "--accept-database-loss"
ACCEPT_LOSS_ENV = "MARKETPULSE_ACCEPT_DATABASE_LOSS"
MARKER_SUFFIX = ".marker.json"


def new_store_id() -> str:
    """A fresh random store id."""
    return secrets.token_hex(16)


def marker_path(database: str | Path) -> Path:
    """The marker file beside ``database``."""
    return Path(f"{database}{MARKER_SUFFIX}")


@dataclass(frozen=True)
class Marker:
    """What the marker beside a database says: whose it is and the newest ts known durable."""

    store_id: str
    ts: int


@dataclass(frozen=True)
class DatabaseState:
    """What the opened database holds: ``store_id`` None when it has none (new or empty)."""

    store_id: str | None
    ts: int
    file_size: int
    """The database file's size before it was opened (-1: there was no file)."""


def judge(marker: Marker | None, db: DatabaseState) -> str | None:
    """Why the database is not the one the marker describes, or None when it is.

    No marker: nothing to compare with (first start, or a database moved here on purpose).
    A marker with a newer ts than the database means acknowledged commits are missing; a
    marker written a moment before a crash lags the database, never leads it.
    """
    if marker is None:
        return None
    had = f"store {marker.store_id} with commits up to ts {marker.ts}"
    if db.file_size < 0:
        return f"the database file is missing, but its marker records {had}"
    if db.file_size == 0:
        return f"the database file is empty (0 bytes), but its marker records {had}"
    if db.store_id is None:
        return (
            f"the database holds no store (a new or emptied database), but its marker records {had}"
        )
    if db.store_id != marker.store_id:
        return (
            f"the database belongs to another store ({db.store_id}), but its marker records {had}"
        )
    if db.ts < marker.ts:
        return (
            f"the database's last commit is ts {db.ts}, older than ts {marker.ts}, which this "
            "store acknowledged (a lost or damaged WAL, or an old copy of the file)"
        )
    return None


def rescued_copies(database: str) -> list[str]:
    """Copies a store made of its database when it noticed the file lost, newest first."""
    path = Path(database)
    pattern = f"{glob.escape(path.name)}.rescued-*"
    return sorted((str(p) for p in path.parent.glob(pattern)), reverse=True)


def refusal_text(
    path: str, problem: str, rescued: list[str] | None = None, *, restore: str | None = None
) -> str:
    """The one-paragraph message of a refused start (``restore``: what to put back, if not
    a SQLite file)."""
    restore = restore or "Restore the right file (with its -wal file) if you have it"
    if rescued:
        restore = (
            f"The store rescued a copy of every commit it acknowledged when it noticed the loss: "
            f"{rescued[0]}; move it to {path} (with no -wal file beside it) and start again"
        )
    return (
        f"Refusing to start on {path}: {problem}. Starting anyway would serve the wrong data "
        f"and lose the acknowledged writes it no longer holds. {restore}; to start on this "
        f"database as it is and accept the loss, run again with {ACCEPT_LOSS_FLAG} (or "
        f"{ACCEPT_LOSS_ENV}=1)."
    )


def read_marker(path: Path) -> Marker | None:
    """The marker at ``path``; None when there is none. An unreadable marker is treated as
    none (it is only ever replaced atomically, so it is damaged only by hand)."""
    try:
        data = orjson.loads(path.read_bytes())
        return Marker(str(data["store_id"]), int(data["ts"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_marker(path: Path, marker: Marker) -> None:
    """Replace the marker atomically and durably: temp file, fsync, rename, fsync the folder.

    Raises:
        OSError: it could not be written (the old marker stays as it was).
    """
    tmp = path.with_name(f"{path.name}.tmp")
    body = orjson.dumps({"store_id": marker.store_id, "ts": marker.ts})
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, body)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    # The rename is durable only once the folder is: else a power loss may bring back the old one.
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
