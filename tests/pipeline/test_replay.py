"""Replay KalshiStreamWorkflow against a recorded history (determinism guard).

The fixture was recorded by running this module as a script (``python
tests/pipeline/test_replay.py --record``), which drives one workflow through every handler
and timer on the time-skipping test server. A change that breaks replay of workflows already
running in production fails here; re-record only together with a versioning plan (patches).
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from marketpulse.pipeline.worker import workflow_runner
from marketpulse.pipeline.workflow import KalshiStreamWorkflow

HISTORY = Path(__file__).parent / "histories" / "kalshi_stream.json"


def test_replay_recorded_history() -> None:
    data = json.loads(HISTORY.read_text())
    events = data["events"]
    kinds = {e["eventType"] for e in events}
    # The fixture exercises signals, an update, timers, activities and completion.
    for kind in (
        "EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED",
        "EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED",
        "EVENT_TYPE_TIMER_FIRED",
        "EVENT_TYPE_ACTIVITY_TASK_SCHEDULED",
        "EVENT_TYPE_ACTIVITY_TASK_CANCEL_REQUESTED",
        "EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED",
    ):
        assert kind in kinds, kind
    replayer = Replayer(workflows=[KalshiStreamWorkflow], workflow_runner=workflow_runner())
    result = asyncio.run(
        replayer.replay_workflow(WorkflowHistory.from_json("kalshi-stream-recorded", data))
    )
    assert result.replay_failure is None


def test_replay_detects_a_nondeterministic_change() -> None:
    """The replay test is not vacuous: a history whose commands differ fails to replay."""
    data = json.loads(HISTORY.read_text())
    for e in data["events"]:
        attrs = e.get("activityTaskScheduledEventAttributes")
        if attrs:
            attrs["activityType"]["name"] = "some_other_activity"
            break
    replayer = Replayer(workflows=[KalshiStreamWorkflow], workflow_runner=workflow_runner())
    result = asyncio.run(
        replayer.replay_workflow(
            WorkflowHistory.from_json("kalshi-stream-recorded", data), raise_on_replay_failure=False
        )
    )
    assert result.replay_failure is not None


async def _record() -> None:
    from temporalio.testing import WorkflowEnvironment

    sys.path.insert(0, str(Path(__file__).parent))
    from test_workflow import Recorder, config, until, worker  # type: ignore[import-not-found]

    from marketpulse.pipeline._binaries import temporal_test_server
    from marketpulse.pipeline.config import TASK_QUEUE, MarketsChange

    async with await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=temporal_test_server()
    ) as env:
        rec = Recorder()
        async with worker(env, rec):
            handle = await env.client.start_workflow(
                KalshiStreamWorkflow.run,
                config(healthCheckInterval=1.0, cleanupInterval=2.0),
                id=f"record-{uuid.uuid4()}",
                task_queue=TASK_QUEUE,
            )
            await until(lambda: len(rec.stream_starts) == 1)
            await handle.signal(KalshiStreamWorkflow.add_markets, ["KX-C"])
            await handle.signal(KalshiStreamWorkflow.remove_markets, ["KX-A"])
            await handle.execute_update(
                KalshiStreamWorkflow.update_markets, MarketsChange(add=["KX-D"])
            )
            await until(lambda: len(rec.cleanups) >= 1 and len(rec.health_checks) >= 2)
            rec.stale_next = True
            await until(lambda: len(rec.stream_starts) == 2)
            await asyncio.sleep(0.5)
            await handle.signal(KalshiStreamWorkflow.stop)
            await handle.result()
            history = await handle.fetch_history()
    HISTORY.write_text(json.dumps(json.loads(history.to_json()), indent=1) + "\n")
    print(f"recorded {len(history.events)} events to {HISTORY}")


if __name__ == "__main__":
    if "--record" not in sys.argv:
        pytest.main([__file__, "-q"])
    else:
        asyncio.run(_record())
