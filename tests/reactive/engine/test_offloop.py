"""Slow one-shot queries off the event loop: the loop stays free, results stay exact at one ts."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from marketpulse.reactive import FunctionModule, MutationCtx, QueryCtx, Schema, Table
from marketpulse.reactive.engine import Engine
from marketpulse.reactive.engine._readset import ReadSet
from marketpulse.reactive.limits import RunLimits
from marketpulse.reactive.persistence import open_persistence

pairs = FunctionModule(
    "pairs",
    schema=Schema(
        {"pairs": Table(indexes={"by_name": ["name"]}), "items": Table(indexes={"by_n": ["n"]})}
    ),
)


def _spin(seconds: float) -> None:
    # Wall-clock seconds, and at least 10 ms of this thread's CPU: how the engine tells a slow
    # function (a loaded machine lends a spinning thread only part of the wall-clock time).
    end = time.perf_counter() + seconds
    cpu_end = time.thread_time() + min(seconds, 0.01)
    while time.perf_counter() < end or time.thread_time() < cpu_end:
        pass


def _one(ctx: Any, name: str) -> Any:
    return ctx.db.query("pairs").with_index("by_name", lambda q: q.eq("name", name)).unique()


@pairs.mutation
def set_both(ctx: MutationCtx, n: float) -> None:
    for name in ("a", "b"):
        doc = _one(ctx, name)
        if doc is None:
            ctx.db.insert("pairs", {"name": name, "n": n})
        else:
            ctx.db.patch(doc["_id"], {"n": n})


@pairs.mutation
def add_item(ctx: MutationCtx, n: float) -> None:
    ctx.db.insert("items", {"n": n})


@pairs.query
def read_pair(ctx: QueryCtx, spin: float) -> list[float]:
    """Reads a, computes, reads b: a run that straddles a commit of both sees them differ."""
    a = _one(ctx, "a")
    _spin(spin)
    b = _one(ctx, "b")
    return [a["n"] if a else -1.0, b["n"] if b else -1.0]


# read_gated holds between its two reads until a test opens the gate: a run that straddles a
# commit without depending on how fast the host runs the test.
_gate_reached = threading.Event()
_gate_open = threading.Event()


@pairs.query
def read_gated(ctx: QueryCtx) -> list[float]:
    """read_pair with the gate in place of the spin."""
    a = _one(ctx, "a")
    _gate_reached.set()
    _gate_open.wait(5.0)  # bounded: a run that (wrongly) went inline stalls, then fails
    b = _one(ctx, "b")
    return [a["n"] if a else -1.0, b["n"] if b else -1.0]


@pairs.query
def count_items(ctx: QueryCtx, spin: float) -> list[float]:
    """A scan slow enough to span many commits (several guarded chunks)."""
    seen = 0
    total = 0.0
    for doc in ctx.db.query("items").with_index("by_n"):
        seen += 1
        total += doc["n"]
        if seen % 50 == 0:
            _spin(spin)
    return [float(seen), total]


@pairs.query
def forever(ctx: QueryCtx) -> None:
    while True:
        pass


@pairs.query
def fast(ctx: QueryCtx) -> float:
    return 1.0


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Engine]:
    eng = await Engine.open(
        open_persistence(f"sqlite:{tmp_path / 's.sqlite3'}"),
        [pairs],
        limits=RunLimits(query_time_limit=1.0, mutation_time_limit=1.0),
    )
    try:
        yield eng
    finally:
        await eng.close()


async def loop_gaps(until: asyncio.Future[Any]) -> float:
    """The longest the loop went without running this ticker while ``until`` was pending."""
    worst = 0.0
    last = time.perf_counter()
    while not until.done():
        await asyncio.sleep(0.002)
        now = time.perf_counter()
        worst = max(worst, now - last)
        last = now
    return worst


async def test_a_slow_query_leaves_the_loop_free(engine: Engine) -> None:
    await engine.run_mutation("pairs:set_both", {"n": 1.0})
    run = asyncio.ensure_future(engine.run_queries([("pairs:read_pair", {"spin": 0.5})]))
    worst = await loop_gaps(run)
    (result,), spent = await run
    assert result.success and result.value == [1.0, 1.0] and result.ts == engine.ts
    assert 0.05 < spent < 1.0  # the run's own CPU time (a shared machine lends less), charged
    assert engine.offloop.runs == 1
    # Inline the loop would have stalled 0.5 s; off the loop it ticks (generous: a loaded
    # machine's scheduling alone shows 40 ms gaps).
    assert worst < 0.25, worst


async def test_fast_functions_run_inline_after_their_first_run(engine: Engine) -> None:
    for _ in range(3):
        (result,), _ = await engine.run_queries([("pairs:fast", {})])
        assert result.value == 1.0
    assert engine.offloop.runs == 1  # only the first, which found it fast
    (result,), _ = await engine.run_queries([("pairs:read_pair", {"spin": 0.02})])
    (result,), _ = await engine.run_queries([("pairs:read_pair", {"spin": 0.0})])
    assert engine.offloop.runs == 3  # slow once: off the loop for good


async def straddled(engine: Engine, calls: list[tuple[str, dict[str, Any]]]) -> list[Any]:
    """Run ``calls`` (the first one ``pairs:read_gated``) with a commit of ``n = 5`` landing
    between the gated call's two reads, whatever the host's speed; their results."""
    await engine.run_mutation("pairs:set_both", {"n": 0.0})
    _gate_reached.clear()
    _gate_open.clear()
    run = asyncio.ensure_future(engine.run_queries(calls))
    # The first call has read "a" and waits: this commit lands inside its run.
    assert await asyncio.to_thread(_gate_reached.wait, 5.0)
    await engine.run_mutation("pairs:set_both", {"n": 5.0})
    _gate_open.set()
    results, _ = await run
    return results


async def test_a_run_that_straddles_a_commit_is_repeated(engine: Engine) -> None:
    (result,) = await straddled(engine, [("pairs:read_gated", {})])
    assert result.value == [5.0, 5.0], "a result mixes two commits"
    assert result.ts == engine.ts
    assert engine.offloop.retries >= 1


async def test_after_its_attempts_a_run_finishes_inline_and_exact(engine: Engine) -> None:
    engine.offloop.attempts = 2
    await engine.run_mutation("pairs:set_both", {"n": 0.0})
    stop = asyncio.Event()

    async def writer() -> None:
        n = 0.0
        while not stop.is_set():
            n += 1
            await engine.run_mutation("pairs:set_both", {"n": n})
            await asyncio.sleep(0.01)

    task = asyncio.create_task(writer())
    try:
        (result,), _ = await engine.run_queries([("pairs:read_pair", {"spin": 0.1})])
    finally:
        stop.set()
        await task
    a, b = result.value
    assert a == b
    assert engine.offloop.inline == 1 and engine.offloop.retries == 2


async def test_a_scan_across_commits_is_exact(engine: Engine) -> None:
    for n in range(400):
        await engine.run_mutation("pairs:add_item", {"n": float(n)})
    run = asyncio.ensure_future(engine.run_queries([("pairs:count_items", {"spin": 0.02})]))
    added: list[tuple[int, float]] = []  # (commit ts, n) of the items added meanwhile
    while not run.done():
        n = 1000.0 + len(added)
        committed = await engine.run_mutation("pairs:add_item", {"n": n})
        added.append((committed.ts, n))
        await asyncio.sleep(0.01)
    (result,), _ = await run
    seen, total = result.value
    # Exact at its ts: every item committed by then, no more, no fewer.
    by_then = [n for ts, n in added if ts <= result.ts]
    assert seen == 400 + len(by_then) and total == sum(range(400)) + sum(by_then)
    assert len(added) >= 2 and engine.offloop.retries + engine.offloop.inline >= 1


async def test_a_batch_is_exact_at_one_ts(engine: Engine) -> None:
    calls = [("pairs:read_gated", {}), ("pairs:fast", {}), ("pairs:nope", {})]
    results = await straddled(engine, calls)
    assert results[0].value == [5.0, 5.0]
    assert results[1].value == 1.0 and results[0].ts == results[1].ts == engine.ts
    assert not results[2].success and "Could not find" in (results[2].error_message or "")
    assert engine.offloop.retries >= 1  # the straddling pass was repeated, not returned


async def test_the_time_limit_holds_off_the_loop(engine: Engine) -> None:
    run = asyncio.ensure_future(engine.run_queries([("pairs:forever", {})]))
    worst = await loop_gaps(run)
    (result,), _ = await run
    assert not result.success and "timed out" in (result.error_message or "")
    assert worst < 0.25, worst
    # The worker is free again.
    (result,), _ = await engine.run_queries([("pairs:read_pair", {"spin": 0.0})])
    assert result.success


def test_read_set_touches() -> None:
    rs = ReadSet()
    rs.add("t", "i", b"b", b"d")
    rs.add("t", "i", b"c", b"f")
    rs.add("t", "i", b"m", b"n")
    assert rs.touches([("t", "i", b"e")])
    assert rs.touches([("x", "y", b"a"), ("t", "i", b"m")])
    assert not rs.touches([("t", "i", b"f"), ("t", "i", b"a"), ("t", "j", b"c"), ("t", "i", b"n")])
    assert not rs.touches([])


class Recorder:
    """A subscriber: what it was told, in order, with the result and ts it could read then."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any, int]] = []
        self.updated = asyncio.Event()

    def on_query_stale(self, query: Any) -> None:
        self.events.append(("stale", None, query.result.ts))

    def on_query_updated(self, query: Any) -> None:
        self.events.append(("updated", query.result.value, query.result.ts))
        self.updated.set()


