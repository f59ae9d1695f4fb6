"""History from the first second: a market's candlesticks and recent trades, over REST, when
the stream starts following it.

The exchange's candles of complete past intervals go to ``marketData:upsertCandles``; the
interval in progress is left to the live trades, so the chart continues without a seam. Recent
trades go through ``applyUpdates`` like live ones (the store skips the ids it has), so a traded
market's trade panel is never empty. A failure is logged and the feed goes on.

What the chart shows first is written first: every market's day of 1-minute candles, a few
markets a request, all requests sent at once (they take the first of the REST client's rate
limit, ahead of the trade backfill's per-market requests; the exchange answers one while the
worker reads another and the store writes a third), each answer written as it comes; then the
5-minute candles folded from them, the month of 1-hour candles and the trades. Candles travel
as rows of floats (:data:`~marketpulse.marketdata.packed_candles.CANDLE_FIELDS`) from the
exchange's JSON to the packed mutation argument, never as a dict each. Live batches go first:
each history mutation waits until the live writer is idle
(:meth:`~marketpulse.pipeline._batch_writer.BatchWriter.idle`), so a live batch waits behind one
of them at most.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any, Protocol

import structlog

from marketpulse._clock import now_ms
from marketpulse.kalshi import Candlestick
from marketpulse.marketdata._candles import add_volume
from marketpulse.marketdata.packed_candles import pack_rows
from marketpulse.pipeline._backfill import fetch_trades_since, kept_since
from marketpulse.pipeline._batch_writer import APPLY_UPDATES
from marketpulse.pipeline._store import StoreClient

__all__ = [
    "UPSERT_CANDLES",
    "HistorySource",
    "RestHistory",
    "Row",
    "candle_rows",
    "write_history",
]

log = structlog.get_logger("marketpulse.pipeline.stream")

UPSERT_CANDLES = "marketData:upsertCandles"
MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
RECENT_TRADES_MS = 3_600_000
"""Trades fetched at start: the last hour's (bounded by the backfill's page limit)."""
# Candles per mutation: a market's day of minutes. Packed, they are a few documents to the store
# (60 candles each), so a live batch still waits little behind one. Four markets a mutation
# (one per answer) measured no sooner for all 20 (bench/lifecycle.py, 3.2 s either way) while a
# live batch waited up to 0.6 s behind one instead of 0.4 s.
_CHUNK = 1_500
# Markets per minute-candle request: the first markets' day lands while the rest is fetched and
# read (and Kalshi's batched endpoint answers at most 10,000 candles a request).
_MINUTE_TICKERS = 4
_HOUR_TICKERS = 10

Row = tuple[float, ...]
"""A candle as ``(start, open, high, low, close, volume)``: the packed form's row
(:data:`~marketpulse.marketdata.packed_candles.CANDLE_FIELDS`)."""


class HistorySource(Protocol):
    """Where history comes from (the exchange's REST API; a fake in unit tests)."""

    async def candles(self, tickers: list[str], at_ms: float, minutes: int) -> dict[str, list[Row]]:
        """Each ticker's candles, oldest first: ``minutes`` long (1: the last day, 60: the last
        month), complete as of ``at_ms``."""
        ...

    async def trades(self, tickers: list[str], since_ms: float) -> list[dict[str, Any]]:
        """Trade entries of ``tickers`` since ``since_ms``."""
        ...


def candle_rows(minutes: int, sticks: list[dict[str, Any]], now: float) -> list[Row]:
    """The rows of a market's candlesticks (as the exchange sent them): the complete periods
    that had a trade."""
    out: list[Row] = []
    length = minutes * MINUTE_MS
    for raw in sticks:
        row = Candlestick.trade_row(raw)
        if row is None:
            continue
        end = row[0] * 1000.0
        if end <= now:
            out.append((end - length, *row[1:]))
    return out


def _volume(sizes: Iterable[float]) -> float:
    total = 0.0
    for size in sizes:
        total = add_volume(total, size)
    return total


def _fold(rows: list[Row], length: int) -> list[Row]:
    """Complete longer candles from 1-minute ones (a bucket needs all of its minutes)."""
    buckets: dict[float, list[Row]] = {}
    for r in rows:
        buckets.setdefault(r[0] - r[0] % length, []).append(r)
    per = length // MINUTE_MS
    out: list[Row] = []
    for start, rs in sorted(buckets.items()):
        if len(rs) != per:
            continue
        rs.sort()
        high = max(r[2] for r in rs)
        low = min(r[3] for r in rs)
        out.append((start, rs[0][1], high, low, rs[-1][4], _volume(r[5] for r in rs)))
    return out


def _packed(groups: list[tuple[str, str, list[Row]]]) -> Iterator[list[dict[str, Any]]]:
    """``upsertCandles``' ``packed`` arguments for rows per market and interval, at most
    :data:`_CHUNK` candles each."""
    part: list[dict[str, Any]] = []
    held = 0
    for ticker, interval, rows in groups:
        for k in range(0, len(rows), _CHUNK):
            piece = rows[k : k + _CHUNK]
            if held + len(piece) > _CHUNK and part:
                yield part
                part, held = [], 0
            part.append({"ticker": ticker, "interval": interval, "rows": pack_rows(piece)})
            held += len(piece)
    if part:
        yield part


class RestHistory:
    """:class:`HistorySource` over the exchange's REST client (batched candlesticks endpoint,
    one market at a time where it does not serve; trades as the backfill fetches them)."""

    def __init__(self, rest: Any) -> None:
        self._rest = rest

    async def candles(self, tickers: list[str], at_ms: float, minutes: int) -> dict[str, list[Row]]:
        end = int(at_ms // 1000)
        # A day of minutes and ten to spare (the first may be incomplete); a month of hours.
        span = DAY_MS // 1000 + 600 if minutes == 1 else 31 * DAY_MS // 1000
        raw = await self._rest.get_raw_candlesticks(tickers, end - span, end, minutes)
        return {t: candle_rows(minutes, raw.get(t, []), at_ms) for t in tickers}

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
    retention_ms: float | None = None,
) -> None:
    """Fetch and write the history of ``tickers`` (see the module doc); never raises.

    Args:
        store: Store client (admin).
        source: Where candles and trades come from.
        tickers: Markets just added.
        stream_id: For logs.
        live_idle: Returns once no live batch is waiting; awaited before each mutation.
        retention_ms: The cleanup's retention: no trade older is fetched (a trade cleanup
            deleted would be written and counted again).
    """
    at = now_ms()
    started = asyncio.get_running_loop().time()
    counts = {"minute": 0, "folded": 0, "hour": 0, "trades": 0}
    first_day_s: float | None = None

    def failed(part: str, exc: Exception) -> None:
        # History is nice to have; the feed must go on.
        log.warning("market history failed", part=part, stream=stream_id, error=str(exc)[:300])

    async def write_candles(name: str, groups: list[tuple[str, str, list[Row]]]) -> bool:
        try:
            for packed in _packed(groups):
                await live_idle()
                await store.mutation(UPSERT_CANDLES, {"packed": packed})
        except Exception as exc:
            failed(name, exc)
            return False
        counts[name] += sum(len(rows) for _, _, rows in groups)
        return True

    async def fetch(chunk: list[str], minutes: int, name: str) -> dict[str, list[Row]] | None:
        try:
            return await source.candles(chunk, at, minutes)
        except Exception as exc:
            failed(name, exc)
            return None

    fetches: list[asyncio.Future[dict[str, list[Row]] | None]] = []

    def send(
        minutes: int, per_request: int, name: str
    ) -> list[asyncio.Future[dict[str, list[Row]] | None]]:
        """Every request of ``name`` at once (answers are awaited as they come)."""
        tasks: list[asyncio.Future[dict[str, list[Row]] | None]] = [
            asyncio.ensure_future(fetch(c, minutes, name)) for c in _chunks(tickers, per_request)
        ]
        fetches.extend(tasks)
        return tasks

    folded: list[tuple[str, str, list[Row]]] = []
    day_s = 0.0
    try:
        for answer in asyncio.as_completed(send(1, _MINUTE_TICKERS, "minute")):
            got = await answer
            if not got:
                continue
            if await write_candles("minute", [(t, "1m", rows) for t, rows in got.items()]):
                if first_day_s is None:
                    first_day_s = asyncio.get_running_loop().time() - started
                folded += [(t, "5m", _fold(rows, 5 * MINUTE_MS)) for t, rows in got.items()]
        day_s = asyncio.get_running_loop().time() - started
        await write_candles("folded", folded)
        for answer in asyncio.as_completed(send(60, _HOUR_TICKERS, "hour")):
            got = await answer
            if got:
                await write_candles("hour", [(t, "1h", rows) for t, rows in got.items()])
    finally:
        for f in fetches:
            f.cancel()
    try:
        since = max(at - RECENT_TRADES_MS, kept_since(retention_ms, now_ms()))
        entries = await source.trades(tickers, since)
        for k in range(0, len(entries), _CHUNK):
            await live_idle()
            part = entries[k : k + _CHUNK]
            await store.mutation(APPLY_UPDATES, {"batch": {"trades": part}})
        counts["trades"] = len(entries)
    except Exception as exc:
        failed("trades", exc)
    log.info(
        "market history written",
        stream=stream_id,
        markets=len(tickers),
        first_day_s=None if first_day_s is None else round(first_day_s, 3),
        every_day_s=round(day_s, 3),
        **counts,
    )
