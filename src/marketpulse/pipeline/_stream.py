"""The body of the stream activity: feed in, one coalesced batch per flush out.

Kept apart from Temporal so it can run (and be measured) on its own: the activity wraps it
with heartbeats, the desired-market query and cancellation. :class:`StreamRunner` is a small
facade that composes parts with one job each, as temporalio's ``Worker`` composes its
sub-workers, and runs them as tasks on one event loop:

- :class:`~marketpulse.pipeline._feed_follower.FeedFollower` drives the feed: its events become
  coalescer input (no I/O), and the workflow's desired market set is applied to it;
- :class:`~marketpulse.pipeline._batch_writer.BatchWriter` drains the
  :class:`~marketpulse.pipeline._coalesce.Coalescer` into ``marketData:applyUpdates``, a few
  batches in flight, in order;
- :class:`~marketpulse.pipeline._status_reporter.StatusReporter` heartbeats, writes the stream
  status to the store, keeps the metrics and raises rate alerts;
- :class:`~marketpulse.pipeline._backfill.TradeBackfill` fetches over REST the trades a
  reconnect or a trade-channel gap lost.

One counters object (:class:`~marketpulse.pipeline._stream_stats.StreamStats`) is shared by all
of them and by the feed and its protocol core.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from marketpulse._aio import cancel_and_wait
from marketpulse._clock import now_ms
from marketpulse.pipeline import _metrics
from marketpulse.pipeline._alerts import Alerter
from marketpulse.pipeline._backfill import TradeBackfill, TradesSince
from marketpulse.pipeline._batch_writer import DEFAULT_IN_FLIGHT, BatchWriter
from marketpulse.pipeline._coalesce import Coalescer
from marketpulse.pipeline._feed_follower import FeedFollower, FeedLike
from marketpulse.pipeline._history import HistorySource, write_history
from marketpulse.pipeline._metadata import MetadataFetch, upsert_metadata
from marketpulse.pipeline._status_reporter import StatusReporter
from marketpulse.pipeline._store import StoreClient
from marketpulse.pipeline._stream_stats import StreamStats
from marketpulse.pipeline.config import MarketSet, StreamConfig

__all__ = ["FeedFactory", "FeedLike", "StreamRunner", "StreamStats"]

FeedFactory = Callable[[list[str], StreamStats], FeedLike]
"""Builds the feed for a market list; the feed must count in the given stats object."""

_STATUS_AT_STOP_TIMEOUT = 3.0
_NEWEST_TIMEOUT = 10.0
_HEARD_WITHIN_MS = 2_500.0
"""The feed renews the stream's lease only while it heard from the exchange this recently
(a frame, or a pong to the feed's liveness ping, which goes out every second)."""


class StreamRunner:
    """Runs one feed into the store until cancelled.

    Args:
        stream_id: Stream id for status, metrics and alerts.
        config: The workflow's config (markets at start, channels, intervals).
        markets_version: Version of ``config.markets`` in the workflow.
        feed_factory: Builds the feed for a market list, counting in the stats it is given.
        store: Store client (admin).
        alerter: Alert sink.
        desired: Returns the workflow's current market set (None: markets never change).
        heartbeat: Called with the counters about once per ``report_interval``.
        metadata: Fetches ``upsertMarkets`` entries for tickers (None: skip).
        history: Where the candles and recent trades of markets come from as they are added;
            written behind the live batches (None: skip).
        trades_since: Fetches the trade entries of tickers since an epoch-ms time, used to
            recover the trades the feed missed: after a reconnect (since the outage began) and
            after a seq gap on the trade channel (since the last trade seen). None: skip.
        flush_window: Seconds a batch may wait for more events while the feed is busy.
        poll_interval: Seconds between desired-market polls.
        report_interval: Seconds between heartbeats.
        status_interval: Seconds between ``reportStreamStatus`` writes.
        lease_ms: The stream's lease in the store: its books and prices are served as live only
            while the stream renews it (None: no lease; a feed that keeps no
            :class:`StreamStats` connection times cannot say when it is heard from).
        batches_in_flight: ``applyUpdates`` batches sent ahead of the store's answers, at
            most (1: each waits for the one before).
    """

    def __init__(
        self,
        *,
        stream_id: str,
        config: StreamConfig,
        markets_version: int,
        feed_factory: FeedFactory,
        store: StoreClient,
        alerter: Alerter,
        desired: Callable[[], Awaitable[MarketSet]] | None = None,
        heartbeat: Callable[[dict[str, Any]], None] | None = None,
        metadata: MetadataFetch | None = None,
        trades_since: TradesSince | None = None,
        history: HistorySource | None = None,
        flush_window: float = 0.005,
        poll_interval: float = 0.2,
        report_interval: float = 1.0,
        status_interval: float = 2.0,
        lease_ms: float | None = None,
        batches_in_flight: int = DEFAULT_IN_FLIGHT,
    ) -> None:
        self.stream_id = stream_id
        self.config = config
        self.stats = StreamStats(markets_version=markets_version, markets=len(config.markets))
        self._feed_factory = feed_factory
        self._store = store
        self._metadata = metadata
        self._history = history
        self._background: set[asyncio.Future[Any]] = set()
        coalescer = Coalescer()
        self._writer = BatchWriter(
            stream_id=stream_id,
            store=store,
            coalescer=coalescer,
            stats=self.stats,
            flush_window=flush_window,
            lease_ms=lease_ms,
            healthy=self._heard_from,
            on_revived=self._revived,
            max_in_flight=batches_in_flight,
        )
        self._reporter = StatusReporter(
            stream_id=stream_id,
            store=store,
            stats=self.stats,
            alerter=alerter,
            markets=lambda: self.markets,
            spawn=self._spawn,
            heartbeat=heartbeat,
            report_interval=report_interval,
            status_interval=status_interval,
        )
        self._backfill = TradeBackfill(
            stream_id=stream_id,
            trades_since=trades_since,
            enabled=config.enableTrades,
            coalescer=coalescer,
            markets=lambda: self.markets,
            wake=self._writer.wake,
            spawn=self._spawn,
            retention_ms=config.retention * 1000.0,
        )
        self._follower = FeedFollower(
            stream_id=stream_id,
            markets=list(config.markets),
            write_books=config.enableOrderbook,
            stats=self.stats,
            coalescer=coalescer,
            writer=self._writer,
            backfill=self._backfill,
            reporter=self._reporter,
            desired=desired,
            poll_interval=poll_interval,
            markets_added=self._upsert_metadata,
        )
        self._follows_markets = desired is not None

    def _revived(self) -> None:
        """The store lost our lease (it lapsed, or the store restarted and may have lost its
        last relaxed commits): write every market's full state again, and fetch again the
        trades made since the store calls began to fail."""
        self._follower.resend_state()
        since = self._writer.failing_since_ms
        self._backfill.request(now_ms() if since is None else since)

    def _heard_from(self) -> bool:
        stats = self.stats
        heard = max(stats.last_frame_at, stats.last_pong_at)
        return stats.connected and now_ms() - heard < _HEARD_WITHIN_MS

    async def _newest_stored(self, tickers: list[str]) -> dict[str, float | None]:
        """Each ticker's newest trade in the store (the backfill starts after it)."""
        sem = asyncio.Semaphore(8)

        async def one(ticker: str) -> float | None:
            async with sem:
                trades = await self._store.query(
                    "marketData:getRecentTrades", {"ticker": ticker, "limit": 1}
                )
            return float(trades[0]["timestamp"]) if trades else None

        async with asyncio.timeout(_NEWEST_TIMEOUT):
            newest = await asyncio.gather(*(one(t) for t in tickers))
        return dict(zip(tickers, newest, strict=True))

    @property
    def markets(self) -> list[str]:
        """The markets streamed now."""
        return self._follower.markets

    async def apply_markets(self, feed: FeedLike, desired: MarketSet) -> None:
        """Move the feed to ``desired``: subscribe the new markets, drop the gone ones."""
        await self._follower.apply_markets(feed, desired)

    async def run(self, stop: Awaitable[Any] | None = None) -> dict[str, Any]:
        """Stream until cancelled or until ``stop`` completes; returns the final counters."""
        markets = list(self.markets)
        _metrics.SUBSCRIBED_MARKETS.labels(stream=self.stream_id).set(len(markets))
        # Resnapshot: whatever the store holds may be stale (this attempt may follow a crash),
        # so books are unservable until this attempt's own snapshots arrive.
        self._follower.invalidate_books(markets)
        self._upsert_metadata(markets)
        # Heartbeats start before the slow start-up (store reads, the feed's connect and
        # snapshots): on a loaded machine it can outlast the heartbeat timeout, and the server
        # would then give the attempt up while it is still starting.
        report = asyncio.create_task(self._reporter.run(), name="report")
        try:
            # Before the feed starts, so none of this attempt's trades passes for the newest held.
            await self._backfill.start_from_store(self._newest_stored)
            feed = self._feed_factory(markets, self.stats)
        except BaseException:
            await cancel_and_wait(report)
            raise
        try:
            async with feed:
                tasks = [
                    asyncio.create_task(self._follower.consume(feed), name="consume"),
                    asyncio.create_task(self._writer.run(), name="write"),
                    report,
                ]
                if self._follows_markets:
                    tasks.append(
                        asyncio.create_task(self._follower.follow_markets(feed), name="follow")
                    )
                waiters: list[asyncio.Future[Any]] = list(tasks)
                stop_task: asyncio.Future[Any] | None = None
                if stop is not None:
                    stop_task = asyncio.ensure_future(stop)
                    waiters.append(stop_task)
                try:
                    done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                    for t in done:
                        if t is not stop_task and t.exception() is not None:
                            raise t.exception()  # type: ignore[misc]
                finally:
                    await cancel_and_wait(*waiters)
        finally:
            await cancel_and_wait(report)
            for t in list(self._background):
                t.cancel()
            await self._shutdown()
        return self._reporter.details()

    async def _shutdown(self) -> None:
        """Best effort on the way out: stop serving our books, say we stopped."""
        self._reporter.stopped()
        with contextlib.suppress(Exception):
            # The marks replace any pending book; pending prices and trades still go out.
            self._follower.invalidate_books(self.markets)
        await self._writer.flush_at_shutdown()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(_STATUS_AT_STOP_TIMEOUT):
                await self._reporter.report_status()

    def _upsert_metadata(self, tickers: list[str]) -> None:
        if self._metadata is not None and tickers:
            self._spawn(upsert_metadata(self._store, self._metadata, tickers, self.stream_id))
        if self._history is not None and tickers:
            self._spawn(
                write_history(
                    self._store,
                    self._history,
                    tickers,
                    self.stream_id,
                    self._writer.idle,
                    self.config.retention * 1000.0,
                )
            )

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Future[Any]:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task
