"""Relaxed durability (``durability="relaxed"``) over a real SQLite file: answered before its
write, written by the next group flush or by the next durable commit, in commit order."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from marketpulse.reactive import FunctionModule, MutationCtx, QueryCtx, Schema, Table
from marketpulse.reactive.engine import Engine
from marketpulse.reactive.engine import _engine as engine_impl
from marketpulse.reactive.persistence import SqlitePersistence

from ..conftest import Recorder
from .test_engine import GatedSqlite

schema = Schema({"entries": Table(indexes={"by_n": ["n"]})})
log = FunctionModule("log", schema=schema)


@log.mutation(durability="relaxed")
def relaxed(ctx: MutationCtx, n: int) -> int:
    ctx.db.insert("entries", {"n": n, "kind": "relaxed"})
    return n


@log.mutation
def durable(ctx: MutationCtx, n: int) -> int:
    ctx.db.insert("entries", {"n": n, "kind": "durable"})
    return n


@log.query
def ns(ctx: QueryCtx) -> list[int]:
    return [int(d["n"]) for d in ctx.db.query("entries").with_index("by_n").collect()]


async def _open(p: SqlitePersistence, flush_s: float = 0.010) -> Engine:
    return await Engine.open(p, [log], relaxed_flush_s=flush_s)


async def _until(check: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "not within the time allowed"
        await asyncio.sleep(0.005)


async def _stored(path: Path) -> list[int]:
    eng = await _open(SqlitePersistence(path))
    try:
        value: list[int] = eng.run_query("log:ns", {}).value
        return value
    finally:
        await eng.close()


def test_declaring_an_unknown_durability_is_an_error() -> None:
    m = FunctionModule("bad")
    with pytest.raises(ValueError, match="durability must be 'durable' or 'relaxed'"):

        @m.mutation(durability="eventually")  # type: ignore[arg-type]
        def f(ctx: MutationCtx) -> None:
            return None

    assert log.functions["relaxed"].durability == "relaxed"
    assert log.functions["durable"].durability == "durable"


async def test_relaxed_commit_is_visible_and_answered_before_its_write(tmp_path: Path) -> None:
    p = GatedSqlite(tmp_path / "r.sqlite3")
    # Long enough that a loaded machine cannot start the flush before the first checks.
    eng = await _open(p, flush_s=1.5)
    rec = Recorder()
    try:
        sub = eng.subscribe("log:ns", {}, None, rec)
        p.gate.clear()  # the disk answers nothing
        r = await asyncio.wait_for(eng.run_mutation("log:relaxed", {"n": 1}), 1.0)
        assert r.success and r.value == 1 and r.ts == eng.ts
        assert eng.run_query("log:ns", {}).value == [1]
        assert sub.result.value == [1] and rec.updates[-1][1] == [1]
        assert p.writes == [] and eng.unflushed == 1
        # A second one while the flush (of the first) waits for the disk: still answered.
        await _until(lambda: len(p.writes) == 1)
        r2 = await asyncio.wait_for(eng.run_mutation("log:relaxed", {"n": 2}), 1.0)
        assert r2.success and eng.run_query("log:ns", {}).value == [1, 2]
        p.gate.set()
        await _until(lambda: eng.unflushed == 0)
        assert len(p.writes) == 2
        assert [c.ts for c in p.writes] == [r.ts, r2.ts]
    finally:
        p.gate.set()
        await eng.close()
    assert await _stored(tmp_path / "r.sqlite3") == [1, 2]


async def test_a_durable_commit_carries_every_earlier_relaxed_one(tmp_path: Path) -> None:
    p = GatedSqlite(tmp_path / "d.sqlite3")
    eng = await _open(p, flush_s=10.0)  # the timer never fires within this test
    try:
        for n in (1, 2, 3):
            assert (await eng.run_mutation("log:relaxed", {"n": n})).success
        assert p.writes == [] and eng.unflushed == 3
        r = await eng.run_mutation("log:durable", {"n": 4})
        assert r.success
        # One write, in one transaction: the three relaxed commits, then the durable one.
        assert len(p.writes) == 1 and len(p.writes[0].writes) == 4
        assert p.writes[0].ts == r.ts and eng.unflushed == 0
        values = [w.value["n"] for w in p.writes[0].writes if w.value is not None]
        assert values == [1, 2, 3, 4]
    finally:
        await eng.close()
    assert await _stored(tmp_path / "d.sqlite3") == [1, 2, 3, 4]


async def test_relaxed_behind_a_durable_write_keeps_the_order(tmp_path: Path) -> None:
    p = GatedSqlite(tmp_path / "o.sqlite3")
    eng = await _open(p)
    try:
        p.gate.clear()
        durable = asyncio.ensure_future(eng.run_mutation("log:durable", {"n": 1}))
        await asyncio.sleep(0.01)
        relaxed = asyncio.ensure_future(eng.run_mutation("log:relaxed", {"n": 2}))
        await asyncio.sleep(0.05)
        # Applied after the durable commit before it, so it waits for that write.
        assert not durable.done() and not relaxed.done()
        assert eng.run_query("log:ns", {}).value == []
        p.gate.set()
        assert (await durable).success and (await relaxed).success
        assert eng.run_query("log:ns", {}).value == [1, 2]
    finally:
        p.gate.set()
        await eng.close()
    assert await _stored(tmp_path / "o.sqlite3") == [1, 2]


async def test_close_writes_the_unflushed_commits(tmp_path: Path) -> None:
    eng = await _open(SqlitePersistence(tmp_path / "c.sqlite3"), flush_s=10.0)
    for n in range(5):
        assert (await eng.run_mutation("log:relaxed", {"n": n})).success
    assert eng.unflushed == 5
    await eng.close()
    assert await _stored(tmp_path / "c.sqlite3") == [0, 1, 2, 3, 4]


async def test_a_failing_disk_keeps_relaxed_commits_bounded_and_retries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_impl, "RELAXED_MAX_UNFLUSHED", 3)
    p = GatedSqlite(tmp_path / "f.sqlite3")
    eng = await _open(p, flush_s=0.005)
    try:
        p.fail = True
        for n in range(3):
            assert (await eng.run_mutation("log:relaxed", {"n": n})).success
        await _until(lambda: len(p.writes) >= 1)  # a flush was tried, and failed
        assert eng.unflushed == 3
        # Past the bound a relaxed mutation waits for its write, which fails: refused.
        r = await eng.run_mutation("log:relaxed", {"n": 3})
        assert not r.success and "disk full" in (r.error_message or "")
        d = await eng.run_mutation("log:durable", {"n": 4})
        assert not d.success
        assert eng.run_query("log:ns", {}).value == [0, 1, 2]
        p.fail = False
        await _until(lambda: eng.unflushed == 0)
    finally:
        p.fail = False
        await eng.close()
    assert await _stored(tmp_path / "f.sqlite3") == [0, 1, 2]


async def test_relaxed_flushes_within_its_bound(tmp_path: Path) -> None:
    eng = await _open(SqlitePersistence(tmp_path / "t.sqlite3"), flush_s=0.010)
    try:
        waited: list[float] = []
        for n in range(20):
            assert (await eng.run_mutation("log:relaxed", {"n": n})).success
            start = time.monotonic()
            while eng.unflushed:
                await asyncio.sleep(0.001)
            waited.append(time.monotonic() - start)
        # Generous: the timer is 10 ms; a loaded machine may add a lot.
        assert max(waited) < 2.0
    finally:
        await eng.close()


async def test_a_relaxed_commits_receipt_travels_with_it(tmp_path: Path) -> None:
    p = GatedSqlite(tmp_path / "x.sqlite3")
    eng = await _open(p, flush_s=10.0)
    try:
        request = ("session-1", 7, b"call-digest")
        first = await eng.run_mutation("log:relaxed", {"n": 1}, request=request)
        again = await eng.run_mutation("log:relaxed", {"n": 1}, request=request)
        # Answered from the receipt: the same outcome, nothing written twice.
        assert first.success and again.success and again.value == first.value
        assert eng.run_query("log:ns", {}).value == [1]
        assert (await eng.run_mutation("log:durable", {"n": 2})).success
        # The receipt is in the same write as the commit it belongs to.
        [written] = p.writes
        assert [(r.session, r.request) for r in written.receipts] == [("session-1", 7)]
        assert written.receipts[0].ts == first.ts
    finally:
        await eng.close()


async def test_on_a_shared_log_relaxed_is_written_like_durable() -> None:
    from .test_shared_log import MemoryLog

    shared = MemoryLog()
    eng = await Engine.open(shared.node(1), [log], relaxed_flush_s=10.0)
    try:
        r = await eng.run_mutation("log:relaxed", {"n": 1})
        # Answered only once in the log: a shared log orders commits at write time.
        assert r.success and eng.unflushed == 0
        assert [c.ts for _, c in shared.entries] == [r.ts]
    finally:
        await eng.close()
