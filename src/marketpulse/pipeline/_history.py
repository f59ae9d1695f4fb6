"""History from the first second: a market's candlesticks and recent trades, over REST, when
the stream starts following it.

The exchange's candles of complete past intervals go to ``marketData:upsertCandles``; the
interval in progress is left to the live trades, so the chart continues without a seam. Recent
trades go through ``applyUpdates`` like live ones (the store skips the ids it has), so a traded
market's trade panel is never empty. A failure is logged and the feed goes on.

What the chart shows first is written first: every market's day of 1-minute candles, a few
markets a request (the next request is under way while one is written); then the 5-minute
candles folded from them, the month of 1-hour candles and the trades. Live batches go first:
each history mutation is small and waits until the live writer is idle
(:meth:`~marketpulse.pipeline._batch_writer.BatchWriter.idle`), so a live batch waits behind one
of them at most.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Protocol

import structlog

from marketpulse._clock import now_ms
from marketpulse.kalshi import Candlestick
from marketpulse.marketdata.packed_candles import CANDLE_FIELDS, pack_rows
from marketpulse.pipeline._backfill import fetch_trades_since
from marketpulse.pipeline._batch_writer import APPLY_UPDATES
from marketpulse.pipeline._store import StoreClient

__all__ = [
    "UPSERT_CANDLES",
    "HistorySource",
    "RestHistory",
    "candle_entries",
    "pack_entries",
    "write_history",
]

log = structlog.get_logger("marketpulse.pipeline.stream")

UPSERT_CANDLES = "marketData:upsertCandles"
MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
RECENT_TRADES_MS = 3_600_000
"""Trades fetched at start: the last hour's (bounded by the backfill's page limit)."""
# Candles per mutation: a market's day of minutes. Packed, they are a few documents to the
# store (60 candles each), so a live batch still waits little behind one; 250 a mutation, when
# each candle was a document, held 20 markets' day back by 20-60 s of round trips and inserts.
_CHUNK = 1_500
# Markets per minute-candle request: the first markets' day lands while the rest is fetched,
# and neither the exchange's answer nor its parsing holds a loop for long.
_MINUTE_TICKERS = 4
_HOUR_TICKERS = 10


class HistorySource(Protocol):
    """Where history comes from (the exchange's REST API; a fake in unit tests)."""

    async def candles(self, tickers: list[str], at_ms: float, minutes: int) -> list[dict[str, Any]]:
        """``upsertCandles`` entries of ``tickers``: ``minutes`` long (1: the last day, 60:
        the last month), complete as of ``at_ms``."""
        ...

    async def trades(self, tickers: list[str], since_ms: float) -> list[dict[str, Any]]:
        """Trade entries of ``tickers`` since ``since_ms``."""
        ...


def candle_entries(
    ticker: str, interval: str, minutes: int, sticks: list[dict[str, Any]], now: float
) -> list[dict[str, Any]]:
    """``upsertCandles`` entries of a market's candlesticks (as the exchange sent them): the
    complete periods that had a trade."""
    out = []
    length = minutes * MINUTE_MS
    for raw in sticks:
        row = Candlestick.trade_ohlcv(raw)
        if row is None:
            continue
        end_ts, o, h, lo, c, volume = row
        end = end_ts * 1000.0
        if end > now:
            continue
        out.append(
            {
                "ticker": ticker,
                "interval": interval,
                "start": end - length,
                "open": float(o),
                "high": float(h),
                "low": float(lo),
                "close": float(c),
                "volume": float(volume),
            }
        )
    return out


def pack_entries(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``upsertCandles``' ``packed`` argument for ``upsertCandles`` entries: bytes of rows per
    market and interval (:mod:`marketpulse.marketdata.packed_candles`)."""
    groups: dict[tuple[str, str], list[tuple[float, ...]]] = {}
    for c in entries:
        row = tuple(float(c[k]) for k in CANDLE_FIELDS)
        groups.setdefault((c["ticker"], c["interval"]), []).append(row)
    return [
        {"ticker": t, "interval": i, "rows": pack_rows(rows)} for (t, i), rows in groups.items()
    ]


def _fold(minutes: list[dict[str, Any]], interval: str, length: int) -> list[dict[str, Any]]:
    """Complete longer candles from 1-minute ones (a bucket needs all of its minutes)."""
    buckets: dict[float, list[dict[str, Any]]] = {}
    for c in minutes:
        buckets.setdefault(c["start"] - c["start"] % length, []).append(c)
    per = length // MINUTE_MS
    out = []
    for start, cs in sorted(buckets.items()):
        if len(cs) != per:
            continue
        cs.sort(key=lambda c: c["start"])
        out.append(
            {
                "ticker": cs[0]["ticker"],
                "interval": interval,
                "start": start,
                "open": cs[0]["open"],
                "high": max(c["high"] for c in cs),
                "low": min(c["low"] for c in cs),
                "close": cs[-1]["close"],
                "volume": sum(c["volume"] for c in cs),
            }
        )
    return out


class RestHistory:
    """:class:`HistorySource` over the exchange's REST client (batched candlesticks endpoint,
    one market at a time where it does not serve; trades as the backfill fetches them)."""

    def __init__(self, rest: Any) -> None:
        self._rest = rest

    async def candles(self, tickers: list[str], at_ms: float, minutes: int) -> list[dict[str, Any]]:
        end = int(at_ms // 1000)
        # A day of minutes and ten to spare (the first may be incomplete); a month of hours.
        span = DAY_MS // 1000 + 600 if minutes == 1 else 31 * DAY_MS // 1000
        raw = await self._rest.get_raw_candlesticks(tickers, end - span, end, minutes)
        interval = "1m" if minutes == 1 else "1h"
        out: list[dict[str, Any]] = []
        for t in tickers:
            out += candle_entries(t, interval, minutes, raw.get(t, []), at_ms)
        return out

    async def trades(self, tickers: list[str], since_ms: float) -> list[dict[str, Any]]:
        return await fetch_trades_since(self._rest, tickers, since_ms)


def _chunks(items: list[str], n: int) -> Iterator[list[str]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


async def write_history(
    store: StoreClient,
    source: HistorySource,
    tickers: list[str],
    stream_id: str,
    live_idle: Callable[[], Awaitable[None]],
) -> None:
    """Fetch and write the history of ``tickers`` (see the module doc); never raises.

    Args:
        store: Store client (admin).
        source: Where candles and trades come from.
        tickers: Markets just added.
        stream_id: For logs.
        live_idle: Returns once no live batch is waiting; awaited before each mutation.
    """

    async def upsert(
        mutation: str, args: Callable[[list[Any]], dict[str, Any]], entries: list[Any]
    ) -> None:
        for k in range(0, len(entries), _CHUNK):
            await live_idle()
            await store.mutation(mutation, args(entries[k : k + _CHUNK]))

    def candles(part: list[Any]) -> dict[str, Any]:
        return {"packed": pack_entries(part)}

    def trade_batch(part: list[Any]) -> dict[str, Any]:
        return {"batch": {"trades": part}}

    at = now_ms()
    folded: list[dict[str, Any]] = []
    counts = {"minute": 0, "folded": 0, "hour": 0, "trades": 0}

    async def step(name: str, run: Callable[[], Awaitable[int]]) -> None:
        try:
            counts[name] += await run()
        except Exception as exc:  # history is nice to have; the feed must go on
            log.warning("market history failed", part=name, stream=stream_id, error=str(exc)[:300])

    # The day of minutes of every market first: the request for the next markets is under way
    # while one's candles are written.
    chunks = list(_chunks(tickers, _MINUTE_TICKERS))
    fetches = [asyncio.ensure_future(source.candles(chunks[0], at, 1))] if chunks else []
    try:
        for i in range(len(chunks)):
            if i + 1 < len(chunks):
                fetches.append(asyncio.ensure_future(source.candles(chunks[i + 1], at, 1)))

            async def minutes(fetch: asyncio.Future[list[dict[str, Any]]] = fetches[i]) -> int:
                ones = await fetch
                await upsert(UPSERT_CANDLES, candles, ones)
                by_ticker: dict[str, list[dict[str, Any]]] = {}
                for c in ones:
                    by_ticker.setdefault(c["ticker"], []).append(c)
                for cs in by_ticker.values():
                    folded.extend(_fold(cs, "5m", 5 * MINUTE_MS))
                return len(ones)

            await step("minute", minutes)
    finally:
        for f in fetches:
            f.cancel()

    async def five() -> int:
        await upsert(UPSERT_CANDLES, candles, folded)
        return len(folded)

    await step("folded", five)
    for chunk in _chunks(tickers, _HOUR_TICKERS):

        async def hours(chunk: list[str] = chunk) -> int:
            entries = await source.candles(chunk, at, 60)
            await upsert(UPSERT_CANDLES, candles, entries)
            return len(entries)

        await step("hour", hours)

    async def trades() -> int:
        entries = await source.trades(tickers, at - RECENT_TRADES_MS)
        await upsert(APPLY_UPDATES, trade_batch, entries)
        return len(entries)

    await step("trades", trades)
    log.info("market history written", stream=stream_id, markets=len(tickers), **counts)
