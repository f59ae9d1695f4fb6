"""SQLite persistence (the default): one file, WAL mode, group commit.

Layout: ``documents(id PRIMARY KEY, tbl, ts, doc)`` holds the latest version of every
document (``doc`` is its convex_encoded_json, via orjson), and ``meta('max_ts')`` the latest
commit timestamp, written in the same SQLite transaction as the documents, so a restart
always resumes with ``ts`` at least as large as any commit ever acknowledged.
``receipts(session, request, call, ts, result)`` holds the commits' receipts (exactly-once
WebSocket mutations), in the same transaction as their writes: a client re-sending a mutation
after a restart is answered from it, not run twice. Those older than ``RECEIPT_AGE_NS`` or
beyond the newest ``RECEIPT_MAX`` are deleted now and then, and never loaded.

Durability: ``synchronous=FULL`` makes SQLite fsync the WAL on every transaction commit, so
an acknowledged mutation survives power loss, not just a process crash (NORMAL would only
guarantee the latter in WAL mode). The cost is amortised by group commit: commits that
arrive while a write is in flight are written together in one transaction (one fsync).

Threads: every read and write runs on one dedicated thread, never on the event loop's: an
fsync there would stall every client for as long as it takes, and this machine's virtual disk
was seen taking 30 ms to 1.5 s for one while other work wrote heavily (with a disk injected to
stall 300 ms now and then, the loop's lag p999 went from one stall to under 5 ms when the
writes left the loop: docs/benchmarks.md, "slow disk"). The hand-off to the thread and back
costs two wake-ups (~0.16 ms measured at 1,000 msgs/s, ``bench/commit_path.py``).

``inline_max_writes`` > 0 brings back the old trade for a disk known to be fast: a small
commit that finds no write in flight is written on the loop's thread, saving the hand-off; an
inline write slower than ``INLINE_SLOW_S`` then sends every write to the thread for
``INLINE_PAUSE_S`` (one stall still blocks the loop; a stalling disk cannot keep doing it).
SQLite is never called from two threads at once: the inline path is taken only while the
thread has no write.

Never the wrong data: the store's identity (a random id, ``store('id')``) and its last commit
ts live in the database and in a marker beside it (``_identity.py``). At start it runs
``PRAGMA quick_check`` and compares the two, and refuses (:class:`UnsafeDatabase`) a missing,
empty, foreign, older or corrupt database unless told to accept the loss. While running, a
thread (``_watch.py``) keeps the marker current and notices the file or its WAL deleted or
replaced; from then on writes fail. Write failures carry SQLite's own cause (disk full,
read-only, I/O error) and are logged once per cause per interval (``_failures.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import orjson
import structlog

from ..values import json_to_value, value_to_json
from ._failures import FailureLog, describe
from ._identity import (
    DatabaseState,
    Marker,
    judge,
    marker_path,
    new_store_id,
    read_marker,
    refusal_text,
    rescued_copies,
)
from ._types import (
    RECEIPT_AGE_NS,
    RECEIPT_MAX,
    Commit,
    PersistenceError,
    Receipt,
    Snapshot,
    UnsafeDatabase,
)
from ._watch import DatabaseWatch

log = structlog.get_logger("marketpulse.persistence")

__all__ = [
    "INLINE_MAX_WRITES",
    "INLINE_PAUSE_S",
    "INLINE_SLOW_S",
    "WATCH_INTERVAL_S",
    "SqlitePersistence",
]

INLINE_MAX_WRITES = 0
"""Default bound of a commit written on the loop's thread: none is (see the module docstring)."""
INLINE_SLOW_S = 0.010
"""An inline write slower than this (a stalling disk) pauses inline writes..."""
INLINE_PAUSE_S = 10.0
"""...for this long."""
WATCH_INTERVAL_S = 1.0
"""How often the marker is rewritten and the files are compared with those opened."""
GIL_YIELD_DOCS = 16
"""Documents the writer thread encodes between two pauses that let the loop's thread have the
GIL. Encoding is Python (``value_to_json``, ``orjson``) and holds the GIL; each time the loop's
thread drops it for a system call (every socket send of a fan-out) a busy writer takes it and
keeps it for up to a switch interval, so a writer catching up after a slow flush (tens of
commits at once) held loop callbacks 1.6-2.7 ms off the CPU (HISTORY.md, session 33). Dropping
the GIL is not enough: the thread that drops it takes it straight back unless it waits."""
GIL_YIELD_S = 0.00002
"""The pause itself: long enough for a waiting loop thread to wake and take the GIL."""

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
CREATE TABLE IF NOT EXISTS store (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS receipts (
    session TEXT NOT NULL,
    request INTEGER NOT NULL,
    call BLOB NOT NULL,
    ts INTEGER NOT NULL,
    result BLOB NOT NULL,
    PRIMARY KEY (session, request)
);
CREATE INDEX IF NOT EXISTS receipts_ts ON receipts (ts);
"""

RECEIPT_PRUNE_S = 10.0
"""How often a write also deletes the receipts past their age or count (:data:`RECEIPT_MAX`)."""


class SqlitePersistence:
    """Documents in an SQLite file (``":memory:"`` for a throwaway in-memory database).

    Args:
        path: the database file; created (with its parent directory) if missing.
        inline_max_writes: a commit of at most this many document writes that finds no write
            in flight is written on the event loop's thread (0, the default: every write runs
            on the SQLite thread).
        accept_loss: start even on a database the marker beside it says is not this store's
            latest (missing, empty, foreign, older) or that ``quick_check`` finds corrupt
            (logged as a warning).
        watch_interval_s: how often the marker is rewritten and the files are checked.

    Raises:
        UnsafeDatabase: the database is not the one this store last wrote, or is corrupt.
        PersistenceError: the file cannot be opened as an SQLite database.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        inline_max_writes: int = INLINE_MAX_WRITES,
        accept_loss: bool = False,
        watch_interval_s: float = WATCH_INTERVAL_S,
    ) -> None:
        self.path = str(path)
        self.inline_max_writes = inline_max_writes
        self._inline_paused_until = 0.0
        self._receipts_pruned = time.monotonic()
        self._queue: list[tuple[Commit, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._closed = False
        self._failures = FailureLog("store write failed")
        self._failing: str | None = None
        self._rescue: Future[None] | None = None
        self._rescued: str | None = None
        memory = self.path == ":memory:"
        marker_file = marker_path(self.path)
        marker = None if memory else read_marker(marker_file)
        file_size = -1
        if not memory:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                file_size = Path(self.path).stat().st_size
            # Checked before connecting, which would create the file.
            early = judge(marker, DatabaseState(None, 0, file_size)) if file_size <= 0 else None
            if early is not None and not accept_loss:
                raise UnsafeDatabase(refusal_text(self.path, early, rescued_copies(self.path)))
        self._writer_ident: int | None = None
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="sqlite", initializer=self._note_writer_thread
        )
        try:
            self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            if not memory:
                self._check_integrity(accept_loss)
            self._conn.executescript(_SCHEMA)
            store_id, db_ts = self._read_identity()
        except sqlite3.Error as exc:
            self._executor.shutdown(wait=False)
            with contextlib.suppress(Exception):
                self._conn.close()
            raise PersistenceError(f"cannot open SQLite database {self.path}: {exc}") from exc
        except BaseException:
            self._executor.shutdown(wait=False)
            self._conn.close()
            raise
        if memory:
            self.store_id = store_id or new_store_id()
            self._watch = DatabaseWatch(self.path, marker_file, Marker(self.store_id, 0), 0.0)
            return
        problem = judge(marker, DatabaseState(store_id, db_ts, file_size))
        if problem is not None:
            if not accept_loss:
                self._executor.shutdown(wait=False)
                self._conn.close()
                raise UnsafeDatabase(refusal_text(self.path, problem, rescued_copies(self.path)))
            log.warning(
                "starting on a database that lost data, as told", path=self.path, problem=problem
            )
        if store_id is None:
            store_id = new_store_id()
            self._conn.execute("INSERT INTO store (key, value) VALUES ('id', ?)", (store_id,))
        self.store_id = store_id
        """This store's random id, kept in the database and in the marker beside it."""
        self._watch = DatabaseWatch(
            self.path, marker_file, Marker(store_id, db_ts), watch_interval_s
        )
        # The marker now says what the database holds (also after an accepted loss), before
        # anything is acknowledged.
        self._watch.write_marker()
        self._watch.start()
        # A store dropped without close() must not leave its watch running forever.
        weakref.finalize(self, self._watch.halt)

    def _check_integrity(self, accept_loss: bool) -> None:
        rows = [" ".join(str(r[0]).split()) for r in self._conn.execute("PRAGMA quick_check(20)")]
        if rows == ["ok"]:
            return
        problem = "SQLite's quick_check finds it corrupt: " + "; ".join(rows[:5])
        if not accept_loss:
            raise UnsafeDatabase(refusal_text(self.path, problem))
        log.warning("starting on a corrupt database, as told", path=self.path, problem=problem)

    def _read_identity(self) -> tuple[str | None, int]:
        row = self._conn.execute("SELECT value FROM store WHERE key = 'id'").fetchone()
        ts = self._conn.execute("SELECT value FROM meta WHERE key = 'max_ts'").fetchone()
        return (str(row[0]) if row else None), (int(ts[0]) if ts else 0)

    @property
    def problem(self) -> str | None:
        """Why this store cannot take writes now: its database was lost, or its last write
        failed (until one succeeds); None when healthy."""
        return self._watch.lost or self._failing

    def __repr__(self) -> str:
        return f"SqlitePersistence({self.path!r})"

    # -- load -----------------------------------------------------------------------------
    def _load_sync(self) -> Snapshot:
        snap = Snapshot()
        row = self._conn.execute("SELECT value FROM meta WHERE key = 'max_ts'").fetchone()
        snap.ts = int(row[0]) if row else 0
        for table, raw in self._conn.execute("SELECT tbl, doc FROM documents ORDER BY rowid"):
            snap.documents.append((table, json_to_value(orjson.loads(raw))))
        rows = self._conn.execute(
            "SELECT session, request, call, ts, result FROM receipts WHERE ts >= ? "
            "ORDER BY ts DESC LIMIT ?",
            (time.time_ns() - RECEIPT_AGE_NS, RECEIPT_MAX),
        ).fetchall()
        snap.receipts = [
            Receipt(session, request, bytes(call), ts, bytes(result))
            for session, request, call, ts, result in reversed(rows)
        ]
        return snap

    async def load(self) -> Snapshot:
        """Read every document and the latest commit ts."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, self._load_sync)
        except (sqlite3.Error, ValueError) as exc:
            raise PersistenceError(f"cannot load {self.path}: {exc}") from exc

    # -- write ----------------------------------------------------------------------------
    def _note_writer_thread(self) -> None:
        self._writer_ident = threading.get_ident()

    def _write_sync(self, commits: list[Commit]) -> None:
        """Write ``commits`` in one transaction (on the writer thread, or inline on the loop's)."""
        # Only the writer thread makes way for the loop's (see GIL_YIELD_DOCS).
        yield_gil = threading.get_ident() == self._writer_ident
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        encoded = 0
        try:
            for commit in commits:
                upserts = []
                deletes = []
                for w in commit.writes:
                    if w.value is None:
                        deletes.append((w.id,))
                        continue
                    upserts.append((w.id, w.table, commit.ts, orjson.dumps(value_to_json(w.value))))
                    encoded += 1
                    if yield_gil and encoded % GIL_YIELD_DOCS == 0:
                        time.sleep(GIL_YIELD_S)
                if upserts:
                    conn.executemany(
                        "INSERT INTO documents (id, tbl, ts, doc) VALUES (?, ?, ?, ?) "
                        "ON CONFLICT(id) DO UPDATE SET tbl = excluded.tbl, ts = excluded.ts, "
                        "doc = excluded.doc",
                        upserts,
                    )
                if deletes:
                    conn.executemany("DELETE FROM documents WHERE id = ?", deletes)
            receipts = [
                (r.session, r.request, r.call, r.ts, r.result) for c in commits for r in c.receipts
            ]
            if receipts:
                conn.executemany(
                    "INSERT INTO receipts (session, request, call, ts, result) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT(session, request) DO UPDATE SET "
                    "call = excluded.call, ts = excluded.ts, result = excluded.result",
                    receipts,
                )
                if time.monotonic() - self._receipts_pruned > RECEIPT_PRUNE_S:
                    self._prune_receipts()
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('max_ts', ?) "
                "ON CONFLICT(key) DO UPDATE SET value = max(value, excluded.value)",
                (commits[-1].ts,),
            )
            conn.execute("COMMIT")
        except BaseException:
            # SQLite rolls back by itself on some errors (a full disk, an I/O error); a second
            # ROLLBACK would then replace the real cause with "no transaction is active".
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise
        self._watch.committed_ts = commits[-1].ts

    def _prune_receipts(self) -> None:
        """Delete the receipts past their age, and the oldest beyond ``RECEIPT_MAX`` (in the
        write's transaction: a failed write prunes nothing)."""
        self._receipts_pruned = time.monotonic()
        self._conn.execute("DELETE FROM receipts WHERE ts < ?", (time.time_ns() - RECEIPT_AGE_NS,))
        self._conn.execute(
            "DELETE FROM receipts WHERE ts < "
            "(SELECT ts FROM receipts ORDER BY ts DESC LIMIT 1 OFFSET ?)",
            (RECEIPT_MAX - 1,),
        )

    def _failed(self, exc: BaseException) -> PersistenceError:
        """The error a failed write reaches its caller with (its real cause), logged at most
        once per cause per interval."""
        cause = describe(exc) if isinstance(exc, sqlite3.Error) else str(exc)
        self._failing = cause
        self._failures.report(cause)
        return PersistenceError(f"cannot write to {self.path}: {cause}")

    def _refuse_if_lost(self) -> None:
        if self._watch.lost is not None:
            if self._rescue is None:
                self._rescue = self._executor.submit(self._rescue_sync)
            self._failures.report(self._watch.lost)
            raise PersistenceError(self._watch.lost)

    def _rescue_sync(self) -> None:
        """After a loss, on the SQLite thread: copy what this connection still reads (the lost
        file and its WAL, through the descriptors it holds open) to ``<file>.rescued-<time>``,
        every acknowledged commit, ready to be moved into place. Once."""
        if self._rescued is not None:
            return
        target = Path(f"{self.path}.rescued-{int(time.time())}")
        self._rescued = str(target)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            copy = sqlite3.connect(target)
            try:
                self._conn.backup(copy)
            finally:
                copy.close()
        except (sqlite3.Error, OSError) as exc:
            log.error("cannot rescue the lost database", copy=str(target), error=describe(exc))
            return
        log.warning(
            "rescued every acknowledged commit of the lost database",
            copy=str(target),
            ts=self._watch.committed_ts,
            to_use_it=f"stop the store, move it to {self.path} (no -wal beside it), start",
        )

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue:
            batch, self._queue = self._queue, []
            try:
                self._refuse_if_lost()
                await loop.run_in_executor(self._executor, self._write_sync, [c for c, _ in batch])
            except Exception as exc:
                error = exc if isinstance(exc, PersistenceError) else self._failed(exc)
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(error)
            else:
                self._failing = None
                for _, fut in batch:
                    if not fut.done():
                        fut.set_result(None)

    def write_now(self, commit: Commit) -> bool:
        """Write a small commit durably on this thread, if no write is in flight.

        See :class:`~marketpulse.reactive.persistence.WriteNow` and the module docstring.
        """
        if self._closed:
            raise PersistenceError("persistence is closed")
        self._refuse_if_lost()
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
            raise self._failed(exc) from exc
        finally:
            if time.monotonic() - started > INLINE_SLOW_S:
                self._inline_paused_until = time.monotonic() + INLINE_PAUSE_S
        if self._failing is not None:
            self._failing = None
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
        # The watch stops first: closing the last connection deletes the WAL on purpose.
        await loop.run_in_executor(self._executor, self._watch.stop)
        if self._watch.lost is not None:
            await loop.run_in_executor(self._executor, self._rescue_sync)
        await loop.run_in_executor(self._executor, self._conn.close)
        if self.path != ":memory:":
            await loop.run_in_executor(self._executor, self._watch.set_aside_wal)
            await loop.run_in_executor(self._executor, self._watch.write_marker)
        self._executor.shutdown(wait=True)
