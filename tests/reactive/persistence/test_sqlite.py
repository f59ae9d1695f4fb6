"""SQLite persistence: restart keeps every document and timestamps stay monotonic."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from marketpulse.reactive.engine import Engine
from marketpulse.reactive.persistence import (
    Commit,
    DocumentWrite,
    Persistence,
    PersistenceError,
    Receipt,
    SqlitePersistence,
    open_persistence,
)
from marketpulse.reactive.persistence import sqlite as sqlite_module
from marketpulse.reactive.values import Int64

from ..example_app import MODULES


async def test_restart_keeps_documents_and_ts(db_path: Path) -> None:
    eng = await Engine.open(open_persistence(f"sqlite:{db_path}"), MODULES)
    ids = []
    for i in range(5):
        r = await eng.run_mutation(
            "messages:send", {"channel": "a", "body": f"m{i}", "sentAt": float(i)}
        )
        ids.append(r.value)
    await eng.run_mutation("messages:edit", {"id": ids[0], "body": "edited"})
    await eng.run_mutation("messages:remove", {"id": ids[1]})
    before = eng.run_query("messages:list", {"channel": "a"}).value
    last_ts = eng.ts
    await eng.close()

    eng2 = await Engine.open(open_persistence(f"sqlite:{db_path}"), MODULES)
    try:
        assert eng2.ts == last_ts
        assert eng2.run_query("messages:list", {"channel": "a"}).value == before
        assert eng2.run_query("messages:get", {"id": ids[0]}).value["body"] == "edited"
        assert eng2.run_query("messages:get", {"id": ids[1]}).value is None
        r = await eng2.run_mutation("messages:send", {"channel": "a", "body": "new", "sentAt": 9.0})
        assert r.ts > last_ts
        newest = eng2.run_query("messages:list", {"channel": "a", "limit": 1}).value[0]
        assert newest["body"] == "new"
        assert newest["_creationTime"] > max(d["_creationTime"] for d in before)
    finally:
        await eng2.close()


async def test_receipts_survive_a_restart(db_path: Path) -> None:
    """A re-send after a restart is answered from the receipt written with its commit."""
    request = ("session-1", 4, b"call")
    args = {"channel": "a", "body": "once", "sentAt": 1.0}
    eng = await Engine.open(open_persistence(f"sqlite:{db_path}"), MODULES)
    try:
        first = await eng.run_mutation("messages:send", args, request=request)
    finally:
        await eng.close()
    eng2 = await Engine.open(open_persistence(f"sqlite:{db_path}"), MODULES)
    try:
        again = await eng2.run_mutation("messages:send", args, request=request)
        other = await eng2.run_mutation("messages:send", args, request=("session-1", 4, b"x"))
        listed = eng2.run_query("messages:list", {"channel": "a"}).value
    finally:
        await eng2.close()
    assert first.success and again.success and again.value == first.value
    assert again.ts == first.ts
    assert not other.success, "another call under the same ids is refused"
    assert [m["body"] for m in listed] == ["once"]


async def test_receipts_past_their_age_or_count_are_not_kept(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_module, "RECEIPT_MAX", 3)
    monkeypatch.setattr(sqlite_module, "RECEIPT_PRUNE_S", 0.0)
    now = time.time_ns()
    old = now - sqlite_module.RECEIPT_AGE_NS - 1
    store = SqlitePersistence(db_path)
    await store.load()
    try:
        for i, ts in enumerate([old, now, now + 1, now + 2, now + 3], start=1):
            doc = {"_id": f"d{i}", "_creationTime": 1.0}
            receipt = Receipt("s", i, b"c", ts, b"{}")
            await store.write(Commit(i, (DocumentWrite("t", f"d{i}", doc),), receipts=(receipt,)))
        rows = store._conn.execute("SELECT request FROM receipts ORDER BY ts").fetchall()
    finally:
        await store.close()
    assert [r[0] for r in rows] == [3, 4, 5], "the expired one and the oldest past the count"
    store = SqlitePersistence(db_path)
    try:
        assert [r.request for r in (await store.load()).receipts] == [3, 4, 5]
    finally:
        await store.close()


async def test_ts_survives_a_clock_behind(db_path: Path) -> None:
    p = SqlitePersistence(db_path)
    assert isinstance(p, Persistence)
    future = 2**62
    await p.write(
        Commit(
            future,
            (
                DocumentWrite(
                    "t", "id1", {"_id": "id1", "_creationTime": 1.0, "n": Int64(5), "b": b"\x00"}
                ),
            ),
        )
    )
    await p.close()
    eng = await Engine.open(SqlitePersistence(db_path), MODULES)
    try:
        assert eng.ts == future
        r = await eng.run_mutation("counters:increment", {"name": "x"})
        assert r.ts == future + 1
    finally:
        await eng.close()
    snap = await (p2 := SqlitePersistence(db_path)).load()
    await p2.close()
    assert snap.ts == future + 1
    assert (
        "t",
        {"_id": "id1", "_creationTime": 1.0, "n": Int64(5), "b": b"\x00"},
    ) in snap.documents
    assert isinstance(dict(snap.documents)["t"]["n"], Int64)


async def test_group_commit_keeps_order(tmp_path: Path) -> None:
    p = SqlitePersistence(tmp_path / "g.sqlite3")
    writes = [
        p.write(
            Commit(
                i,
                (DocumentWrite("t", "same", {"_id": "same", "_creationTime": 0.0, "v": float(i)}),),
            )
        )
        for i in range(1, 51)
    ]
    await asyncio.gather(*writes)
    snap = await p.load()
    await p.close()
    assert snap.ts == 50
    assert snap.documents == [("t", {"_id": "same", "_creationTime": 0.0, "v": 50.0})]


def test_open_persistence_urls(tmp_path: Path) -> None:
    # postgresql:// opens the shared log (tests/reactive/persistence/test_postgres.py).
    with pytest.raises(ValueError, match="unknown database URL 'x/db'; expected sqlite"):
        open_persistence("mysql://user:secret@x/db")
    (tmp_path / "dir").mkdir()
    with pytest.raises(PersistenceError):
        SqlitePersistence(tmp_path / "dir")
    (tmp_path / "junk").write_bytes(b"not a database" * 100)
    with pytest.raises(PersistenceError):
        SqlitePersistence(tmp_path / "junk")


async def test_memory_url() -> None:
    p = open_persistence("sqlite::memory:")
    await p.write(Commit(3, ()))
    assert (await p.load()).ts == 3
    await p.close()


def _commit(ts: int, n: int) -> Commit:
    return Commit(
        ts,
        tuple(
            DocumentWrite("t", f"id{i}", {"_id": f"id{i}", "_creationTime": 0.0, "v": float(ts)})
            for i in range(n)
        ),
    )


async def test_small_commit_is_written_on_the_loop_thread_and_durable(tmp_path: Path) -> None:
    p = SqlitePersistence(tmp_path / "inline.sqlite3", inline_max_writes=4)
    threads: list[int] = []
    write_sync = p._write_sync

    def spy(commits: list[Commit]) -> None:
        threads.append(threading.get_ident())
        write_sync(commits)

    p._write_sync = spy  # type: ignore[method-assign]
    await p.write(_commit(1, 4))
    await p.write(_commit(2, 5))  # over the bound: the SQLite thread
    assert threads[0] == threading.get_ident()
    assert threads[1] != threading.get_ident()
    # Durable when write() returns: another connection sees it.
    other = SqlitePersistence(tmp_path / "inline.sqlite3")
    snap = await other.load()
    await other.close()
    await p.close()
    assert snap.ts == 2
    assert len(snap.documents) == 5


async def test_inline_write_failure_is_a_persistence_error(tmp_path: Path) -> None:
    p = SqlitePersistence(tmp_path / "fail.sqlite3", inline_max_writes=64)
    p._conn.close()
    with pytest.raises(PersistenceError, match="cannot write"):
        await p.write(_commit(1, 1))
    p._closed = True  # the connection is gone: nothing left to close
    p._executor.shutdown()


async def test_a_slow_inline_write_sends_the_next_ones_to_the_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = SqlitePersistence(tmp_path / "slow.sqlite3", inline_max_writes=64)
    threads: list[int] = []
    write_sync = p._write_sync
    stall = [True]

    def slow_disk(commits: list[Commit]) -> None:
        threads.append(threading.get_ident())
        if stall[0]:
            time.sleep(sqlite_module.INLINE_SLOW_S * 2)  # a stalling disk
        write_sync(commits)

    p._write_sync = slow_disk  # type: ignore[method-assign]
    await p.write(_commit(1, 1))  # inline, and slow
    stall[0] = False
    await p.write(_commit(2, 1))  # paused: the SQLite thread
    monkeypatch.setattr(sqlite_module, "INLINE_PAUSE_S", 0.0)
    p._inline_paused_until = 0.0
    await p.write(_commit(3, 1))  # the pause is over: inline again
    await p.close()
    me = threading.get_ident()
    assert [t == me for t in threads] == [True, False, True]


async def test_write_now_writes_only_what_it_can_write_on_this_thread(tmp_path: Path) -> None:
    p = SqlitePersistence(tmp_path / "now.sqlite3", inline_max_writes=4)
    assert p.write_now(_commit(1, 5)) is False  # too big for the loop's thread: not written
    assert p.write_now(_commit(2, 3)) is True
    other = SqlitePersistence(tmp_path / "now.sqlite3")
    snap = await other.load()
    await other.close()
    await p.close()
    assert snap.ts == 2 and len(snap.documents) == 3
    with pytest.raises(PersistenceError, match="closed"):
        p.write_now(_commit(3, 1))


async def test_the_writer_thread_makes_way_for_the_loop_and_an_inline_write_does_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pauses: list[tuple[int, float]] = []
    sleep = time.sleep

    def spy(seconds: float) -> None:
        pauses.append((threading.get_ident(), seconds))
        sleep(seconds)

    monkeypatch.setattr(time, "sleep", spy)
    per = sqlite_module.GIL_YIELD_DOCS
    p = SqlitePersistence(tmp_path / "way.sqlite3", inline_max_writes=per * 3)
    await p.write(_commit(1, per * 2 + 1))  # small enough: on the loop's thread
    assert pauses == []
    await asyncio.gather(p.write(_commit(2, per * 3 + 1)), p.write(_commit(3, per)))  # the thread
    snap = await p.load()
    await p.close()
    assert len(snap.documents) == per * 3 + 1 and snap.ts == 3
    me = threading.get_ident()
    assert pauses and all(t != me and s == sqlite_module.GIL_YIELD_S for t, s in pauses)
    assert len(pauses) == (per * 4 + 1) // per  # one per GIL_YIELD_DOCS documents encoded


def test_a_sqlite_url_names_its_file_one_way_everywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from marketpulse.reactive.persistence import open_persistence, sqlite_path

    monkeypatch.setenv("HOME", str(tmp_path))
    assert sqlite_path("sqlite:~/data/s.sqlite") == str(tmp_path / "data" / "s.sqlite")
    assert sqlite_path("sqlite:///abs/s.sqlite") == "/abs/s.sqlite"
    assert sqlite_path("sqlite:rel/s.sqlite") == "rel/s.sqlite"
    assert sqlite_path("sqlite::memory:") == ":memory:"
    assert sqlite_path("postgresql://h/db") is None
    with pytest.raises(ValueError, match="say sqlite:"):
        sqlite_path("/abs/s.sqlite")
    # The file opened is the one named, ~ expanded (it was opened as a literal "~" folder).
    store = open_persistence("sqlite:~/data/s.sqlite")
    try:
        assert (tmp_path / "data" / "s.sqlite").exists()
    finally:
        asyncio.run(store.close())
