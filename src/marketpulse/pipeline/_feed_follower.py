"""The feed follower: drives the feed and turns its events into coalescer input.

It consumes the feed's events (books, prices, trades, statuses, connection states, notices)
and follows the workflow's desired market set, applying the difference to the feed live
(the other subscriptions untouched). It does no store I/O: the batch writer drains what it
puts in the coalescer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from decimal import Decimal
from typing import Any, Protocol

import structlog

from marketpulse._clock import now_ms
from marketpulse.kalshi import (
    BookInvalidated,
    BookUpdated,
    ErrorMessage,
    FeedState,
    MarketLifecycle,
    RecoveryStarted,
    SequenceGap,
    TickerMessage,
    TradeMessage,
)
from marketpulse.pipeline import _metrics
from marketpulse.pipeline._backfill import TradeBackfill, trade_entry
from marketpulse.pipeline._batch_writer import BatchWriter
from marketpulse.pipeline._coalesce import Coalescer
from marketpulse.pipeline._lifecycle import FINISHED, lifecycle_status, settlement_of
from marketpulse.pipeline._status_reporter import StatusReporter
from marketpulse.pipeline._stream_stats import StreamStats
from marketpulse.pipeline.config import MarketSet

__all__ = ["FeedFollower", "FeedLike"]

log = structlog.get_logger("marketpulse.pipeline.stream")

_EVENT_KINDS = ("book", "book_invalid", "ticker", "trade", "status", "other")


class FeedLike(Protocol):
    """What the stream needs of ``marketpulse.kalshi.KalshiFeed``."""

    async def __aenter__(self) -> Any: ...

    async def __aexit__(self, *exc: object) -> Any: ...

    def __aiter__(self) -> AsyncIterator[Any]: ...

    async def add_markets(self, tickers: Iterable[str]) -> list[str]: ...

    async def remove_markets(self, tickers: Iterable[str]) -> list[str]: ...


class FeedFollower:
    """Feeds the coalescer from the feed, and moves the feed to the desired markets.

    Args:
        stream_id: Stream id for metrics and logs.
        markets: The markets streamed at start.
        write_books: Whether books are written (``enableOrderbook``): invalid marks only then.
        stats: Counts ``events``, ``last_message_at``, ``markets`` and ``markets_version``.
        coalescer: Where the events go.
        writer: Woken after each input to the coalescer.
        backfill: Told of trades, trade gaps and connection states.
        reporter: Told of connection states.
        desired: Returns the workflow's current market set (None: markets never change).
        poll_interval: Seconds between desired-market polls.
        markets_added: Called with markets added to the feed (e.g. to fetch their metadata).
    """

    def __init__(
        self,
        *,
        stream_id: str,
        markets: list[str],
        write_books: bool,
        stats: StreamStats,
        coalescer: Coalescer,
        writer: BatchWriter,
        backfill: TradeBackfill,
        reporter: StatusReporter,
        desired: Callable[[], Awaitable[MarketSet]] | None,
        poll_interval: float,
        markets_added: Callable[[list[str]], None],
    ) -> None:
        self._stream_id = stream_id
        self.markets: list[str] = list(markets)
        self._market_set = set(self.markets)
        self._finished: set[str] = set()  # streamed markets that closed or settled
        self._write_books = write_books
        self._stats = stats
        self._coalescer = coalescer
        self._writer = writer
        self._backfill = backfill
        self._reporter = reporter
        self._desired = desired
        self._poll_interval = poll_interval
        self._markets_added = markets_added
        # The latest state of each market, re-sent whole when the store lost it (resend_state).
        self._books: dict[str, tuple[Any, float]] = {}
        self._prices: dict[str, tuple[dict[str, Any], float]] = {}
        self._m_events = {
            k: _metrics.MESSAGES.labels(stream=stream_id, kind=k) for k in _EVENT_KINDS
        }

    # -- feed events --------------------------------------------------------------------------

    async def consume(self, feed: FeedLike) -> None:
        """Turn the feed's events into coalescer input until the feed ends."""
        async for event in feed:
            self.on_event(event)

    def on_event(self, ev: Any) -> None:
        """Handle one feed event."""
        now = time.monotonic()
        c = self._coalescer
        if isinstance(ev, FeedState):
            self._backfill.feed_state_changed(ev.state)
            self._reporter.feed_state_changed(ev)
            return
        if isinstance(ev, SequenceGap) and ev.channel == "trade" and not ev.duplicate:
            self._backfill.trade_gap()
        ticker = getattr(ev, "ticker", None)
        if ticker is None or ticker not in self._market_set:
            if isinstance(ev, SequenceGap | ErrorMessage | RecoveryStarted):
                log.info("feed notice", stream=self._stream_id, notice=repr(ev)[:300])
            return  # notices, or a late event of a removed market
        if isinstance(ev, BookUpdated):
            ts = _ms_or_now(ev.book.ts_ms)
            self._books[ticker] = (ev.book, ts)
            c.book(ticker, ev.book, ts, now)
            self._m_events["book"].inc()
        elif isinstance(ev, BookInvalidated):
            c.book_invalid(ticker, now_ms(), now)
            self._m_events["book_invalid"].inc()
        elif isinstance(ev, TickerMessage):
            fields, ts = _ticker_fields(ev), _ms_or_now(ev.ts_ms)
            held = self._prices.get(ticker)
            if held is None or ts >= held[1]:
                merged = {
                    **(held[0] if held else {}),
                    **{k: v for k, v in fields.items() if v is not None},
                }
                self._prices[ticker] = (merged, ts)
            c.price(ticker, fields, ts, now)
            self._m_events["ticker"].inc()
        elif isinstance(ev, TradeMessage):
            entry = _trade_entry(ev)
            self._backfill.trade_seen(ticker, entry["timestamp"])
            c.trade(entry, now)
            self._m_events["trade"].inc()
        elif isinstance(ev, MarketLifecycle):
            status = lifecycle_status(ev, now_ms())
            if status is None:
                return
            c.market_status(ticker, status, now, settlement_of(ev))
            if status in FINISHED:
                self._finished.add(ticker)
            else:
                self._finished.discard(ticker)
            self._stats.finished = len(self._finished)
            self._m_events["status"].inc()
        else:
            self._m_events["other"].inc()
            return
        self._stats.events += 1
        self._stats.last_message_at = now_ms()
        self._writer.wake()

    def resend_state(self) -> None:
        """Queue every market's current book and price again: the store marked them stale
        (its lease lapsed, or it restarted) and only a write makes them live again."""
        now = time.monotonic()
        for ticker in self.markets:
            book = self._books.get(ticker)
            if book is not None and self._write_books and book[0].valid:
                self._coalescer.book(ticker, book[0], book[1], now)
            price = self._prices.get(ticker)
            if price is not None:
                self._coalescer.price(ticker, price[0], price[1], now)
        self._writer.wake()

    def invalidate_books(self, tickers: list[str]) -> None:
        """Mark these books unservable in the store until fresh snapshots arrive."""
        if not self._write_books:
            return
        now = time.monotonic()
        ts = now_ms()
        for t in tickers:
            self._coalescer.book_invalid(t, ts, now)
        if tickers:
            self._writer.wake()

    # -- the desired market set ---------------------------------------------------------------

    async def follow_markets(self, feed: FeedLike) -> None:
        """Poll the desired market set every ``poll_interval`` and apply its changes."""
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
                        "desired markets unavailable", stream=self._stream_id, error=str(exc)[:200]
                    )
                continue
            failures = 0
            if desired.version != self._stats.markets_version:
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
            self.invalidate_books(added)  # an old book of this market may sit in the store
            await feed.add_markets(added)
            self._markets_added(added)
        if removed:
            await feed.remove_markets(removed)
            self._coalescer.forget(set(removed))
            for m in removed:
                self._books.pop(m, None)
                self._prices.pop(m, None)
            self.invalidate_books(removed)
        self._stats.markets_version = desired.version
        self._stats.markets = len(wanted)
        self._finished &= self._market_set
        self._stats.finished = len(self._finished)
        _metrics.SUBSCRIBED_MARKETS.labels(stream=self._stream_id).set(len(wanted))
        log.info(
            "markets changed",
            stream=self._stream_id,
            added=len(added),
            removed=len(removed),
            version=desired.version,
        )


def _ms_or_now(ts: int | float | None) -> float:
    return float(ts) if ts else now_ms()


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
