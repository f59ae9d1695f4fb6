"""Trades the feed missed, fetched over REST: after a reconnect, and after a trade-channel gap.

A reconnect or a seq gap resnapshots the books, so books heal by themselves; trades do not: a
trade sent while the socket was down, or swallowed by a gap, is gone from the stream. The
stream's :class:`TradeBackfill` then asks the REST API for each market's trades since the
newest one already held, with a margin, and hands them to the coalescer like live ones. "Held"
is per market: at an activity attempt's start, the newest trade the store holds (a crashed
attempt remembers nothing, and the store is the record); at a reconnect or a gap, the newest
trade this attempt received (written or about to be). Never "since the failure was noticed":
a silent feed is noticed seconds after it went silent. The store keys trades by id, so the ones
already held are skipped there.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import structlog

from marketpulse._clock import now_ms
from marketpulse.kalshi import RestTrade
from marketpulse.pipeline._coalesce import Coalescer

__all__ = [
    "MARGIN_MS",
    "RETENTION_MARGIN_MS",
    "SETTLE_S",
    "NewestStored",
    "TradeBackfill",
    "TradesSince",
    "fetch_trades_since",
    "kept_since",
    "rest_trade_entry",
    "trade_entry",
]

log = structlog.get_logger("marketpulse.pipeline.stream")

TradesSince = Callable[[list[str], float], Awaitable[list[dict[str, Any]]]]
"""Fetches the trade entries of tickers since an epoch-ms time (:func:`fetch_trades_since`)."""

MARGIN_MS = 2_000
"""Fetched before the outage's start: the last frames before a drop may be lost too."""

MAX_PAGES = 20
"""Per market and outage (100 trades a page): a long outage is not replayed in full."""

SETTLE_S = 2.0
"""A connection's backfill runs again this long after it came up: a trade made after the first
fetch but before the new trade subscription took effect is in neither the fetch nor the stream."""

RETENTION_MARGIN_MS = MARGIN_MS + 1_000
"""Kept clear of the retention cutoff: a fetch asks from ``MARGIN_MS`` earlier, rounded down to
a whole second."""


def kept_since(retention_ms: float | None, now: float) -> float:
    """The oldest trade time a fetch may ask for: none the cleanup (``retention_ms``) may have
    deleted. The store skips a trade id it holds, but not one cleanup deleted: such a trade
    fetched again is a new trade to it, listed again and counted again in the candles kept
    longer than trades (hourly ones, a month). None: no bound."""
    if retention_ms is None:
        return float("-inf")
    return now - retention_ms + RETENTION_MARGIN_MS


NewestStored = Callable[[list[str]], Awaitable[dict[str, float | None]]]
"""The timestamp of each ticker's newest trade in the store (None: it holds none)."""


def trade_entry(
    trade_id: str, ticker: str, taker_side: str | None, yes_price: Any, count: Any, ts_ms: float
) -> dict[str, Any]:
    """An ``applyUpdates`` trade entry (docs/interfaces.md §5), from the feed or from REST."""
    return {
        "id": trade_id,
        "ticker": ticker,
        # The taker bought YES ("buy") or bought NO, i.e. sold YES ("sell").
        "side": "sell" if taker_side == "no" else "buy",
        "price": float(yes_price),
        "size": float(count),
        "timestamp": ts_ms,
    }


def rest_trade_entry(trade: RestTrade) -> dict[str, Any] | None:
    """A REST trade as a trade entry; None without an id or a time."""
    if not trade.trade_id or trade.created_time is None:
        return None
    ts_ms = trade.created_time.timestamp() * 1000.0
    return trade_entry(
        trade.trade_id, trade.ticker, trade.taker_side, trade.yes_price, trade.count, ts_ms
    )


