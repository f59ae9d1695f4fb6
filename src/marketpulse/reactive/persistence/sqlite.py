"""SQLite persistence (the default): one file, WAL mode, group commit.

Layout: ``documents(id PRIMARY KEY, tbl, ts, doc)`` holds the latest version of every
document (``doc`` is its convex_encoded_json, via orjson), and ``meta('max_ts')`` the latest
commit timestamp, written in the same SQLite transaction as the documents, so a restart
always resumes with ``ts`` at least as large as any commit ever acknowledged.

Durability: ``synchronous=FULL`` makes SQLite fsync the WAL on every transaction commit, so
an acknowledged mutation survives power loss, not just a process crash (NORMAL would only
guarantee the latter in WAL mode). The cost is amortised by group commit: commits that
arrive while a write is in flight are written together in one transaction (one fsync).

Threads: loading, closing and big writes run on one dedicated thread. A small commit that
finds no write in flight is written on the event loop's own thread instead: handing it to the
thread and back costs two wake-ups (~0.16 ms measured at 1,000 msgs/s, ``bench/commit_path.py``),
about half of what its fsync costs, and the commit is on the latency path of every update it
carries. The loop waits for that fsync, ~0.3 ms on this disk; a big group, whose encoding alone
takes longer, still lets the loop serve others meanwhile. SQLite is never called from two
threads at once: the inline path is taken only while the thread has no write.

A disk that stalls (fsyncs of 30 ms to 1.5 s were seen on this machine's virtual disk while
other work wrote heavily) would freeze every socket while the loop waits. So an inline write
slower than ``INLINE_SLOW_S`` sends every write to the thread for ``INLINE_PAUSE_S``: one stall
can block the loop, a stalling disk cannot keep doing it.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson

from ..values import json_to_value, value_to_json
from ._types import Commit, PersistenceError, Snapshot

__all__ = ["INLINE_MAX_WRITES", "INLINE_PAUSE_S", "INLINE_SLOW_S", "SqlitePersistence"]

INLINE_MAX_WRITES = 64
"""Default bound of a commit written on the loop's thread (see the module docstring)."""
INLINE_SLOW_S = 0.010
"""An inline write slower than this (a stalling disk) pauses inline writes..."""
INLINE_PAUSE_S = 10.0
"""...for this long."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    id TEXT PRIMARY KEY,
    tbl TEXT NOT NULL,
    ts INTEGER NOT NULL,
    doc BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""


class SqlitePersistence:
    """Documents in an SQLite file (``":memory:"`` for a throwaway in-memory database).

    Args:
        path: the database file; created (with its parent directory) if missing.
        inline_max_writes: a commit of at most this many document writes that finds no write
            in flight is written on the event loop's thread (0: always on the SQLite thread).

    Raises:
        PersistenceError: the file cannot be opened as an SQLite database.
    """

    def __init__(self, path: str | Path, *, inline_max_writes: int = INLINE_MAX_WRITES) -> None:
        self.path = str(path)
        self.inline_max_writes = inline_max_writes
        self._inline_paused_until = 0.0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._queue: list[tuple[Commit, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._closed = False
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            self._executor.shutdown(wait=False)
            raise PersistenceError(f"cannot open SQLite database {self.path}: {exc}") from exc

    def __repr__(self) -> str:
        return f"SqlitePersistence({self.path!r})"

    # -- load -----------------------------------------------------------------------------
    def _load_sync(self) -> Snapshot:
        snap = Snapshot()
        row = self._conn.execute("SELECT value FROM meta WHERE key = 'max_ts'").fetchone()
        snap.ts = int(row[0]) if row else 0
        for table, raw in self._conn.execute("SELECT tbl, doc FROM documents ORDER BY rowid"):
            snap.documents.append((table, json_to_value(orjson.loads(raw))))
        return snap

    async def load(self) -> Snapshot:
        """Read every document and the latest commit ts."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, self._load_sync)
        except (sqlite3.Error, ValueError) as exc:
            raise PersistenceError(f"cannot load {self.path}: {exc}") from exc

    # -- write ----------------------------------------------------------------------------
    def _write_sync(self, commits: list[Commit]) -> None:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            for commit in commits:
                upserts = []
                deletes = []
                for w in commit.writes:
                    if w.value is None:
                        deletes.append((w.id,))
                    else:
                        upserts.append(
                            (w.id, w.table, commit.ts, orjson.dumps(value_to_json(w.value)))
                        )
                if upserts:
                    conn.executemany(
                        "INSERT INTO documents (id, tbl, ts, doc) VALUES (?, ?, ?, ?) "
                        "ON CONFLICT(id) DO UPDATE SET tbl = excluded.tbl, ts = excluded.ts, "
                        "doc = excluded.doc",
                        upserts,
                    )
                if deletes:
                    conn.executemany("DELETE FROM documents WHERE id = ?", deletes)
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('max_ts', ?) "
                "ON CONFLICT(key) DO UPDATE SET value = max(value, excluded.value)",
                (commits[-1].ts,),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue:
            batch, self._queue = self._queue, []
            try:
                await loop.run_in_executor(self._executor, self._write_sync, [c for c, _ in batch])
            except Exception as exc:
                error = PersistenceError(f"cannot write to {self.path}: {exc}")
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(error)
            else:
                for _, fut in batch:
                    if not fut.done():
                        fut.set_result(None)

    def write_now(self, commit: Commit) -> bool:
        """Write a small commit durably on this thread, if no write is in flight.

        See :class:`~marketpulse.reactive.persistence.WriteNow` and the module docstring.
        """
        if self._closed:
            raise PersistenceError("persistence is closed")
        if (
            len(commit.writes) > self.inline_max_writes
            or self._queue
            or (self._writer is not None and not self._writer.done())
            or time.monotonic() < self._inline_paused_until
        ):
            return False
        started = time.monotonic()
        try:
            self._write_sync([commit])
        except Exception as exc:
            raise PersistenceError(f"cannot write to {self.path}: {exc}") from exc
        finally:
            if time.monotonic() - started > INLINE_SLOW_S:
                self._inline_paused_until = time.monotonic() + INLINE_PAUSE_S
        return True

    async def write(self, commit: Commit) -> None:
        """Store ``commit`` durably (grouped with concurrent commits into one transaction)."""
        if self.write_now(commit):
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._queue.append((commit, fut))
        if self._writer is None or self._writer.done():
            self._writer = loop.create_task(self._drain())
        await fut

    async def close(self) -> None:
        """Wait for queued writes, then close the file. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._conn.close)
        self._executor.shutdown(wait=True)
