"""KalshiStreamWorkflow on the time-skipping test server.

The activities here are stand-ins registered under the real activity names: these tests are
about the supervisor (signals, updates, queries, timers, restarts, continue-as-new), not the
feed, which tests/e2e runs for real. The stand-in stream activity does what the real one does
towards the workflow: it heartbeats, follows ``desiredMarkets`` by query, and stops when
cancelled.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from temporalio import activity
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from marketpulse.pipeline._binaries import temporal_test_server
from marketpulse.pipeline.config import (
    CLEANUP_ACTIVITY,
    HEALTH_ACTIVITY,
    STREAM_ACTIVITY,
    TASK_QUEUE,
    CleanupInput,
    HealthInput,
    HealthReport,
    MarketsChange,
    MarketSet,
    StreamConfig,
    StreamInput,
    WorkflowStatus,
)
from marketpulse.pipeline.worker import workflow_runner
from marketpulse.pipeline.workflow import KalshiStreamWorkflow
from polling import eventually, until


@dataclass
class Recorder:
    """What the stand-in activities saw."""

    stream_starts: list[StreamInput] = field(default_factory=list)
    stream_cancels: int = 0
    followed: list[MarketSet] = field(default_factory=list)
    cleanups: list[CleanupInput] = field(default_factory=list)
    health_checks: list[HealthInput] = field(default_factory=list)
    stale_next: bool = False
    cancel_takes_s: float = 0.0
    """How long the stand-in stream takes to end once cancelled (the real one flushes)."""


def make_activities(rec: Recorder, client: Client) -> list[Any]:
    @activity.defn(name=STREAM_ACTIVITY)
    async def stream(inp: StreamInput) -> dict[str, Any]:
        rec.stream_starts.append(inp)
        info = activity.info()
        handle = client.get_workflow_handle(info.workflow_id or "", run_id=info.workflow_run_id)
        version = inp.marketsVersion
        try:
            while True:
                activity.heartbeat({"state": "connected"})
                desired = await handle.query("desiredMarkets", result_type=MarketSet)
                if desired.version != version:
                    version = desired.version
                    rec.followed.append(desired)
                await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            rec.stream_cancels += 1
            await asyncio.sleep(rec.cancel_takes_s)
            raise

    @activity.defn(name=HEALTH_ACTIVITY)
    async def health(inp: HealthInput) -> HealthReport:
        rec.health_checks.append(inp)
        stale, rec.stale_next = rec.stale_next, False
        return HealthReport(running=True, stale=stale, reason="test" if stale else "connected")

    @activity.defn(name=CLEANUP_ACTIVITY)
    async def cleanup(inp: CleanupInput) -> dict[str, Any]:
        rec.cleanups.append(inp)
        return {"deleted": 3, "more": False}

    return [stream, health, cleanup]


@pytest.fixture
async def env() -> AsyncIterator[WorkflowEnvironment]:
    async with await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=temporal_test_server()
    ) as e:
        yield e


WAIT_S = 20.0
"""How long a test waits for the stand-in activities, which run in real time."""


def config(**kw: Any) -> StreamConfig:
    base: dict[str, Any] = {
        "markets": ["KX-A", "KX-B"],
        "healthCheckInterval": 3600.0,
        "cleanupInterval": 86_400.0,
        "heartbeatTimeout": 864_000.0,  # time skips far ahead; real heartbeats are real-time
        "reconnectDelay": 1.0,
    }
    base.update(kw)
    return StreamConfig(**base)


def worker(env: WorkflowEnvironment, rec: Recorder) -> Worker:
    return Worker(
        env.client,
        task_queue=TASK_QUEUE,
        workflows=[KalshiStreamWorkflow],
        activities=make_activities(rec, env.client),
        workflow_runner=workflow_runner(),
        max_heartbeat_throttle_interval=timedelta(seconds=1),
        default_heartbeat_throttle_interval=timedelta(seconds=1),
    )


async def test_signals_update_and_query(env: WorkflowEnvironment) -> None:
    rec = Recorder()
    async with worker(env, rec):
        handle = await env.client.start_workflow(
            KalshiStreamWorkflow.run,
            config(),
            id=f"wf-{uuid.uuid4()}",
            task_queue=TASK_QUEUE,
        )
        await until(lambda: len(rec.stream_starts) == 1, timeout=WAIT_S)
        assert rec.stream_starts[0].config.markets == ["KX-A", "KX-B"]

        await handle.signal(KalshiStreamWorkflow.add_markets, ["kx-c", "KX-A"])
        await handle.signal(KalshiStreamWorkflow.remove_markets, ["KX-B"])
        status: WorkflowStatus = await handle.query(KalshiStreamWorkflow.status)
        assert status.markets == ["KX-A", "KX-C"]
        assert status.state == "streaming"
        assert status.channels == ["orderbook_delta", "ticker", "trade", "market_lifecycle_v2"]

        result = await handle.execute_update(
            KalshiStreamWorkflow.update_markets, MarketsChange(add=["KX-D"], remove=["KX-A"])
        )
        assert result.markets == ["KX-C", "KX-D"]
        with pytest.raises(WorkflowUpdateFailedError):
            await handle.execute_update(
                KalshiStreamWorkflow.update_markets, MarketsChange(add=["bad ticker!"])
            )

        # The running activity learns the new set by query, without being restarted.
        await until(
            lambda: bool(rec.followed) and rec.followed[-1].markets == ["KX-C", "KX-D"],
            timeout=WAIT_S,
        )
        assert len(rec.stream_starts) == 1
        assert rec.stream_cancels == 0

        await handle.signal(KalshiStreamWorkflow.stop)
        final = await handle.result()
        assert final.state == "stopped"
        assert final.markets == ["KX-C", "KX-D"]
        assert rec.stream_cancels == 1


async def test_cleanup_timer(env: WorkflowEnvironment) -> None:
    # No markets, so no long-running activity holds the test server's clock: time skips.
    rec = Recorder()
    async with worker(env, rec):
        handle = await env.client.start_workflow(
            KalshiStreamWorkflow.run,
            config(markets=[], cleanupInterval=600.0, retention=7200.0),
            id=f"wf-{uuid.uuid4()}",
            task_queue=TASK_QUEUE,
        )
        for _ in range(5):
            await env.sleep(timedelta(seconds=250))
        await until(lambda: len(rec.cleanups) >= 2, timeout=WAIT_S)
        assert rec.cleanups[0].olderThanMs == 7_200_000.0
        status: WorkflowStatus = await handle.query(KalshiStreamWorkflow.status)
        assert status.lastCleanup is not None and status.lastCleanup["deleted"] == 3
        await handle.signal(KalshiStreamWorkflow.stop)
        await handle.result()


async def test_cleanup_comes_when_each_run_is_shorter_than_its_interval(
    env: WorkflowEnvironment,
) -> None:
    # Health checks every 0.5 s fill each run's history in ~1-2 s, well within the 4 s cleanup
    # interval: the cleanup used to be put off again by each run (none at all), as a day's
    # interval is by the runs of a few hours that the server's history limit makes. A
    # running stream activity holds the test server's clock: this runs on real seconds.
    rec = Recorder()
    async with worker(env, rec):
        wf_id = f"wf-{uuid.uuid4()}"
        await env.client.start_workflow(
            KalshiStreamWorkflow.run,
            config(healthCheckInterval=0.5, cleanupInterval=4.0, continueAsNewAfterEvents=30),
            id=wf_id,
            task_queue=TASK_QUEUE,
        )
        await until(lambda: len(rec.cleanups) >= 2, timeout=WAIT_S)
        latest = env.client.get_workflow_handle_for(KalshiStreamWorkflow.run, wf_id)
        status: WorkflowStatus = await latest.query(KalshiStreamWorkflow.status)
        assert status.continuedAsNew >= 4
        await latest.signal(KalshiStreamWorkflow.stop)
        await latest.result()


async def test_health_check_restarts_a_stale_feed(env: WorkflowEnvironment) -> None:
    # A running activity holds the test server's clock, so this one runs on real seconds.
    rec = Recorder()
    async with worker(env, rec):
        handle = await env.client.start_workflow(
            KalshiStreamWorkflow.run,
            config(healthCheckInterval=1.0),
            id=f"wf-{uuid.uuid4()}",
            task_queue=TASK_QUEUE,
        )
        await until(lambda: len(rec.health_checks) >= 1, timeout=WAIT_S)
        assert rec.health_checks[0].workflowId == handle.id
        # The activity having run is not the workflow having seen its report: that takes a
        # workflow task of its own, which a query may overtake.
        status = await eventually(
            lambda: handle.query(KalshiStreamWorkflow.status),
            lambda s: s.lastHealth is not None,
            timeout=WAIT_S,
            what="the health report in the status",
        )
        assert status.lastHealth is not None and status.lastHealth.reason == "connected"
        assert len(rec.stream_starts) == 1

        rec.stale_next = True
        await until(lambda: len(rec.stream_starts) == 2, timeout=WAIT_S)
        assert rec.stream_cancels == 1
        status = await handle.query(KalshiStreamWorkflow.status)
        assert status.healthRestarts == 1
        await handle.signal(KalshiStreamWorkflow.stop)
        await handle.result()


async def test_continue_as_new_carries_markets(env: WorkflowEnvironment) -> None:
    rec = Recorder()
    async with worker(env, rec):
        wf_id = f"wf-{uuid.uuid4()}"
        handle = await env.client.start_workflow(
            KalshiStreamWorkflow.run,
            config(continueAsNewAfterEvents=40),
            id=wf_id,
            task_queue=TASK_QUEUE,
        )
        first_run = (await handle.describe()).run_id
        await until(lambda: len(rec.stream_starts) == 1, timeout=WAIT_S)
        for i in range(30):
            await handle.signal(KalshiStreamWorkflow.add_markets, [f"KX-N{i}"])
        # The new run starts its own stream activity with the carried market set.
        await until(lambda: len(rec.stream_starts) >= 2, timeout=WAIT_S)
        latest = env.client.get_workflow_handle_for(KalshiStreamWorkflow.run, wf_id)
        status: WorkflowStatus = await latest.query(KalshiStreamWorkflow.status)
        assert status.runId != first_run
        assert status.continuedAsNew >= 1
        expected = ["KX-A", "KX-B", *[f"KX-N{i}" for i in range(30)]]
        assert status.markets == expected
        assert rec.stream_starts[-1].config.markets == expected
        assert rec.stream_cancels >= 1  # the old run's feed was stopped before continuing
        await latest.signal(KalshiStreamWorkflow.stop)
        assert (await latest.result()).markets == expected


async def test_markets_updated_while_continuing_as_new_are_carried(
    env: WorkflowEnvironment,
) -> None:
    # Between the decision to continue and the new run, the old run's feed is being stopped
    # (the real one flushes and withdraws its books): updateMarkets there used to be refused
    # with "the stream is stopping", though nothing was stopping.
    rec = Recorder(cancel_takes_s=3.0)
    async with worker(env, rec):
        wf_id = f"wf-{uuid.uuid4()}"
        handle = await env.client.start_workflow(
            KalshiStreamWorkflow.run,
            config(continueAsNewAfterEvents=40),
            id=wf_id,
            task_queue=TASK_QUEUE,
        )
        await until(lambda: len(rec.stream_starts) == 1, timeout=WAIT_S)
        for i in range(20):
            await handle.signal(KalshiStreamWorkflow.add_markets, [f"KX-N{i}"])
        await until(lambda: rec.stream_cancels == 1, timeout=WAIT_S)
        assert len(rec.stream_starts) == 1  # the old run is still stopping its feed
        status: WorkflowStatus = await handle.query(KalshiStreamWorkflow.status)
        assert status.state == "continuing"
        result = await handle.execute_update(
            KalshiStreamWorkflow.update_markets, MarketsChange(add=["KX-LATE"], remove=["KX-A"])
        )
        assert "KX-LATE" in result.markets and "KX-A" not in result.markets
        await until(lambda: len(rec.stream_starts) >= 2, timeout=WAIT_S)
        assert rec.stream_starts[-1].config.markets == result.markets
        latest = env.client.get_workflow_handle_for(KalshiStreamWorkflow.run, wf_id)
        rec.cancel_takes_s = 0.0
        await latest.signal(KalshiStreamWorkflow.stop)
        assert (await latest.result()).markets == result.markets


async def test_invalid_config_fails_the_workflow(env: WorkflowEnvironment) -> None:
    rec = Recorder()
    async with worker(env, rec):
        handle = await env.client.start_workflow(
            KalshiStreamWorkflow.run,
            config(healthCheckInterval=0.0),
            id=f"wf-{uuid.uuid4()}",
            task_queue=TASK_QUEUE,
        )
        with pytest.raises(Exception) as info:
            await handle.result()
        assert "healthCheckInterval" in str(info.value.__cause__)
        assert rec.stream_starts == []


async def test_no_markets_means_no_stream_until_added(env: WorkflowEnvironment) -> None:
    rec = Recorder()
    async with worker(env, rec):
        handle = await env.client.start_workflow(
            KalshiStreamWorkflow.run,
            config(markets=[]),
            id=f"wf-{uuid.uuid4()}",
            task_queue=TASK_QUEUE,
        )
        status: WorkflowStatus = await handle.query(KalshiStreamWorkflow.status)
        assert status.state == "idle"
        assert rec.stream_starts == []
        await handle.signal(KalshiStreamWorkflow.add_markets, ["KX-Z"])
        await until(lambda: len(rec.stream_starts) == 1, timeout=WAIT_S)
        assert rec.stream_starts[0].marketsVersion == 2
        await handle.signal(KalshiStreamWorkflow.stop)
        await handle.result()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("cleanupInterval", float("inf")),
        ("healthCheckInterval", 1e300),
        ("retention", float("inf")),
        ("reconnectDelay", float("nan")),
        ("nextCleanupAt", float("inf")),
    ],
)
def test_an_endless_interval_is_refused_not_left_to_overflow_a_timer(
    field: str, value: float
) -> None:
    with pytest.raises(ValueError, match=field):
        config(**{field: value}).validated()
    assert config(**{field: 600.0}).validated()  # a finite one is taken
