"""The store never starts silently on the wrong data, notices its file lost while running, and
reports write failures by their real cause, once per interval.

Every case damages a real SQLite file the way the fault would. A "crash" is a copy of the
database, its WAL and its marker taken while the store still has them open (with
``synchronous=FULL`` that is exactly what a SIGKILL leaves on disk).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from marketpulse.reactive.engine import Engine
from marketpulse.reactive.persistence import (
    Commit,
    DocumentWrite,
    HealthCheck,
    PersistenceError,
    SqlitePersistence,
    UnsafeDatabase,
)
from marketpulse.reactive.persistence._identity import marker_path, read_marker, rescued_copies

from ..example_app import MODULES

FAST = 0.05  # watch interval in these tests (the store's is 1 s)


def doc(i: int, pad: int = 50) -> DocumentWrite:
    return DocumentWrite(
        "t", f"id{i}", {"_id": f"id{i}", "_creationTime": float(i), "p": "x" * pad}
    )


async def write_many(p: SqlitePersistence, first: int, n: int, pad: int = 50) -> int:
    ts = 0
    for i in range(first, first + n):
        ts = 1_000 + i
        await p.write(Commit(ts, (doc(i, pad),)))
    return ts


async def settle(p: SqlitePersistence) -> None:
    """Wait until the marker records the newest durable commit (a few watch intervals)."""
    for _ in range(200):
        marker = read_marker(marker_path(p.path))
        if marker is not None and marker.ts == p._watch.committed_ts:
            return
        await asyncio.sleep(FAST)
    raise AssertionError("the marker never caught up")


def crash_copy(src: Path, dst: Path) -> None:
    """What a SIGKILL of the store on ``src`` would leave, as ``dst``."""
    for suffix in ("", "-wal", ".marker.json"):
        if Path(f"{src}{suffix}").exists():
            shutil.copyfile(f"{src}{suffix}", f"{dst}{suffix}")


def opened(path: Path, **kw: Any) -> SqlitePersistence:
    return SqlitePersistence(path, watch_interval_s=FAST, **kw)


async def reopen_count(path: Path, **kw: Any) -> int:
    p = opened(path, **kw)
    try:
        return len((await p.load()).documents)
    finally:
        await p.close()


def refused(path: Path, *words: str) -> str:
    with pytest.raises(UnsafeDatabase) as info:
        SqlitePersistence(path)
    text = str(info.value)
    assert "--accept-database-loss" in text and "MARKETPULSE_ACCEPT_DATABASE_LOSS" in text
    assert "\n" not in text  # one paragraph
    for w in words:
        assert w in text, text
    return text


# -- ordinary restarts are never refused ------------------------------------------------------
async def test_clean_restart_keeps_the_identity_and_the_marker_is_exact(db_path: Path) -> None:
    p = opened(db_path)
    store_id = p.store_id
    last = await write_many(p, 0, 20)
    await p.close()
    assert read_marker(marker_path(db_path)) is not None
    assert read_marker(marker_path(db_path)).ts == last  # type: ignore[union-attr]
    p2 = opened(db_path)
    try:
        assert p2.store_id == store_id
        assert len((await p2.load()).documents) == 20
    finally:
        await p2.close()


async def test_restart_after_a_crash_mid_write_is_not_refused(tmp_path: Path) -> None:
    live, crashed = tmp_path / "live.db", tmp_path / "crashed.db"
    p = opened(live)
    await write_many(p, 0, 30)
    await settle(p)
    await write_many(p, 30, 30)  # newer than the marker: a crash right after them
    crash_copy(live, crashed)
    await p.close()
    assert await reopen_count(crashed) == 60


async def test_a_database_of_an_older_version_gets_an_identity(db_path: Path) -> None:
    conn = sqlite3.connect(db_path)
    conn.executescript(
        "CREATE TABLE documents (id TEXT PRIMARY KEY, tbl TEXT NOT NULL, ts INTEGER NOT NULL,"
        " doc BLOB NOT NULL); CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);"
        " INSERT INTO meta VALUES ('max_ts', 77);"
    )
    conn.close()
    p = opened(db_path)
    await p.close()
    marker = read_marker(marker_path(db_path))
    assert marker is not None and marker.store_id == p.store_id and marker.ts == 77


# -- damaged at start: refused, with the override a warning -----------------------------------
async def test_missing_file_where_the_marker_says_one_existed(db_path: Path) -> None:
    p = opened(db_path)
    await write_many(p, 0, 5)
    await p.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)
    refused(db_path, "missing", "up to ts 1004")
    assert not db_path.exists()  # the refusal created nothing
    with capture_logs() as logs:
        assert await reopen_count(db_path, accept_loss=True) == 0
    assert any(e["event"].startswith("starting on a database that lost data") for e in logs)
    assert await reopen_count(db_path) == 0  # accepted once, the marker now agrees


async def test_empty_file(db_path: Path) -> None:
    p = opened(db_path)
    await write_many(p, 0, 5)
    await p.close()
    db_path.write_bytes(b"")
    refused(db_path, "empty (0 bytes)")
    assert db_path.stat().st_size == 0


async def test_wal_deleted_after_a_crash(tmp_path: Path) -> None:
    live, crashed = tmp_path / "live.db", tmp_path / "crashed.db"
    p = opened(live)
    await write_many(p, 0, 10)
    p._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the store id and 10 documents in the file
    await write_many(p, 10, 40)
    await settle(p)
    crash_copy(live, crashed)
    await p.close()
    Path(f"{crashed}-wal").unlink()
    refused(crashed, "older than ts 1049", "WAL")


async def test_wal_deleted_before_any_checkpoint(tmp_path: Path) -> None:
    live, crashed = tmp_path / "live.db", tmp_path / "crashed.db"
    p = opened(live)
    await write_many(p, 0, 10)
    await settle(p)
    crash_copy(live, crashed)
    await p.close()
    Path(f"{crashed}-wal").unlink()  # the store's id was in it too
    refused(crashed, "holds no store")


async def test_wal_damaged_after_a_crash(tmp_path: Path) -> None:
    live, crashed = tmp_path / "live.db", tmp_path / "crashed.db"
    p = opened(live)
    await write_many(p, 0, 40, pad=3000)
    await settle(p)
    crash_copy(live, crashed)
    await p.close()
    wal = Path(f"{crashed}-wal")
    with wal.open("r+b") as f:  # SQLite's recovery stops at the first frame that fails its checksum
        f.seek(wal.stat().st_size // 2)
        f.write(os.urandom(8192))
    text = refused(crashed, "older than ts 1039")
    assert "Refusing to start on" in text


async def test_a_foreign_database(tmp_path: Path) -> None:
    ours, theirs = tmp_path / "ours.db", tmp_path / "theirs.db"
    for path in (ours, theirs):
        p = opened(path)
        await write_many(p, 0, 3)
        await p.close()
    other = read_marker(marker_path(theirs))
    assert other is not None
    shutil.copyfile(theirs, ours)
    refused(ours, f"another store ({other.store_id})")
    p = opened(ours, accept_loss=True)  # adopts the database's identity
    assert p.store_id == other.store_id
    await p.close()
    assert read_marker(marker_path(ours)) == other


async def test_an_older_copy_of_the_file(db_path: Path, tmp_path: Path) -> None:
    p = opened(db_path)
    await write_many(p, 0, 10)
    await p.close()
    shutil.copyfile(db_path, tmp_path / "backup.db")
    p = opened(db_path)
    await write_many(p, 10, 10)
    await p.close()
    shutil.copyfile(tmp_path / "backup.db", db_path)
    refused(db_path, "older than ts 1019")


def damage_index_page(path: Path) -> None:
    """Overwrite the header of the primary-key index's root page of a real store file."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    (root,) = conn.execute(
        "SELECT rootpage FROM sqlite_master WHERE name = 'sqlite_autoindex_documents_1'"
    ).fetchone()
    (page_size,) = conn.execute("PRAGMA page_size").fetchone()
    conn.close()
    with path.open("r+b") as f:
        f.seek((root - 1) * page_size + 3)  # cell count and cell offsets
        f.write(b"\xff" * 16)


