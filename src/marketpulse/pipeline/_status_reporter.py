"""The status reporter: the stream's counters to the activity heartbeat, the store and metrics.

This is the wire of :class:`~marketpulse.pipeline._stream_stats.StreamStats`: its snake_case
fields are renamed to camelCase here and nowhere else. The heartbeat details travel to the
workflow's health check (and from there to its ``status`` query); the status goes to the store
through ``marketData:reportStreamStatus``. Both keep the names the dashboard and clients read.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import structlog

from marketpulse._clock import now_ms
from marketpulse.kalshi import FeedState
from marketpulse.pipeline import _metrics
from marketpulse.pipeline._alerts import Alerter, RateWatch
from marketpulse.pipeline._store import StoreClient, StoreError
from marketpulse.pipeline._stream_stats import StreamStats

__all__ = ["HEARTBEAT_FIELDS", "REPORT_STATUS", "StatusReporter"]

log = structlog.get_logger("marketpulse.pipeline.stream")

REPORT_STATUS = "marketData:reportStreamStatus"

HEARTBEAT_FIELDS = {
    "state": "state",
    "stateSince": "state_since",
    "disconnectedSince": "disconnected_since",
    "messages": "messages",
    "events": "events",
    "batches": "batches",
    "batchErrors": "batch_errors",
    "reconnects": "reconnects",
    "gaps": "gaps",
    "lastMessageAt": "last_message_at",
    "lastFrameAt": "last_frame_at",
    "lastBatchMs": "last_batch_ms",
    "marketsVersion": "markets_version",
    "markets": "markets",
    "finished": "finished",
    "startedAt": "started_at",
}
"""Heartbeat detail (wire name) -> :class:`StreamStats` field, in the order they are sent."""


class StatusReporter:
    """Reports the stream's counters: heartbeats, store status, Prometheus metrics, rate alerts.

    Args:
        stream_id: Stream id of the status, metrics and alerts.
        store: Store client (admin).
        stats: The counters it reports (it only reads them).
        alerter: Alert sink for gap and reconnect rates.
        markets: Returns the markets streamed now.
        spawn: Runs a coroutine in the background (alerts and status writes must not hold the
            heartbeats up).
        heartbeat: Called with the heartbeat details about once per ``report_interval``.
        report_interval: Seconds between heartbeats.
        status_interval: Seconds between ``reportStreamStatus`` writes.
    """

    def __init__(
        self,
        *,
        stream_id: str,
        store: StoreClient,
        stats: StreamStats,
        alerter: Alerter,
        markets: Callable[[], Sequence[str]],
        spawn: Callable[[Awaitable[Any]], object],
        heartbeat: Callable[[dict[str, Any]], None] | None,
        report_interval: float,
        status_interval: float,
    ) -> None:
        self._stream_id = stream_id
        self._store = store
        self._stats = stats
        self._alerter = alerter
        self._markets = markets
        self._spawn = spawn
        self._heartbeat = heartbeat
        self._report_interval = report_interval
        self._status_interval = status_interval
        self._rate = 0.0
        self._reporting = False  # a status write is in flight
        # What the metrics and rate alerts have seen of the monotonic counters.
        self._messages_seen = 0
        self._reconnects_seen = 0
        self._gaps_seen = 0
        self._gap_watch = RateWatch(window=60.0, threshold=5)
        self._reconnect_watch = RateWatch(window=300.0, threshold=3)

    def details(self) -> dict[str, Any]:
        """The counters as heartbeat details (camelCase wire names)."""
        stats = self._stats
        return {wire: getattr(stats, name) for wire, name in HEARTBEAT_FIELDS.items()}

    def status(self) -> dict[str, Any]:
        """The ``reportStreamStatus`` argument (camelCase wire names)."""
        stats = self._stats
        return {
            "streamId": self._stream_id,
            "state": stats.state,
            "markets": list(self._markets()),
            "messagesPerSecond": round(self._rate, 3),
            "lastMessageAt": stats.last_message_at,
            "reconnects": stats.reconnects,
            "gaps": stats.gaps,
            "lagMs": round(stats.last_batch_ms, 3),
            "updatedAt": now_ms(),
        }

    async def report_status(self) -> None:
        """Write the status to the store now."""
        await self._store.mutation(REPORT_STATUS, {"status": self.status()})

    def feed_state_changed(self, ev: FeedState) -> None:
        """The feed's connection state changed."""
        connected = ev.state == "connected"
        _metrics.STREAM_CONNECTED.labels(stream=self._stream_id).set(1 if connected else 0)
        if not connected:
            log.info("feed state", stream=self._stream_id, state=ev.state, reason=ev.reason)
        self.observe_counters()

    def stopped(self) -> None:
        """The stream stopped."""
        self._stats.set_state("stopped")
        _metrics.STREAM_CONNECTED.labels(stream=self._stream_id).set(0)

    def observe_counters(self) -> None:
        """Carry what the counters gained since the last look to the metrics and rate alerts."""
        stats, stream = self._stats, self._stream_id
        if stats.messages > self._messages_seen:
            _metrics.FEED_MESSAGES.labels(stream=stream).inc(stats.messages - self._messages_seen)
            self._messages_seen = stats.messages
        now = time.monotonic()
        if stats.reconnects > self._reconnects_seen:
            delta, self._reconnects_seen = (
                stats.reconnects - self._reconnects_seen,
                stats.reconnects,
            )
            _metrics.RECONNECTS.labels(stream=stream).inc(delta)
            self._watch(self._reconnect_watch, now, delta, "reconnect_rate", "reconnects")
        if stats.gaps > self._gaps_seen:
            delta, self._gaps_seen = stats.gaps - self._gaps_seen, stats.gaps
            _metrics.GAPS.labels(stream=stream).inc(delta)
            self._watch(self._gap_watch, now, delta, "gap_rate", "sequence gaps")

    def _watch(self, watch: RateWatch, now: float, n: int, kind: str, what: str) -> None:
        if watch.add(now, n):
            message = f"{watch.threshold}+ {what} in {watch.window:.0f}s"
            total = self._stats.reconnects if kind == "reconnect_rate" else self._stats.gaps
            self._spawn(self._alerter.alert(self._stream_id, kind, message, total=total))

    async def run(self) -> None:
        """Heartbeat every ``report_interval``, write the status every ``status_interval``."""
        last_status = 0.0
        last_messages = 0
        last_at = time.monotonic()
        while True:
            now = time.monotonic()
            messages = self._stats.messages
            if now > last_at:
                self._rate = (messages - last_messages) / (now - last_at)
            last_messages, last_at = messages, now
            self.observe_counters()
            if self._heartbeat is not None:
                self._heartbeat(self.details())
            if now - last_status >= self._status_interval and not self._reporting:
                last_status = now
                # Beside the heartbeats, never in their way: a store that hangs or restarts
                # must not cost the activity its heartbeat timeout (and the stream a restart).
                self._reporting = True
                self._spawn(self._report_status_once())
            await asyncio.sleep(self._report_interval)

    async def _report_status_once(self) -> None:
        try:
            await self.report_status()
        except StoreError as exc:
            log.warning("status report failed", stream=self._stream_id, error=str(exc))
        finally:
            self._reporting = False
