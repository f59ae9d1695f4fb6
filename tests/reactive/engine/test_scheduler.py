"""Scheduled functions: ``ctx.scheduler``, the ``_scheduled_functions`` table and the runner,
over a real SQLite file."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from marketpulse.reactive import ActionCtx, FunctionModule, MutationCtx, QueryCtx, Schema, Table
from marketpulse.reactive.engine import Engine, SchedulerRunner
from marketpulse.reactive.persistence import open_persistence
from polling import until

schema = Schema({"hits": Table(indexes={"by_name": ["name"]})})
jobs = FunctionModule("jobs", schema=schema)


def _hit(ctx: MutationCtx, name: str) -> None:
    ctx.db.insert("hits", {"name": name})


@jobs.internal_mutation
def hit(ctx: MutationCtx, name: str) -> None:
    _hit(ctx, name)


@jobs.internal_mutation
def hit_then_fail(ctx: MutationCtx, name: str) -> None:
    _hit(ctx, name)
    raise RuntimeError("job failed on purpose")


@jobs.mutation
def later(ctx: MutationCtx, name: str, seconds: float) -> str:
    job_id: str = ctx.scheduler.run_after(seconds, "jobs:hit", {"name": name})
    return job_id


@jobs.mutation
def at(ctx: MutationCtx, name: str, ms: float) -> str:
    job_id: str = ctx.scheduler.run_at(ms, hit, {"name": name})
    return job_id


@jobs.mutation
def later_then_fail(ctx: MutationCtx, name: str) -> None:
    ctx.scheduler.run_after(0, "jobs:hit", {"name": name})
    raise RuntimeError("the scheduling mutation failed")


@jobs.mutation
def cancel(ctx: MutationCtx, id: str) -> None:
    ctx.scheduler.cancel(id)


@jobs.mutation
def schedule_query(ctx: MutationCtx) -> None:
    ctx.scheduler.run_after(0, "jobs:count", {"name": "x"})


@jobs.mutation
def schedule_failing(ctx: MutationCtx, name: str) -> str:
    job_id: str = ctx.scheduler.run_after(0, "jobs:hit_then_fail", {"name": name})
    return job_id


@jobs.mutation
def tamper(ctx: MutationCtx, id: str) -> None:
    ctx.db.patch(id, {"state": {"kind": "success"}})


@jobs.query
def count(ctx: QueryCtx, name: str) -> int:
    return len(ctx.db.query("hits").with_index("by_name", lambda q: q.eq("name", name)).collect())


@jobs.query
def listed(ctx: QueryCtx) -> list[dict[str, Any]]:
    return ctx.db.system.query("_scheduled_functions").collect()


@jobs.query
def job(ctx: QueryCtx, id: str) -> dict[str, Any] | None:
    return ctx.db.system.get(id)


@jobs.query
def peek_system_directly(ctx: QueryCtx) -> Any:
    return ctx.db.query("_scheduled_functions").collect()


@jobs.action
async def act(ctx: ActionCtx, name: str, seconds: float) -> str:
    job_id: str = await ctx.scheduler.run_after(seconds, "jobs:hit", {"name": name})
    return job_id


@jobs.internal_action
async def slow(ctx: ActionCtx, name: str, seconds: float) -> None:
    await ctx.run_mutation("jobs:hit", {"name": name + ":start"})
    await asyncio.sleep(seconds)
    await ctx.run_mutation("jobs:hit", {"name": name})


@jobs.mutation
def schedule_slow(ctx: MutationCtx, name: str, seconds: float) -> str:
    job_id: str = ctx.scheduler.run_after(0, "jobs:slow", {"name": name, "seconds": seconds})
    return job_id


@jobs.internal_action
async def broken(ctx: ActionCtx) -> None:
    raise ValueError("action failed on purpose")


@jobs.mutation
def schedule_broken(ctx: MutationCtx) -> str:
    job_id: str = ctx.scheduler.run_after(0, broken)
    return job_id


async def open_engine(path: Path) -> Engine:
    return await Engine.open(open_persistence(f"sqlite:{path}"), [jobs])


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "jobs.sqlite3"


@pytest.fixture
async def engine(db: Path) -> AsyncIterator[Engine]:
    eng = await open_engine(db)
    try:
        yield eng
    finally:
        await eng.close()


@pytest.fixture
async def runner(engine: Engine) -> AsyncIterator[SchedulerRunner]:
    r = SchedulerRunner(engine)
    await r.start()
    try:
        yield r
    finally:
        await r.stop()


async def call(engine: Engine, path: str, **args: Any) -> Any:
    r = await engine.run_mutation(path, args)
    assert r.success, r.error_message
    return r.value


def query(engine: Engine, path: str, **args: Any) -> Any:
    r = engine.run_query(path, args)
    assert r.success, r.error_message
    return r.value


def state(engine: Engine, job_id: str) -> str:
    doc = query(engine, "jobs:job", id=job_id)
    assert doc is not None
    kind: str = doc["state"]["kind"]
    return kind


async def test_mutation_schedules_a_job_that_runs_once(
    engine: Engine, runner: SchedulerRunner
) -> None:
    started = time.time() * 1000
    # Due 2 s after the mutation ran: its durable write alone may take 0.4 s on a stalling disk,
    # and the job must still be pending 0.1 s after that.
    job_id = await call(engine, "jobs:later", name="a", seconds=2.0)
    doc = query(engine, "jobs:job", id=job_id)
    assert doc["name"] == "jobs:hit" and doc["args"] == [{"name": "a"}]
    assert doc["state"] == {"kind": "pending"}
    assert started + 2000 <= doc["scheduledTime"] <= time.time() * 1000 + 2000
    await asyncio.sleep(0.1)
    assert query(engine, "jobs:count", name="a") == 0
    await until(lambda: state(engine, job_id) == "success", timeout=10.0)
    assert query(engine, "jobs:count", name="a") == 1
    done = query(engine, "jobs:job", id=job_id)
    assert done["completedTime"] >= done["scheduledTime"]
    # The system table lists it, reactively, to any query.
    assert [j["_id"] for j in query(engine, "jobs:listed")] == [job_id]
    await asyncio.sleep(0.2)
    assert query(engine, "jobs:count", name="a") == 1 and runner.jobs_run == 1


async def test_run_at_with_a_handler_and_a_wakeup_for_a_sooner_job(
    engine: Engine, runner: SchedulerRunner
) -> None:
    far = await call(engine, "jobs:later", name="far", seconds=3600)
    # The runner is asleep until the far job; a sooner one must wake it, not a poll.
    await asyncio.sleep(0.05)
    soon = await call(engine, "jobs:at", name="soon", ms=time.time() * 1000 + 100)
    # Without the wake-up it would sleep until the far job, an hour away (there is no poll):
    # a generous bound still tells the two apart on a loaded host.
    await until(lambda: state(engine, soon) == "success", timeout=20.0)
    assert state(engine, far) == "pending"


async def test_a_failed_mutation_schedules_nothing(engine: Engine, runner: SchedulerRunner) -> None:
    r = await engine.run_mutation("jobs:later_then_fail", {"name": "f"})
    assert not r.success and "the scheduling mutation failed" in (r.error_message or "")
    assert query(engine, "jobs:listed") == []
    await asyncio.sleep(0.2)
    assert query(engine, "jobs:count", name="f") == 0


async def test_cancel_before_it_runs(engine: Engine, runner: SchedulerRunner) -> None:
    # Due well after the cancel lands, however long the first write stalls.
    job_id = await call(engine, "jobs:later", name="c", seconds=2.0)
    due_s = query(engine, "jobs:job", id=job_id)["scheduledTime"] / 1000
    await call(engine, "jobs:cancel", id=job_id)
    assert state(engine, job_id) == "canceled"
    await asyncio.sleep(max(0.0, due_s - time.time()) + 0.3)  # past the time it was due
    assert query(engine, "jobs:count", name="c") == 0
    # Cancelling a finished job is a no-op; cancelling something else is an error.
    await call(engine, "jobs:cancel", id=job_id)
    assert state(engine, job_id) == "canceled"
    r = await engine.run_mutation("jobs:cancel", {"id": "nope"})
    assert not r.success and "not a scheduled function" in (r.error_message or "")


async def test_failures_are_recorded_and_their_writes_dropped(
    engine: Engine, runner: SchedulerRunner
) -> None:
    job_id = await call(engine, "jobs:schedule_failing", name="x")
    await until(lambda: state(engine, job_id) == "failed")
    doc = query(engine, "jobs:job", id=job_id)
    assert "job failed on purpose" in doc["state"]["error"]
    assert query(engine, "jobs:count", name="x") == 0
    action_job = await call(engine, "jobs:schedule_broken")
    await until(lambda: state(engine, action_job) == "failed")
    assert "action failed on purpose" in query(engine, "jobs:job", id=action_job)["state"]["error"]


async def test_bad_schedules_are_clear_errors(engine: Engine) -> None:
    r = await engine.run_mutation("jobs:schedule_query", {})
    assert not r.success and "only mutations and actions" in (r.error_message or "")
    r = await engine.run_mutation("jobs:later", {"name": "n", "seconds": float("inf")})
    assert not r.success and "finite" in (r.error_message or "")


async def test_user_code_cannot_write_or_scan_system_tables_as_user_tables(
    engine: Engine,
) -> None:
    job_id = await call(engine, "jobs:later", name="t", seconds=3600)
    r = await engine.run_mutation("jobs:tamper", {"id": job_id})
    assert not r.success and "system table" in (r.error_message or "")
    r = engine.run_query("jobs:peek_system_directly", {})
    assert not r.success and "ctx.db.system.query" in (r.error_message or "")


async def test_actions_schedule_and_run_action_jobs(
    engine: Engine, runner: SchedulerRunner
) -> None:
    r = await engine.run_action("jobs:act", {"name": "from-action", "seconds": 0.05})
    assert r.success, r.error_message
    await until(lambda: state(engine, r.value) == "success")
    assert query(engine, "jobs:count", name="from-action") == 1
    slow = await call(engine, "jobs:schedule_slow", name="s", seconds=0.2)
    await until(lambda: state(engine, slow) == "inProgress")
    await until(lambda: state(engine, slow) == "success")
    assert query(engine, "jobs:count", name="s") == 1


async def test_mutation_jobs_do_not_wait_for_a_free_action_slot(engine: Engine) -> None:
    runner = SchedulerRunner(engine, max_running_actions=2)
    await runner.start()
    try:
        # Three long actions: two run, the third waits for a slot...
        for i in range(3):
            await call(engine, "jobs:schedule_slow", name=f"a{i}", seconds=2.0)
        await until(lambda: query(engine, "jobs:count", name="a1:start") == 1, 10, "two run")
        # ...and a mutation job due now runs at once, not behind it.
        started = time.monotonic()
        await call(engine, "jobs:later", name="quick", seconds=0.0)
        await until(lambda: query(engine, "jobs:count", name="quick") == 1, 10, "the mutation")
        assert time.monotonic() - started < 1.0, "it waited for an action to end"
        # The third action runs once a slot is free.
        await until(lambda: query(engine, "jobs:count", name="a2") == 1, 10, "the third action")
    finally:
        await runner.stop()


async def test_two_runners_run_a_job_once(engine: Engine, runner: SchedulerRunner) -> None:
    other = SchedulerRunner(engine)
    await other.start()
    try:
        ids = [await call(engine, "jobs:later", name=f"d{i}", seconds=0.1) for i in range(20)]
        await until(lambda: all(state(engine, i) == "success" for i in ids))
        await asyncio.sleep(0.1)
        assert all(query(engine, "jobs:count", name=f"d{i}") == 1 for i in range(20))
        assert runner.jobs_run + other.jobs_run == 20
    finally:
        await other.stop()


async def test_jobs_survive_a_restart_and_interrupted_actions_fail(db: Path) -> None:
    engine = await open_engine(db)
    runner = SchedulerRunner(engine)
    await runner.start()
    # Due after the stop below even if each write before it stalls (a slow disk).
    job_id = await call(engine, "jobs:later", name="r", seconds=3.0)
    due_s = query(engine, "jobs:job", id=job_id)["scheduledTime"] / 1000
    slow = await call(engine, "jobs:schedule_slow", name="cut", seconds=30)
    await until(lambda: state(engine, slow) == "inProgress")
    await runner.stop()
    await engine.close()
    await asyncio.sleep(max(0.0, due_s - time.time()) + 0.1)  # due while the store is down

    engine = await open_engine(db)
    try:
        assert state(engine, job_id) == "pending"
        runner = SchedulerRunner(engine)
        await runner.start()
        try:
            # The action that was running is not run again: it failed with the stop.
            assert state(engine, slow) == "failed"
            assert "Transient error" in query(engine, "jobs:job", id=slow)["state"]["error"]
            await until(lambda: state(engine, job_id) == "success")
            assert query(engine, "jobs:count", name="r") == 1
            assert query(engine, "jobs:count", name="cut") == 0
        finally:
            await runner.stop()
    finally:
        await engine.close()


async def test_run_function_runs_as_the_system(engine: Engine) -> None:
    runner = SchedulerRunner(engine)
    r = await runner.run_function("jobs:hit", {"name": "sys"})
    assert r.success, r.error_message
    r = await runner.run_function("jobs:slow", {"name": "sys2", "seconds": 0})
    assert r.success, r.error_message
    assert query(engine, "jobs:count", name="sys") == 1
    assert query(engine, "jobs:count", name="sys2") == 1