async def test_a_corrupt_index_page(db_path: Path) -> None:
    p = opened(db_path)
    await write_many(p, 0, 300)
    await p.close()
    damage_index_page(db_path)
    refused(db_path, "quick_check finds it corrupt")
    with capture_logs() as logs:
        p = opened(db_path, accept_loss=True)
        await p.close()
    assert any(e["event"] == "starting on a corrupt database, as told" for e in logs)


async def test_a_file_that_is_not_a_database(db_path: Path) -> None:
    db_path.write_bytes(b"not a database at all" * 100)
    with pytest.raises(PersistenceError, match="cannot open SQLite database"):
        SqlitePersistence(db_path)


# -- while running ---------------------------------------------------------------------------
async def wait_lost(p: SqlitePersistence) -> str:
    for _ in range(200):
        if p.problem is not None:
            return p.problem
        await asyncio.sleep(FAST)
    raise AssertionError("the loss was not noticed")


@pytest.mark.parametrize("how", ["deleted", "replaced", "wal deleted"])
async def test_the_file_lost_while_running_stops_acknowledging(
    db_path: Path, tmp_path: Path, how: str
) -> None:
    eng = await Engine.open(opened(db_path), MODULES)
    try:
        for _ in range(5):
            assert (await eng.run_mutation("counters:increment", {"name": "c"})).success
        acknowledged = eng.ts
        with capture_logs() as logs:
            if how == "deleted":
                db_path.unlink()
            elif how == "replaced":
                other = tmp_path / "other.db"
                sqlite3.connect(other).close()
                os.replace(other, db_path)
            else:
                Path(f"{db_path}-wal").unlink()
            reason = await wait_lost(eng.persistence)  # type: ignore[arg-type]
            results = [
                await eng.run_mutation("counters:increment", {"name": "c"}) for _ in range(50)
            ]
        assert isinstance(eng.persistence, HealthCheck)
        assert ("replaced" if how == "replaced" else "deleted") in reason
        assert not any(r.success for r in results)
        assert all("no longer acknowledges writes" in (r.error_message or "") for r in results)
        lost_lines = [e for e in logs if e["event"] == "database lost"]
        assert len(lost_lines) == 1 and lost_lines[0]["last_durable_ts"] == acknowledged
        assert len([e for e in logs if e["event"] == "store write failed"]) == 1  # not 50
        # Reads go on.
        assert eng.run_query("counters:value", {"name": "c"}).value == 5
    finally:
        await eng.close()
    assert read_marker(marker_path(db_path)).ts == acknowledged  # type: ignore[union-attr]
    (copy,) = rescued_copies(str(db_path))
    if how != "wal deleted":
        refused(
            db_path,
            f"rescued a copy of every commit it acknowledged when it noticed the loss: {copy}",
        )
    # The copy, moved into place, is this store's latest state: it starts without the override.
    for suffix in ("-wal", "-shm"):
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)
    os.replace(copy, db_path)
    eng = await Engine.open(opened(db_path), MODULES)
    try:
        assert eng.ts == acknowledged
        assert eng.run_query("counters:value", {"name": "c"}).value == 5
    finally:
        await eng.close()


