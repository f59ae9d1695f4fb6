"""A commit that touches many subscriptions re-runs them a slice per loop turn: the first
slice in the commit's own step, the rest in later turns, stale (their listeners told) until
then, and each run once, at the state of its turn."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from marketpulse.reactive import FunctionModule, MutationCtx, QueryCtx, Schema, Table
from marketpulse.reactive.engine import Engine, SharedQuery
from marketpulse.reactive.limits import RunLimits
from marketpulse.reactive.persistence import open_persistence
from spinning import spin

from .test_offloop import Recorder

QUERIES = 40

wide = FunctionModule("wide", schema=Schema({"cells": Table(indexes={"by_k": ["k"]})}))


@wide.mutation(durability="relaxed")
def set_all(ctx: MutationCtx, v: float) -> None:
    for doc in ctx.db.query("cells").with_index("by_k").collect():
        ctx.db.patch(doc["_id"], {"v": v})


@wide.mutation
def fill(ctx: MutationCtx, n: float) -> None:
    for k in range(int(n)):
        ctx.db.insert("cells", {"k": float(k), "v": 0.0})


@wide.query
def cell(ctx: QueryCtx, k: float) -> float:
    doc = ctx.db.query("cells").with_index("by_k", lambda q: q.eq("k", k)).unique()
    # A run of half a millisecond (wall clock): forty of them are ten slices of 2 ms.
    spin(0.0005)
    return float(doc["v"]) if doc else -1.0


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Engine]:
    eng = await Engine.open(
        open_persistence(f"sqlite:{tmp_path / 's.sqlite3'}"),
        [wide],
        limits=RunLimits(inline_query_s=0.002),
    )
    await eng.run_mutation("wide:fill", {"n": float(QUERIES)})
    try:
        yield eng
    finally:
        await eng.close()


def subscribe_all(engine: Engine) -> list[tuple[SharedQuery, Recorder]]:
    subs = []
    for k in range(QUERIES):
        seen = Recorder()
        subs.append((engine.subscribe("wide:cell", {"k": float(k)}, None, seen), seen))
    return subs


async def settle(engine: Engine, subs: list[tuple[SharedQuery, Recorder]]) -> None:
    for _ in range(500):
        if not any(q.stale for q, _ in subs):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("deferred re-runs never finished")


async def test_the_rest_of_a_wide_commit_re_runs_in_later_turns(engine: Engine) -> None:
    subs = subscribe_all(engine)
    runs = engine.query_runs
    done = engine.start_mutation("wide:set_all", {"v": 1.0})
    # Relaxed and quiet: applied in this step, its first slice of re-runs with it.
    assert done.done() and done.result().success
    now = [seen.events[-1][0] if seen.events else None for _, seen in subs]
    assert "updated" in now and "stale" in now, now
    # Every query is either current or stale (its listeners hold back), never silently old.
    for (query, _seen), kind in zip(subs, now, strict=True):
        assert (kind == "stale") == query.stale
        if kind == "updated":
            assert query.result.value == 1.0
    await settle(engine, subs)
    for query, seen in subs:
        assert query.result.value == 1.0 and not query.stale
        # A stale listener hears once more when current, with the result at the engine's ts.
        assert seen.events[-1] == ("updated", 1.0, engine.ts)
    assert engine.query_runs == runs + QUERIES  # each query re-ran once


async def test_a_commit_in_a_used_up_shared_slice_leaves_every_re_run_to_a_later_turn(
    engine: Engine,
) -> None:
    subs = subscribe_all(engine)
    runs = engine.query_runs
    # The caller's slice (say, a socket's run of pipelined mutations) is already used.
    with engine.sharing_slice(time.perf_counter()):
        done = engine.start_mutation("wide:set_all", {"v": 1.0})
    assert done.done() and done.result().success
    assert engine.query_runs == runs  # nothing re-ran in the caller's turn
    assert all(q.stale for q, _ in subs)
    await settle(engine, subs)
    assert engine.query_runs == runs + QUERIES
    assert all(q.result.value == 1.0 for q, _ in subs)


async def test_a_shared_slice_ends_the_commits_re_runs_at_its_end(engine: Engine) -> None:
    subs = subscribe_all(engine)
    runs = engine.query_runs
    # 1 ms left of the caller's slice: fewer re-runs than the engine's own 2 ms slice holds.
    with engine.sharing_slice(time.perf_counter() + 0.001):
        engine.start_mutation("wide:set_all", {"v": 1.0})
    inline = engine.query_runs - runs
    # 0.5 ms each: at most two start within the slice (none if the commit itself used it).
    assert inline <= 2, inline
    await settle(engine, subs)
    assert engine.query_runs == runs + QUERIES


async def test_a_deferred_query_runs_once_at_the_newest_commit(engine: Engine) -> None:
    subs = subscribe_all(engine)
    engine.start_mutation("wide:set_all", {"v": 1.0})
    deferred = {id(q) for q, _ in subs if q.stale}
    assert deferred
    runs = engine.query_runs
    # A second commit before the deferred turn: the stale ones wait for it, not run twice.
    engine.start_mutation("wide:set_all", {"v": 2.0})
    await settle(engine, subs)
    assert engine.query_runs - runs == QUERIES  # the commit's once each, deferred included
    for query, seen in subs:
        assert query.result.value == 2.0
        values = [value for kind, value, _ in seen.events if kind == "updated"]
        if id(query) in deferred:
            # Never the first commit's value: the run came after both.
            assert values == [2.0], values
        assert values[-1] == 2.0


async def test_a_deferred_query_dropped_before_its_turn_is_not_run(engine: Engine) -> None:
    subs = subscribe_all(engine)
    engine.start_mutation("wide:set_all", {"v": 1.0})
    dropped = [(q, seen) for q, seen in subs if q.stale]
    assert dropped
    for query, seen in dropped:
        engine.unsubscribe(query, seen)
    kept = [(q, s) for q, s in subs if (q, s) not in dropped]
    runs = engine.query_runs
    await settle(engine, kept)
    await asyncio.sleep(0.05)
    assert engine.query_runs == runs
    assert engine.subscription_count == len(kept)
    for query, seen in dropped:
        assert [kind for kind, _, _ in seen.events][-1] == "stale"
        assert query.rerun is None


async def test_closing_with_deferred_re_runs_pending(engine: Engine) -> None:
    subs = subscribe_all(engine)
    engine.start_mutation("wide:set_all", {"v": 1.0})
    assert any(q.stale for q, _ in subs)
    await engine.close()  # the fixture's close is then a no-op
    await asyncio.sleep(0.05)  # the cancelled turn never runs against a closed engine
    assert engine.subscription_count == 0
