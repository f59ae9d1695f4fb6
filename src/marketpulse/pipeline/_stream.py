"""The body of the stream activity: feed in, one coalesced batch per flush out.

Kept apart from Temporal so it can run (and be measured) on its own: the activity wraps it
with heartbeats, the desired-market query and cancellation. Four tasks share one event loop:

- ``consume``: reads feed events and folds them into the :class:`Coalescer` (no I/O);
- ``write``: waits for a change, lets the loop go idle once (or at most ``flush_window``),
  then sends ONE ``marketData:applyUpdates`` and waits for it; whatever arrives meanwhile is
  coalesced into the next batch, so the write rate adapts to the store's speed;
- ``follow``: every ``poll_interval`` asks for the desired market set and applies the
  difference to the feed (other subscriptions untouched);
- ``report``: heartbeats and status, rate alerts.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

import structlog

from marketpulse._aio import cancel_and_wait
from marketpulse.kalshi import (
    BookInvalidated,
    BookUpdated,
    ErrorMessage,
    FeedState,
    FeedStats,
    MarketLifecycle,
    RecoveryStarted,
    SequenceGap,
    TickerMessage,
    TradeMessage,
)
from marketpulse.pipeline import _metrics
from marketpulse.pipeline._alerts import Alerter, RateWatch
from marketpulse.pipeline._backfill import trade_entry
from marketpulse.pipeline._coalesce import Coalescer, PendingBatch
from marketpulse.pipeline._store import StoreClient, StoreError
from marketpulse.pipeline.config import MarketSet, StreamConfig

__all__ = ["FeedLike", "StreamRunner", "StreamStats"]

log = structlog.get_logger("marketpulse.pipeline.stream")

APPLY_UPDATES = "marketData:applyUpdates"
UPSERT_MARKETS = "marketData:upsertMarkets"
REPORT_STATUS = "marketData:reportStreamStatus"


class FeedLike(Protocol):
    """What the runner needs of ``marketpulse.kalshi.KalshiFeed``."""

    async def __aenter__(self) -> Any: ...

    async def __aexit__(self, *exc: object) -> Any: ...

    def __aiter__(self) -> AsyncIterator[Any]: ...

    async def add_markets(self, tickers: Iterable[str]) -> list[str]: ...

    async def remove_markets(self, tickers: Iterable[str]) -> list[str]: ...

    @property
    def stats(self) -> FeedStats: ...


def _now_ms() -> float:
    return time.time() * 1000.0


@dataclass
class StreamStats:
    """Counters of one stream activity attempt (they travel in heartbeat details)."""

    state: str = "starting"
    stateSince: float = field(default_factory=_now_ms)
    disconnectedSince: float = field(default_factory=_now_ms)
    messages: int = 0
    events: int = 0
    batches: int = 0
    batchErrors: int = 0
    reconnects: int = 0
    gaps: int = 0
    lastMessageAt: float = 0.0
    lastFrameAt: float = 0.0
    lastBatchMs: float = 0.0
    marketsVersion: int = 0
    markets: int = 0
    startedAt: float = field(default_factory=_now_ms)

    def set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self.stateSince = _now_ms()
            # A feed flapping between connecting and reconnecting is still down: keep the
            # start of the outage, not of the latest state.
            if state == "connected":
                self.disconnectedSince = 0.0
            elif not self.disconnectedSince:
                self.disconnectedSince = self.stateSince

    def details(self) -> dict[str, Any]:
        return dict(self.__dict__)


class StreamRunner:
    """Runs one feed into the store until cancelled.

    Args:
        stream_id: Stream id for status, metrics and alerts.
        config: The workflow's config (markets at start, channels, intervals).
        markets_version: Version of ``config.markets`` in the workflow.
        feed_factory: Builds the feed for a market list.
        store: Store client (admin).
        alerter: Alert sink.
        desired: Returns the workflow's current market set (None: markets never change).
        heartbeat: Called with the counters about once per ``report_interval``.
        metadata: Fetches ``upsertMarkets`` entries for tickers (None: skip).
        trades_since: Fetches the trade entries of tickers since an epoch-ms time, used to
            recover the trades the feed missed: after a reconnect (since the outage began) and
            after a seq gap on the trade channel (since the last trade seen). None: skip.
        flush_window: Seconds a batch may wait for more events while the feed is busy.
        poll_interval: Seconds between desired-market polls.
        report_interval: Seconds between heartbeats.
        status_interval: Seconds between ``reportStreamStatus`` writes.
    """

    def __init__(
        self,
        *,
        stream_id: str,
        config: StreamConfig,
        markets_version: int,
        feed_factory: Callable[[list[str]], FeedLike],
        store: StoreClient,
        alerter: Alerter,
        desired: Callable[[], Awaitable[MarketSet]] | None = None,
        heartbeat: Callable[[dict[str, Any]], None] | None = None,
        metadata: Callable[[list[str]], Awaitable[list[dict[str, Any]]]] | None = None,
        trades_since: Callable[[list[str], float], Awaitable[list[dict[str, Any]]]] | None = None,
        flush_window: float = 0.005,
        poll_interval: float = 0.2,
        report_interval: float = 1.0,
        status_interval: float = 2.0,
    ) -> None:
        self.stream_id = stream_id
        self.config = config
        self.markets: list[str] = list(config.markets)
        self._market_set = set(self.markets)
        self._rate = 0.0
        self._feed_messages = 0
        self.stats = StreamStats(marketsVersion=markets_version, markets=len(self.markets))
        self._feed_factory = feed_factory
        self._store = store
        self._alerter = alerter
        self._desired = desired
        self._heartbeat = heartbeat
        self._metadata = metadata
        self._trades_since = trades_since
        self._connected_once = False
        self._down_since_ms: float | None = None
        self._last_trade_ms: float | None = None
        self._backfill_since: float | None = None  # the earliest time a queued fetch needs
        self._backfilling: asyncio.Future[Any] | None = None
        self._flush_window = flush_window
        self._poll_interval = poll_interval
        self._report_interval = report_interval
        self._status_interval = status_interval
        self._coalescer = Coalescer()
        self._dirty = asyncio.Event()
        self._seen = 0
        self._gap_watch = RateWatch(window=60.0, threshold=5)
        self._reconnect_watch = RateWatch(window=300.0, threshold=3)
        self._background: set[asyncio.Task[Any]] = set()
        self._feed: FeedLike | None = None
        self._m_messages = {
            k: _metrics.MESSAGES.labels(stream=stream_id, kind=k)
            for k in ("book", "book_invalid", "ticker", "trade", "status", "other")
        }

    # -- lifecycle ----------------------------------------------------------------------------

    async def run(self, stop: Awaitable[Any] | None = None) -> dict[str, Any]:
        """Stream until cancelled or until ``stop`` completes; returns the final counters."""
        _metrics.SUBSCRIBED_MARKETS.labels(stream=self.stream_id).set(len(self.markets))
        # Resnapshot: whatever the store holds may be stale (this attempt may follow a crash),
        # so books are unservable until this attempt's own snapshots arrive.
        self._invalidate_books(self.markets)
        self._spawn(self._upsert_metadata(list(self.markets)))
        feed = self._feed_factory(list(self.markets))
        self._feed = feed
        try:
            async with feed:
                self.stats.set_state("connecting")
                tasks = [
                    asyncio.create_task(self._consume(feed), name="consume"),
                    asyncio.create_task(self._write(), name="write"),
                    asyncio.create_task(self._report(), name="report"),
                ]
                if self._desired is not None:
                    tasks.append(asyncio.create_task(self._follow(feed), name="follow"))
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
            self._feed = None
            for t in list(self._background):
                t.cancel()
            await self._shutdown()
        return self.stats.details()

    async def _shutdown(self) -> None:
        """Best effort on the way out: stop serving our books, say we stopped."""
        self.stats.set_state("stopped")
        _metrics.STREAM_CONNECTED.labels(stream=self.stream_id).set(0)
        with contextlib.suppress(Exception):
            # The marks replace any pending book; pending prices and trades still go out.
            self._invalidate_books(self.markets)
            for _ in range(3):
                batches = self._coalescer.batches_to_send()
                if not batches:
                    break
                for batch in batches:
                    async with asyncio.timeout(3.0):
                        await self._store.mutation(APPLY_UPDATES, batch.args)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(3.0):
                await self._report_status()

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Future[Any]:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    def _invalidate_books(self, tickers: list[str]) -> None:
        if not self.config.enableOrderbook:
            return
        now = time.monotonic()
        ts = _now_ms()
        for t in tickers:
            self._coalescer.book_invalid(t, ts, now)
        if tickers:
            self._dirty.set()

    async def _upsert_metadata(self, tickers: list[str]) -> None:
        if self._metadata is None or not tickers:
            return
        try:
            entries = await self._metadata(tickers)
            for i in range(0, len(entries), 200):
                await self._store.mutation(UPSERT_MARKETS, {"markets": entries[i : i + 200]})
            log.info("market metadata upserted", stream=self.stream_id, markets=len(entries))
        except Exception as exc:  # metadata is nice to have; the feed must go on
            log.warning("market metadata failed", stream=self.stream_id, error=str(exc)[:300])

    def _request_backfill(self, since_ms: float) -> None:
        """Fetch the trades made since ``since_ms``. Requests made while a fetch runs merge
        into ONE follow-up from the earliest time asked: a burst of trade-channel gaps costs at
        most two rounds of REST calls, not one round per gap."""
        if self._trades_since is None or not self.config.enableTrades:
            return
        pending = self._backfill_since
        self._backfill_since = since_ms if pending is None else min(pending, since_ms)
        if self._backfilling is None or self._backfilling.done():
            self._backfilling = self._spawn(self._run_backfills())

    async def _run_backfills(self) -> None:
        while self._backfill_since is not None:
            since, self._backfill_since = self._backfill_since, None
            await self._backfill_trades(list(self.markets), since)

    async def _backfill_trades(self, tickers: list[str], since_ms: float) -> None:
        # Only reached through _request_backfill, which checks that trades are wanted.
        if self._trades_since is None or not tickers:
            return
        try:
            entries = await self._trades_since(tickers, since_ms)
        except Exception as exc:  # the live feed goes on; the gap stays logged
            log.warning("trade backfill failed", stream=self.stream_id, error=str(exc)[:300])
            return
        now = time.monotonic()
        for entry in entries:
            if entry["ticker"] in self._market_set:
                self._coalescer.trade(entry, now)
        if entries:
            self._dirty.set()
        log.info("trades backfilled", stream=self.stream_id, trades=len(entries))

    # -- consume ------------------------------------------------------------------------------

    async def _consume(self, feed: FeedLike) -> None:
        async for event in feed:
            self._on_event(event)

    def _on_event(self, ev: Any) -> None:
        now = time.monotonic()
        c = self._coalescer
        if isinstance(ev, FeedState):
            self._on_feed_state(ev)
            return
        if isinstance(ev, SequenceGap) and ev.channel == "trade" and not ev.duplicate:
            # Trades have no snapshot to recover from: fetch the ones the gap swallowed.
            since = self._last_trade_ms if self._last_trade_ms is not None else _now_ms()
            self._request_backfill(since)
        ticker = getattr(ev, "ticker", None)
        if ticker is None or ticker not in self._market_set:
            if isinstance(ev, SequenceGap | ErrorMessage | RecoveryStarted):
                log.info("feed notice", stream=self.stream_id, notice=repr(ev)[:300])
            return  # notices, or a late event of a removed market
        if isinstance(ev, BookUpdated):
            c.book(ticker, ev.book, _ms_or_now(ev.book.ts_ms), now)
            self._m_messages["book"].inc()
        elif isinstance(ev, BookInvalidated):
            c.book_invalid(ticker, _now_ms(), now)
            self._m_messages["book_invalid"].inc()
        elif isinstance(ev, TickerMessage):
            c.price(ticker, _ticker_fields(ev), _ms_or_now(ev.ts_ms), now)
            self._m_messages["ticker"].inc()
        elif isinstance(ev, TradeMessage):
            entry = _trade_entry(ev)
            self._last_trade_ms = entry["timestamp"]
            c.trade(entry, now)
            self._m_messages["trade"].inc()
        elif isinstance(ev, MarketLifecycle):
            status = ev.status
            if status is None:
                return
            c.market_status(ticker, status, now)
            self._m_messages["status"].inc()
        else:
            self._m_messages["other"].inc()
            return
        self._seen += 1
        self.stats.events += 1
        self.stats.lastMessageAt = _now_ms()
        self._dirty.set()

    def _on_feed_state(self, ev: FeedState) -> None:
        if ev.state == "connected":
            if self._down_since_ms is not None:
                self._request_backfill(self._down_since_ms)
            self._connected_once, self._down_since_ms = True, None
        elif self._connected_once and self._down_since_ms is None:
            self._down_since_ms = _now_ms()
        self.stats.set_state(ev.state)
        _metrics.STREAM_CONNECTED.labels(stream=self.stream_id).set(
            1 if ev.state == "connected" else 0
        )
        if ev.state != "connected":
            log.info("feed state", stream=self.stream_id, state=ev.state, reason=ev.reason)
        self._on_counters(ev.stats.reconnects, ev.stats.gaps)

    def _sync_feed_counters(self) -> None:
        feed = self._feed
        if feed is None:
            return
        fs = feed.stats
        if fs.messages > self._feed_messages:
            _metrics.FEED_MESSAGES.labels(stream=self.stream_id).inc(
                fs.messages - self._feed_messages
            )
            self.stats.messages += fs.messages - self._feed_messages
        self._feed_messages = fs.messages
        self.stats.lastFrameAt = fs.last_message_at or 0.0
        self._on_counters(fs.reconnects, fs.gaps)

    def _on_counters(self, reconnects: int, gaps: int) -> None:
        now = time.monotonic()
        if reconnects > self.stats.reconnects:
            delta, self.stats.reconnects = reconnects - self.stats.reconnects, reconnects
            _metrics.RECONNECTS.labels(stream=self.stream_id).inc(delta)
            self._watch(self._reconnect_watch, now, delta, "reconnect_rate", "reconnects")
        if gaps > self.stats.gaps:
            delta, self.stats.gaps = gaps - self.stats.gaps, gaps
            _metrics.GAPS.labels(stream=self.stream_id).inc(delta)
            self._watch(self._gap_watch, now, delta, "gap_rate", "sequence gaps")

    def _watch(self, watch: RateWatch, now: float, n: int, kind: str, what: str) -> None:
        if watch.add(now, n):
            message = f"{watch.threshold}+ {what} in {watch.window:.0f}s"
            total = self.stats.reconnects if kind == "reconnect_rate" else self.stats.gaps
            self._spawn(self._alerter.alert(self.stream_id, kind, message, total=total))

    # -- write --------------------------------------------------------------------------------

    async def _write(self) -> None:
        loop = asyncio.get_running_loop()
        retry: PendingBatch | None = None
        backoff = 0.05
        while True:
            if retry is None:
                await self._dirty.wait()
                deadline = loop.time() + self._flush_window
                # Flush as soon as the loop goes idle (one turn with no new event), or at the
                # window's end while events keep coming.
                while loop.time() < deadline:
                    seen = self._seen
                    await asyncio.sleep(0)
                    if self._seen == seen:
                        break
                self._dirty.clear()
                batches = self._coalescer.batches_to_send()
                if not batches:
                    continue
                # One batch per drain (see Coalescer.batches_to_send).
                batch = batches[0]
                if len(self._coalescer):
                    self._dirty.set()
            else:
                batch, retry = retry, None
            sent = time.monotonic()
            try:
                await self._store.mutation(APPLY_UPDATES, batch.args)
            except StoreError as exc:
                self.stats.batchErrors += 1
                _metrics.BATCH_ERRORS.labels(stream=self.stream_id).inc()
                if exc.transient:
                    log.warning(
                        "store write failed; retrying", stream=self.stream_id, error=str(exc)
                    )
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 2.0)
                    retry = batch
                else:
                    log.error("store refused a batch", stream=self.stream_id, error=str(exc))
                continue
            backoff = 0.05
            self._sync_feed_counters()
            done = time.monotonic()
            self.stats.batches += 1
            self.stats.lastBatchMs = (done - batch.first_event_at) * 1000.0
            _metrics.BATCHES.labels(stream=self.stream_id).inc()
            _metrics.BATCH_LATENCY.labels(stream=self.stream_id).observe(
                done - batch.first_event_at
            )
            _metrics.STORE_WRITE.labels(stream=self.stream_id).observe(done - sent)
            _metrics.BATCH_SIZE.labels(stream=self.stream_id).observe(batch.events)

    # -- follow the desired market set --------------------------------------------------------

    async def _follow(self, feed: FeedLike) -> None:
        assert self._desired is not None
        failures = 0
        while True:
            await asyncio.sleep(self._poll_interval)
            try:
                desired = await self._desired()
            except Exception as exc:
                failures += 1
                if failures in (1, 50):
                    log.warning(
                        "desired markets unavailable", stream=self.stream_id, error=str(exc)[:200]
                    )
                continue
            failures = 0
            if desired.version != self.stats.marketsVersion:
                await self.apply_markets(feed, desired)

    async def apply_markets(self, feed: FeedLike, desired: MarketSet) -> None:
        """Move the feed to ``desired``: subscribe the new markets, drop the gone ones."""
        current = set(self.markets)
        wanted = list(desired.markets)
        added = [m for m in wanted if m not in current]
        removed = [m for m in self.markets if m not in set(wanted)]
        # Switch the filter first: a new market's snapshot may arrive before add_markets returns.
        self.markets = wanted
        self._market_set = set(wanted)
        if added:
            self._invalidate_books(added)  # an old book of this market may sit in the store
            await feed.add_markets(added)
            self._spawn(self._upsert_metadata(added))
        if removed:
            await feed.remove_markets(removed)
            self._coalescer.forget(set(removed))
            self._invalidate_books(removed)
        self.stats.marketsVersion = desired.version
        self.stats.markets = len(wanted)
        _metrics.SUBSCRIBED_MARKETS.labels(stream=self.stream_id).set(len(wanted))
        log.info(
            "markets changed",
            stream=self.stream_id,
            added=len(added),
            removed=len(removed),
            version=desired.version,
        )

    # -- report -------------------------------------------------------------------------------

    async def _report(self) -> None:
        last_status = 0.0
        last_messages = 0
        last_at = time.monotonic()
        while True:
            now = time.monotonic()
            if now > last_at:
                self._rate = (self.stats.messages - last_messages) / (now - last_at)
            last_messages, last_at = self.stats.messages, now
            self._sync_feed_counters()
            if self._heartbeat is not None:
                self._heartbeat(self.stats.details())
            if now - last_status >= self._status_interval:
                last_status = now
                try:
                    await self._report_status()
                except StoreError as exc:
                    log.warning("status report failed", stream=self.stream_id, error=str(exc))
            await asyncio.sleep(self._report_interval)

    async def _report_status(self) -> None:
        status = {
            "streamId": self.stream_id,
            "state": self.stats.state,
            "markets": list(self.markets),
            "messagesPerSecond": round(self._rate, 3),
            "lastMessageAt": self.stats.lastMessageAt,
            "reconnects": self.stats.reconnects,
            "gaps": self.stats.gaps,
            "lagMs": round(self.stats.lastBatchMs, 3),
            "updatedAt": _now_ms(),
        }
        await self._store.mutation(REPORT_STATUS, {"status": status})


def _ms_or_now(ts: int | float | None) -> float:
    return float(ts) if ts else _now_ms()


def _num(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


def _ticker_fields(ev: TickerMessage) -> dict[str, Any]:
    return {
        "price": _num(ev.price),
        "yesBid": _num(ev.yes_bid),
        "yesAsk": _num(ev.yes_ask),
        "volume": _num(ev.volume),
        "openInterest": _num(ev.open_interest),
    }


def _trade_entry(ev: TradeMessage) -> dict[str, Any]:
    return trade_entry(
        ev.trade_id, ev.ticker, ev.taker_side, ev.yes_price, ev.count, _ms_or_now(ev.ts_ms)
    )
