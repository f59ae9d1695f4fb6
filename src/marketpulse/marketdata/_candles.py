"""OHLCV candles built from trades: bucketing, merging a trade in, and filling quiet intervals.

Pure functions over plain dicts, so the write path and the read path (``getCandles``) share one
definition of a candle. A market's newest candle of each interval (the one its trades merge
into) lives in one ``openCandles`` document per ticker, packed (:func:`pack_open`); older ones
are one ``candles`` document each. A trade then costs one document's read and write for its
three intervals instead of three of each, which was most of a trade's cost to the store.

The exchange's candles (a market's history) are stored apart, :data:`CHUNK_CANDLES` intervals
to a document, packed (:mod:`marketpulse.marketdata.packed_candles`): a day of minutes is 25 documents, not 1,440. Each
document costs the store an insert, index entries, a value check and a save, which made a day
of history for 20 markets take 20-60 s; per candle, packed, it is a few bytes of a blob.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from marketpulse.marketdata.packed_candles import pack_rows, unpack_rows

__all__ = [
    "CHUNK_CANDLES",
    "INTERVALS",
    "OPEN_FIELDS",
    "VOLUME_DECIMALS",
    "Interval",
    "add_volume",
    "bucket_start",
    "chunk_start",
    "fill_gaps",
    "history_candle",
    "merge_history",
    "merge_trade",
    "new_candle",
    "pack_open",
    "unpack_open",
]

Interval = Literal["1m", "5m", "1h"]

INTERVALS: dict[str, int] = {"1m": 60_000, "5m": 300_000, "1h": 3_600_000}
"""Interval name -> length in ms."""


CHUNK_CANDLES = 60
"""Exchange candles per stored history document: an hour of minutes, a month of hours in 13."""


def chunk_start(start: float, interval_ms: int) -> float:
    """Start (epoch ms) of the history document holding the candle that starts at ``start``."""
    return bucket_start(start, interval_ms * CHUNK_CANDLES)


def merge_history(blob: bytes, rows: Iterable[tuple[float, ...]]) -> tuple[bytes, int, int]:
    """A history blob (:func:`~marketpulse.marketdata.packed_candles.pack_rows`) with ``rows`` written in: the exchange's candle of an interval replaces
    the one held. Returns the new blob and how many rows were new and how many changed."""
    held = {row[0]: row for row in unpack_rows(blob)}
    added = changed = 0
    for row in rows:
        old = held.get(row[0])
        if old is None:
            added += 1
        elif old != row:
            changed += 1
        held[row[0]] = row
    return pack_rows(held.values()), added, changed


def history_candle(row: tuple[float, ...]) -> dict[str, Any]:
    """The public candle of a history row (the exchange's candles carry no trade count)."""
    start, o, h, lo, c, volume = row
    return {
        "start": start,
        "open": o,
        "high": h,
        "low": lo,
        "close": c,
        "volume": volume,
        "trades": 0.0,
    }


def bucket_start(timestamp: float, interval_ms: int) -> float:
    """Start (epoch ms) of the interval holding ``timestamp``."""
    return float(timestamp - timestamp % interval_ms)


def new_candle(
    ticker: str, interval: str, start: float, price: float, size: float, ts: float
) -> dict[str, Any]:
    """The stored candle for the first trade seen in an interval.

    ``openTs``/``closeTs`` keep the timestamps of the trades that set open and close, so a trade
    arriving late (out of order) still lands in the right place.
    """
    return {
        "ticker": ticker,
        "interval": interval,
        "start": start,
        "open": price,
        "high": price,
        "low": price,
        "close": price,
        "volume": size,
        "trades": 1.0,
        "openTs": ts,
        "closeTs": ts,
    }


VOLUME_DECIMALS = 8
"""A candle's volume, a sum of sizes, is rounded to this many decimals: sizes are the
exchange's fixed-point counts (two decimals on Kalshi), and a float sum drifts off the exact
total (``2871.6500000000005`` contracts for the exchange's ``2871.65``)."""


def add_volume(total: float, size: float) -> float:
    """``total + size`` as the exact decimal sum of fixed-point sizes (:data:`VOLUME_DECIMALS`)."""
    return round(total + size, VOLUME_DECIMALS)


def merge_trade(candle: dict[str, Any], price: float, size: float, ts: float) -> None:
    """Fold one more trade of the candle's interval into it (in place)."""
    candle["high"] = max(candle["high"], price)
    candle["low"] = min(candle["low"], price)
    candle["volume"] = add_volume(candle["volume"], size)
    candle["trades"] = candle["trades"] + 1.0
    if ts < candle["openTs"]:
        candle["open"] = price
        candle["openTs"] = ts
    # Ties go to the later arrival: trades of one timestamp arrive in execution order.
    if ts >= candle["closeTs"]:
        candle["close"] = price
        candle["closeTs"] = ts


OPEN_FIELDS = ("start", "open", "high", "low", "close", "volume", "trades", "openTs", "closeTs")
"""The numbers of a built candle, in the order :func:`pack_open` writes them."""

_OPEN = struct.Struct("<" + "d" * len(OPEN_FIELDS) * len(INTERVALS))


def pack_open(candles: Mapping[str, dict[str, Any]]) -> bytes:
    """A market's newest candle of every interval (:func:`new_candle`'s form), as bytes.

    A document of bytes is flat: the store neither deep-copies it on each read nor walks
    three nested objects to check and save it.

    Raises:
        KeyError: An interval has no candle (a trade makes all three at once).
    """
    return _OPEN.pack(*(candles[i][f] for i in INTERVALS for f in OPEN_FIELDS))


def unpack_open(ticker: str, blob: bytes) -> dict[str, dict[str, Any]]:
    """``interval -> candle`` of :func:`pack_open`'s bytes, each in :func:`new_candle`'s form."""
    numbers = _OPEN.unpack(blob)
    width = len(OPEN_FIELDS)
    out: dict[str, dict[str, Any]] = {}
    for n, interval in enumerate(INTERVALS):
        candle: dict[str, Any] = {"ticker": ticker, "interval": interval}
        candle.update(zip(OPEN_FIELDS, numbers[n * width : (n + 1) * width], strict=True))
        out[interval] = candle
    return out


def _public(candle: dict[str, Any]) -> dict[str, Any]:
    return {
        "start": float(candle["start"]),
        "open": float(candle["open"]),
        "high": float(candle["high"]),
        "low": float(candle["low"]),
        "close": float(candle["close"]),
        "volume": float(candle["volume"]),
        "trades": float(candle["trades"]),
    }


def _flat(start: float, price: float) -> dict[str, Any]:
    return {
        "start": start,
        "open": price,
        "high": price,
        "low": price,
        "close": price,
        "volume": 0.0,
        "trades": 0.0,
    }


def fill_gaps(
    newest_first: Sequence[dict[str, Any]],
    interval_ms: int,
    limit: int,
    until: float | None = None,
) -> list[dict[str, Any]]:
    """The last ``limit`` candles, oldest first, with quiet intervals filled.

    An interval with no trade between two stored candles becomes a flat candle at the previous
    close with zero volume, as charts expect (the last price carries over).

    Args:
        newest_first: Stored candles of one ticker and interval, newest first (at most ``limit``).
        interval_ms: The interval length.
        limit: How many candles to return at most.
        until: Also fill the intervals after the newest candle that start before this (epoch
            ms); None: end at the newest candle.

    Returns:
        Public candle dicts (``start``, ``open``, ``high``, ``low``, ``close``, ``volume``,
        ``trades``), oldest first.
    """
    out: list[dict[str, Any]] = []
    if until is not None and newest_first:
        top = float(newest_first[0]["start"])
        close = float(newest_first[0]["close"])
        after = math.ceil((until - top) / interval_ms) - 1  # quiet intervals after the newest
        out.extend(
            _flat(top + k * interval_ms, close) for k in range(after, max(after - limit, 0), -1)
        )
    for i, stored in enumerate(newest_first):
        if len(out) >= limit:
            break
        out.append(_public(stored))
        if i + 1 < len(newest_first):
            older = newest_first[i + 1]
            start = float(stored["start"]) - interval_ms
            while start > float(older["start"]) and len(out) < limit:
                out.append(_flat(start, float(older["close"])))
                start -= interval_ms
    out.reverse()
    return out
