"""Crons: declarations, the runner against a real engine, and ``marketpulse serve`` running them."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from marketpulse.reactive import Crons
from marketpulse.reactive._cron_runner import CronRunner
from marketpulse.reactive.engine import Engine, SchedulerRunner
from marketpulse.reactive.persistence import open_persistence
from marketpulse.reactive.persistence._slow_disk import inject_slow_disk
from marketpulse.testing import AdminClient, StoreProcess
from polling import until

from . import crons_app

# -- declarations -------------------------------------------------------------------------------


def test_intervals_and_cron_expressions_are_checked() -> None:
    crons = Crons()
    assert crons.interval("a", {"minutes": 2}, "m:f").every_s == 120.0
    assert crons.cron("b", "*/5 * * * *", "m:f").expression == "*/5 * * * *"
    assert [j.name for j in crons] == ["a", "b"]
    with pytest.raises(ValueError, match="declared twice"):
        crons.interval("a", {"seconds": 1}, "m:f")
    with pytest.raises(ValueError, match="give one of"):
        crons.interval("c", {"days": 1}, "m:f")
    with pytest.raises(ValueError, match="give one of"):
        crons.interval("c", {"seconds": 1, "minutes": 1}, "m:f")
    with pytest.raises(ValueError, match="above zero"):
        crons.interval("c", {"seconds": 0}, "m:f")
    for bad in ("* * * *", "61 * * * *", "* * * * * *", "every minute"):
        with pytest.raises(ValueError, match="invalid cron expression"):
            crons.cron("c", bad, "m:f")
    for never in ("0 0 30 2 *", "0 0 31 4 *", "0 0 31 2,4 *"):
        with pytest.raises(ValueError, match="matches no date"):
            crons.cron("c", never, "m:f")
    crons.cron("leap", "0 0 29 2 *", "m:f")  # rare, not never
    with pytest.raises(ValueError, match="invalid cron job name"):
        crons.interval("", {"seconds": 1}, "m:f")


def test_a_cron_expression_s_next_run_is_in_utc() -> None:
    job = Crons().cron("five", "*/5 * * * *", "m:f")
    at = dt.datetime(2024, 1, 1, 10, 3, 20, tzinfo=dt.UTC).timestamp()
    assert job.next_after(at) == dt.datetime(2024, 1, 1, 10, 5, tzinfo=dt.UTC).timestamp()
    job = Crons().cron("daily", "30 2 * * *", "m:f")
    assert job.next_after(at) == dt.datetime(2024, 1, 2, 2, 30, tzinfo=dt.UTC).timestamp()


# -- the runner -----------------------------------------------------------------------------------


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Engine]:
    """An engine with its scheduler runner, which runs the occurrences the crons schedule."""
    engine = await Engine.open(
        open_persistence(f"sqlite:{tmp_path / 'db.sqlite'}"), [crons_app.ticks]
    )
    scheduler = SchedulerRunner(engine)
    await scheduler.start()
    engine_scheduler[engine] = scheduler
    try:
        yield engine
    finally:
        await scheduler.stop()
        await engine.close()


engine_scheduler: dict[Engine, SchedulerRunner] = {}


def _runs(engine: Engine) -> dict[str, int]:
    result = engine.run_query("ticks:counts", {})
    assert result.success
    return dict(result.value)


async def test_an_at_start_job_runs_again_while_it_answers_more(engine: Engine) -> None:
    crons = Crons()
    crons.at_start("chunked", crons_app.tick_until, {"name": "chunked", "runs": 4})
    crons.at_start("after", crons_app.tick, {"name": "after"})
    runner = CronRunner(engine, [crons])
    await runner.run_startup()
    assert _runs(engine) == {"chunked": 4, "after": 1}, "each in its own mutation, in order"


async def test_interval_and_at_start_jobs_run_as_scheduled(engine: Engine) -> None:
    crons = Crons()
    crons.at_start("boot", crons_app.tick, {"name": "boot"})
    crons.interval("tick", {"seconds": 0.05}, "ticks:tick", {"name": "tick"})
    runner = CronRunner(engine, [crons])
    await runner.run_startup()
    assert _runs(engine) == {"boot": 1}
    runner.start()
    started = time.monotonic()
    await asyncio.sleep(0.6)
    # A loaded host (a stolen CPU, a stalling disk) runs fewer in that time: on until 5 ran.
    await until(lambda: _runs(engine).get("tick", 0) >= 5, 30, "five occurrences")
    await runner.stop()
    await engine_scheduler[engine].stop()  # an occurrence already scheduled would still run
    elapsed = time.monotonic() - started
    ticks = _runs(engine)["tick"]
    # At most one per 0.05 s since the start (the first at once): never caught up in a burst.
    assert 5 <= ticks <= elapsed / 0.05 + 1, (ticks, elapsed)
    assert ticks in (runner.runs["tick"], runner.runs["tick"] - 1)
    assert _runs(engine)["boot"] == 1  # at-start jobs never repeat
    await asyncio.sleep(0.15)
    assert _runs(engine)["tick"] == ticks  # stopped means stopped
    # Only the last occurrence's job is kept, and the schedule is stored.
    jobs = engine.run_query("ticks:system", {"table": "_scheduled_functions"}).value
    assert len(jobs) == 1 and jobs[0]["name"] == "ticks:tick", jobs
    crons_table = engine.run_query("ticks:system", {"table": "_cron_jobs"}).value
    assert [c["name"] for c in crons_table] == ["tick"]
    assert crons_table[0]["jobId"] == jobs[0]["_id"]


async def test_two_runners_schedule_each_occurrence_once(engine: Engine) -> None:
    """Two runners (as on two nodes sharing the store) share one stored schedule."""
    crons = Crons()
    crons.interval("tick", {"seconds": 0.1}, "ticks:tick", {"name": "shared"})
    runners = [CronRunner(engine, [crons]), CronRunner(engine, [crons])]
    for runner in runners:
        runner.start()
    started = time.monotonic()
    await asyncio.sleep(1.2)
    await until(lambda: _runs(engine).get("shared", 0) >= 4, 30, "four occurrences")
    for runner in runners:
        await runner.stop()
    await engine_scheduler[engine].stop()
    elapsed = time.monotonic() - started
    scheduled = sum(runner.runs["tick"] for runner in runners)
    ran = _runs(engine)["shared"]
    assert ran in (scheduled, scheduled - 1), (ran, scheduled)
    assert 4 <= ran <= elapsed / 0.1 + 1, (ran, elapsed)  # about one per 0.1 s, not two


async def test_a_relaxed_job_s_occurrences_do_not_wait_for_a_stalled_disk(tmp_path: Path) -> None:
    """The tick that schedules an occurrence is relaxed: with every write taking 0.4 s, a
    relaxed job still runs on time (a durable tick would wait for each write)."""
    persistence = open_persistence(f"sqlite:{tmp_path / 'db.sqlite'}")
    inject_slow_disk(persistence, sleep_s=0.4, every_s=1e-6)
    engine = await Engine.open(persistence, [crons_app.ticks])
    scheduler = SchedulerRunner(engine)
    await scheduler.start()
    crons = Crons()
    crons.interval("fast", {"seconds": 0.05}, crons_app.relaxed_tick, {"name": "fast"})
    runner = CronRunner(engine, [crons])
    try:
        runner.start()
        await asyncio.sleep(0.8)
        await runner.stop()
        # About 16 occurrences; waiting 0.4 s for each tick's write, 2 at most.
        assert _runs(engine)["fast"] >= 6, _runs(engine)
    finally:
        await scheduler.stop()
        await engine.close()


async def test_a_changed_declaration_restarts_the_schedule(engine: Engine) -> None:
    slow, fast = Crons(), Crons()
    slow.interval("tick", {"hours": 1}, "ticks:tick", {"name": "changed"})
    fast.interval("tick", {"seconds": 0.05}, "ticks:tick", {"name": "changed"})
    first = CronRunner(engine, [slow])
    first.start()
    await asyncio.sleep(0.3)
    await first.stop()
    assert first.runs["tick"] == 0  # an hour away
    second = CronRunner(engine, [fast])
    second.start()
    # Every 0.05 s now, not an hour away (a loaded host may take longer than 0.15 s for 3).
    await until(lambda: second.runs["tick"] >= 3, 30, "three occurrences of the new schedule")
    await second.stop()
    assert second.runs["tick"] >= 3


async def test_a_job_never_overlaps_itself(engine: Engine) -> None:
    state = crons_app.slow_runs
    state.update(running=0, overlaps=0, runs=0)
    crons = Crons()
    crons.interval("slow", {"seconds": 0.05}, crons_app.slow)
    runner = CronRunner(engine, [crons])
    runner.start()
    started = time.monotonic()
    await asyncio.sleep(1.0)
    await until(lambda: state["runs"] >= 2, 30, "two runs")
    await runner.stop()
    elapsed = time.monotonic() - started
    assert state["overlaps"] == 0
    # Runs its 0.25 s body back to back, skipping the rest.
    assert 2 <= state["runs"] <= elapsed / 0.25 + 1, (state["runs"], elapsed)


async def test_failures_are_logged_rate_limited_and_the_job_goes_on(
    engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    crons = Crons()
    crons.interval("failing", {"seconds": 0.02}, crons_app.fail)
    runner = CronRunner(engine, [crons], log_every=60.0)
    runner.start()
    await until(lambda: runner.runs["failing"] >= 5, 30, "five failed occurrences")
    await runner.stop()
    assert runner.runs["failing"] >= 5
    captured = capsys.readouterr()
    failed = [
        line for line in (captured.out + captured.err).splitlines() if "cron job failed" in line
    ]
    assert len(failed) == 1, failed
    assert "this job always fails" in failed[0]


async def test_jobs_must_name_served_mutations_or_actions(engine: Engine) -> None:
    for target in ("ticks:nope", "other:tick", "ticks:counts"):
        crons = Crons()
        crons.interval("x", {"seconds": 1}, target)
        with pytest.raises(ValueError, match=r"not a served function|is a query"):
            CronRunner(engine, [crons])
    a, b = Crons(), Crons()
    a.interval("same", {"seconds": 1}, crons_app.tick, {"name": "a"})
    b.interval("same", {"seconds": 1}, crons_app.tick, {"name": "b"})
    with pytest.raises(ValueError, match="declared twice"):
        CronRunner(engine, [a, b])


# -- served -------------------------------------------------------------------------------------


def test_serve_finds_and_runs_a_module_s_crons(tmp_path: Path) -> None:
    with StoreProcess(tmp_path / "store.sqlite", functions="tests.reactive.crons_app") as store:
        client = AdminClient(store.url, store.admin_key)
        first = client.query("ticks:counts", {})
        assert first.get("start") == 1  # ran before the port opened
        deadline = time.monotonic() + 10
        while client.query("ticks:counts", {}).get("fast", 0) < 5:
            assert time.monotonic() < deadline, "the interval job did not run"
            time.sleep(0.1)
        client.close()
    with StoreProcess(tmp_path / "store.sqlite", functions="tests.reactive.crons_app") as store:
        client = AdminClient(store.url, store.admin_key)
        assert client.query("ticks:counts", {})["start"] == 2  # once per start
        client.close()