async def test_slow_subscriptions_re_run_off_the_loop_after_commits(engine: Engine) -> None:
    await engine.run_mutation("pairs:set_both", {"n": 0.0})
    # One slow run teaches the engine that read_pair is slow.
    (first,), _ = await engine.run_queries([("pairs:read_pair", {"spin": 0.02})])
    assert engine.runs_off_loop("pairs:read_pair")
    seen = Recorder()
    query, _ = await engine.subscribe_async("pairs:read_pair", {"spin": 0.3}, None, seen)
    assert query.result.value == [0.0, 0.0] and not query.stale
    runs = engine.offloop.runs
    committed = await engine.run_mutation("pairs:set_both", {"n": 1.0})
    # Stale (its listeners told) as soon as the commit is applied, re-run off the loop.
    assert query.stale and seen.events == [("stale", None, first.ts)]
    # A one-shot read of the same query does not return the stale cached result.
    assert engine.run_query("pairs:read_pair", {"spin": 0.0}).value == [1.0, 1.0]
    seen.updated.clear()
    waiting = asyncio.ensure_future(seen.updated.wait())
    worst = await loop_gaps(waiting)
    assert not query.stale and engine.offloop.runs == runs + 1
    assert seen.events[-1] == ("updated", [1.0, 1.0], engine.ts)
    assert engine.ts == committed.ts
    # Inline the loop would have stalled 0.3 s (generous bound for a loaded machine).
    assert worst < 0.2, worst