async def fetch_trades_since(
    rest: Any, tickers: list[str], since_ms: float
) -> list[dict[str, Any]]:
    """Every trade of ``tickers`` at or after ``since_ms - MARGIN_MS``, as trade entries,
    each market's oldest first: the order they were made, as the feed delivers them.

    The REST API pages newest first, and trades of one order share a timestamp; the store
    takes the later of two such trades for a candle's close (and the first for its open), so
    entries handed over newest first made the oldest trade of a candle's last instant its
    close."""
    # Kalshi's min_ts is whole Unix seconds: round down, never miss the first second.
    min_ts = max(0, int((since_ms - MARGIN_MS) // 1000))

    async def one(ticker: str) -> list[dict[str, Any]]:
        out = []
        async for trade in rest.iter_trades(max_pages=MAX_PAGES, ticker=ticker, min_ts=min_ts):
            entry = rest_trade_entry(trade)
            if entry is not None:
                out.append(entry)
        out.reverse()
        return out

    pages = await asyncio.gather(*(one(t) for t in tickers))
    return [entry for page in pages for entry in page]


class TradeBackfill:
    """Recovers the trades the feed missed, in the background, into the coalescer.

    At the attempt's start (:meth:`start_from_store`), each market's trades after the newest the
    store holds; after a reconnect or a gap on the trade channel, each market's trades after the
    newest this attempt received. Requests made while a fetch runs merge into ONE follow-up
    from the earliest time asked per market: a burst of gaps costs at most two rounds of REST
    calls, not one round per gap.

    Args:
        stream_id: Stream id for logs.
        trades_since: The REST fetch; None disables the backfill.
        enabled: Whether trades are streamed at all.
        coalescer: Where the fetched trades go.
        markets: Returns the markets streamed now (trades of others are dropped).
        wake: Called after trades were put in the coalescer.
        spawn: Runs a coroutine in the background; returns its future.
        retention_ms: The cleanup's retention: no fetch asks for trades it may have deleted
            (:func:`kept_since`); None: no bound.
    """

    def __init__(
        self,
        *,
        stream_id: str,
        trades_since: TradesSince | None,
        enabled: bool,
        coalescer: Coalescer,
        markets: Callable[[], Sequence[str]],
        wake: Callable[[], None],
        spawn: Callable[[Awaitable[Any]], asyncio.Future[Any]],
        retention_ms: float | None = None,
    ) -> None:
        self._stream_id = stream_id
        self._retention_ms = retention_ms
        self._trades_since = trades_since if enabled else None
        self._coalescer = coalescer
        self._markets = markets
        self._wake = wake
        self._spawn = spawn
        self._connected_once = False
        self._down = False
        self._newest: dict[str, float] = {}  # per market: the newest trade held (ms)
        self._at_connect: dict[str, float] | None = None  # the start's fetch, for its follow-up
        self._pending: dict[str, float] = {}  # per market: the earliest time a queued fetch needs
        self._running: asyncio.Future[Any] | None = None
        self.fetches = 0
        """Backfill rounds run (each one REST fetch per market asked)."""

    def trade_seen(self, ticker: str, ts_ms: float) -> None:
        """The feed delivered a trade of ``ticker`` stamped ``ts_ms``."""
        if ts_ms > self._newest.get(ticker, float("-inf")):
            self._newest[ticker] = ts_ms

    def _since_newest(self, fallback_ms: float) -> dict[str, float]:
        return {t: self._newest.get(t, fallback_ms) for t in self._markets()}

    async def start_from_store(self, newest_stored: NewestStored | None) -> None:
        """At the attempt's start: fetch each market's trades after the store's newest one.

        A market the store holds no trade of is fetched from the exchange's oldest kept trade
        (bounded by ``MAX_PAGES``), never from before the retention (``retention_ms``). If the
        store cannot say, the first reconnect or gap asks again from what this attempt saw.
        """
        if self._trades_since is None or newest_stored is None:
            return
        tickers = list(self._markets())
        try:
            newest = await newest_stored(tickers)
        except Exception as exc:
            log.warning(
                "newest stored trades unavailable; no start backfill",
                stream=self._stream_id,
                error=str(exc)[:300],
            )
            return
        for ticker in tickers:
            ts = newest.get(ticker)
            self.trade_seen(ticker, ts if ts is not None else float(MARGIN_MS))
        self._at_connect = self._since_newest(float(MARGIN_MS))
        self._request(self._at_connect)

    def trade_gap(self) -> None:
        """A gap on the trade channel: trades have no snapshot, so fetch what it swallowed."""
        self._request(self._since_newest(now_ms()))

    def feed_state_changed(self, state: str) -> None:
        """The feed's connection state changed: a reconnect fetches what the outage lost, now
        and again ``SETTLE_S`` later (the start's fetch gets that follow-up too)."""
        if state == "connected":
            since = self._since_newest(now_ms()) if self._down else self._at_connect
            self._at_connect = None
            if since:
                if self._down:
                    self._request(since)
                self._spawn(self._settled(since))
            self._connected_once, self._down = True, False
        elif self._connected_once:
            self._down = True

    async def _settled(self, since: dict[str, float]) -> None:
        await asyncio.sleep(SETTLE_S)
        self._request(since)

    def request(self, since_ms: float) -> None:
        """Fetch every market's trades made since ``since_ms`` (merged with a queued fetch)."""
        self._request({t: since_ms for t in self._markets()})

    def _request(self, since: dict[str, float]) -> None:
        if self._trades_since is None or not since:
            return
        for ticker, ts in since.items():
            self._pending[ticker] = min(ts, self._pending.get(ticker, ts))
        if self._running is None or self._running.done():
            self._running = self._spawn(self._run())

    async def _run(self) -> None:
        while self._pending:
            pending, self._pending = self._pending, {}
            by_since: dict[float, list[str]] = {}
            for ticker, ts in pending.items():
                by_since.setdefault(ts, []).append(ticker)
            self.fetches += 1
            await asyncio.gather(*(self._fetch(t, since) for since, t in by_since.items()))

    async def _fetch(self, tickers: list[str], since_ms: float) -> None:
        if self._trades_since is None or not tickers:
            return
        since_ms = max(since_ms, kept_since(self._retention_ms, now_ms()))
        try:
            entries = await self._trades_since(tickers, since_ms)
        except Exception as exc:  # the live feed goes on; the gap stays logged
            log.warning("trade backfill failed", stream=self._stream_id, error=str(exc)[:300])
            return
        now = time.monotonic()
        wanted = set(self._markets())
        for entry in entries:
            if entry["ticker"] in wanted:
                self._coalescer.trade(entry, now)
        if entries:
            self._wake()
        log.info("trades backfilled", stream=self._stream_id, trades=len(entries))
