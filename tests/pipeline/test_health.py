"""The health check's judgement of one pending stream activity (``StreamActivities._judge``)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from temporalio.api.enums.v1 import PendingActivityState
from temporalio.api.workflow.v1 import PendingActivityInfo
from temporalio.converter import DataConverter

from marketpulse.pipeline.activities import StreamActivities, WorkerSettings
from marketpulse.pipeline.config import HealthInput

NOW_MS = 1_800_000_000_000.0
INPUT = HealthInput(
    workflowId="w",
    runId="r",
    staleAfter=300.0,
    heartbeatTimeout=10.0,
    healthCheckInterval=5.0,
    streamId="s",
)


def _running(heartbeat_age_s: float) -> PendingActivityInfo:
    pa = PendingActivityInfo(state=PendingActivityState.PENDING_ACTIVITY_STATE_STARTED, attempt=2)
    pa.last_heartbeat_time.FromMicroseconds(int((NOW_MS / 1000.0 - heartbeat_age_s) * 1e6))
    # The heartbeat details of a connected feed that had data just before its last heartbeat.
    details = {"state": "connected", "lastMessageAt": NOW_MS - heartbeat_age_s * 1000.0}
    pa.heartbeat_details.payloads.extend(
        DataConverter.default.payload_converter.to_payloads([details])
    )
    return pa


def _judge(pa: PendingActivityInfo) -> Any:
    # The judgement uses the client only for its data converter.
    client: Any = SimpleNamespace(data_converter=DataConverter.default)
    acts = StreamActivities(client, WorkerSettings("http://127.0.0.1:1", "unused"))
    return acts._judge(pa, INPUT, NOW_MS)


def test_a_missing_heartbeat_is_left_to_the_server_s_retry_first() -> None:
    # Just past the heartbeat timeout the server gives the attempt up and retries it: a
    # restart by the health check then would race that retry.
    assert not _judge(_running(10.5)).stale
    assert not _judge(_running(14.9)).stale


def test_an_attempt_still_running_long_after_its_last_heartbeat_is_stale() -> None:
    report = _judge(_running(15.5))
    assert report.stale and report.reason.startswith("no heartbeat for 15.5")


def _quiet(quiet_s: float, markets: int) -> PendingActivityInfo:
    """A connected attempt heartbeating now, its last data ``quiet_s`` ago."""
    pa = PendingActivityInfo(state=PendingActivityState.PENDING_ACTIVITY_STATE_STARTED, attempt=1)
    pa.last_heartbeat_time.FromMicroseconds(int(NOW_MS * 1000))
    details = {"state": "connected", "lastMessageAt": NOW_MS - quiet_s * 1000.0, "markets": markets}
    pa.heartbeat_details.payloads.extend(
        DataConverter.default.payload_converter.to_payloads([details])
    )
    return pa


def test_a_stream_whose_markets_were_all_removed_is_quiet_not_stale() -> None:
    # `stream remove-markets` of the last market: the feed runs on with nothing subscribed.
    # It used to be judged stale after staleAfter, with a `stale` alert and a restart.
    report = _judge(_quiet(400.0, markets=0))
    assert not report.stale and report.reason.startswith("no markets")
    report = _judge(_quiet(400.0, markets=3))
    assert report.stale and report.reason.startswith("no data for 400.0")