async def test_slow_subscription_re_runs_stay_exact_under_commits(engine: Engine) -> None:
    await engine.run_mutation("pairs:set_both", {"n": 0.0})
    await engine.run_queries([("pairs:read_pair", {"spin": 0.02})])
    seen = Recorder()
    query, _ = await engine.subscribe_async("pairs:read_pair", {"spin": 0.1}, None, seen)
    for n in range(1, 6):
        await engine.run_mutation("pairs:set_both", {"n": float(n)})
        await asyncio.sleep(0.03)  # commits land while a re-run is in flight
    while query.stale:
        await asyncio.sleep(0.01)
    updates = [(value, ts) for kind, value, ts in seen.events if kind == "updated"]
    assert updates and updates[-1] == ([5.0, 5.0], engine.ts)
    # Never a result that mixes two commits, and the ts never goes back.
    assert all(a == b for (a, b), _ in updates)
    assert [ts for _, ts in updates] == sorted(ts for _, ts in updates)
    # No other commit: no further runs, nothing left stale.
    runs = engine.offloop.runs
    await asyncio.sleep(0.2)
    assert engine.offloop.runs == runs and not query.stale


async def test_a_dropped_slow_subscription_stops_its_re_run(engine: Engine) -> None:
    await engine.run_mutation("pairs:set_both", {"n": 0.0})
    await engine.run_queries([("pairs:read_pair", {"spin": 0.02})])
    seen = Recorder()
    query, _ = await engine.subscribe_async("pairs:read_pair", {"spin": 0.2}, None, seen)
    await engine.run_mutation("pairs:set_both", {"n": 1.0})
    rerun = query.rerun
    assert rerun is not None
    engine.unsubscribe(query, seen)
    await asyncio.gather(rerun, return_exceptions=True)
    assert query.rerun is None and engine.subscription_count == 0
    assert [kind for kind, _, _ in seen.events] == ["stale"]