async def test_the_whole_folder_deleted_while_running(tmp_path: Path) -> None:
    db = tmp_path / "data" / "store.db"
    eng = await Engine.open(opened(db), MODULES)
    try:
        assert (await eng.run_mutation("counters:increment", {"name": "c"})).success
        shutil.rmtree(db.parent)
        await wait_lost(eng.persistence)  # type: ignore[arg-type]
    finally:
        await eng.close()
    refused(db, "missing")  # the marker was put back: never a silent empty start


# -- write failures: the real cause, once per interval, and then recovery ---------------------
async def test_disk_full_reaches_the_caller_as_disk_full(db_path: Path) -> None:
    eng = await Engine.open(opened(db_path), MODULES)
    p = eng.persistence
    assert isinstance(p, SqlitePersistence)
    try:
        assert (await eng.run_mutation("counters:increment", {"name": "c"})).success
        (pages,) = p._conn.execute("PRAGMA page_count").fetchone()
        p._conn.execute(f"PRAGMA max_page_count={pages}")
        big = {"channel": "a", "body": "x" * 200_000, "sentAt": 1.0}
        with capture_logs() as logs:
            results = await asyncio.gather(
                *(eng.run_mutation("messages:send", big) for _ in range(100))
            )
        assert not any(r.success for r in results)
        for r in results:
            assert "database or disk is full (SQLITE_FULL)" in (r.error_message or "")
            assert "no transaction is active" not in (r.error_message or "")
        assert [e["event"] for e in logs] == ["store write failed"]
        assert p.problem is not None and "disk is full" in p.problem
        assert eng.run_query("counters:value", {"name": "c"}).value == 1  # reads go on
        p._conn.execute("PRAGMA max_page_count=1073741823")  # space again
        assert (await eng.run_mutation("messages:send", big)).success
        assert p.problem is None
    finally:
        await eng.close()


async def test_read_only_database_says_so(db_path: Path) -> None:
    p = opened(db_path)
    p._conn.execute("PRAGMA query_only=1")  # SQLite refuses writes as for a read-only file
    with pytest.raises(PersistenceError, match=r"attempt to write a readonly database"):
        await p.write(Commit(1, (doc(1),)))
    await p.close()


class _FailingFsync:
    """The connection as seen after an fsync error: COMMIT fails with SQLITE_IOERR_FSYNC and
    SQLite has rolled the transaction back (no real way to make fsync fail in process)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.failing = True

    @property
    def in_transaction(self) -> bool:
        return self.conn.in_transaction

    def execute(self, sql: str, *args: Any) -> Any:
        if sql == "COMMIT" and self.failing:
            self.conn.execute("ROLLBACK")
            exc = sqlite3.OperationalError("disk I/O error")
            exc.sqlite_errorname = "SQLITE_IOERR_FSYNC"  # type: ignore[attr-defined]
            raise exc
        return self.conn.execute(sql, *args)

    def executemany(self, sql: str, rows: Any) -> Any:
        return self.conn.executemany(sql, rows)

    def close(self) -> None:
        self.conn.close()


async def test_fsync_io_error_reaches_the_caller_and_nothing_is_written(db_path: Path) -> None:
    p = opened(db_path)
    real = p._conn
    failing = _FailingFsync(real)
    p._conn = failing  # type: ignore[assignment]
    with capture_logs() as logs:
        for i in range(20):
            with pytest.raises(PersistenceError, match=r"disk I/O error \(SQLITE_IOERR_FSYNC\)"):
                await p.write(Commit(10 + i, (doc(i),)))
    assert len(logs) == 1
    assert p.problem is not None
    failing.failing = False
    await p.write(Commit(100, (doc(100),)))
    assert p.problem is None
    snap = await p.load()
    assert [d["_id"] for _, d in snap.documents] == ["id100"]
    await p.close()
