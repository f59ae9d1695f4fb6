"""Parsing of the write batches (docs/interfaces.md §5) into typed updates.

The batch arrives as plain Convex values from the worker. It is checked here, field by field,
so that a malformed entry is refused with a message naming it (``books[3].bids[0]: ...``)
before the mutation writes anything; the mutation then works on these typed records only.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from marketpulse.marketdata._candles import (
    INTERVALS,
)
from marketpulse.marketdata._leases import MAX_LEASE_MS, MIN_LEASE_MS
from marketpulse.marketdata.limits import BOOK_LEVELS, MAX_TEXT
from marketpulse.marketdata.packed_candles import CANDLE_FIELDS, ROW_BYTES, unpack_rows
from marketpulse.marketdata.packed_levels import check_packed, level_count, pack_levels

__all__ = [
    "BatchError",
    "BookUpdate",
    "MarketInfo",
    "MarketStatusUpdate",
    "ParsedBatch",
    "PriceUpdate",
    "StreamStatus",
    "TradeUpdate",
    "parse_batch",
    "parse_markets",
    "parse_stream_status",
    "refused_entries",
]

T = TypeVar("T")
_MAX_LONG_TEXT = 4096
_BATCH_KEYS = frozenset({"prices", "books", "trades", "markets", "streamId", "leaseMs"})


class BatchError(ValueError):
    """A write batch (or markets / stream status payload) that does not have the documented shape."""


@dataclass(frozen=True, slots=True)
class PriceUpdate:
    """Latest ticker-channel fields of one market; ``None`` means "not sent, keep the stored value"."""

    ticker: str
    ts: float
    price: float | None
    yes_bid: float | None
    yes_ask: float | None
    volume: float | None
    open_interest: float | None


@dataclass(frozen=True, slots=True)
class BookUpdate:
    """Full book of one market (best level first, packed: ``packed_levels``), or a mark that
    it must not be served."""

    ticker: str
    ts: float
    valid: bool
    bids: bytes
    asks: bytes


@dataclass(frozen=True, slots=True)
class TradeUpdate:
    """One executed trade; ``price`` in YES dollars, ``side`` from the taker's view of YES."""

    trade_id: str
    ticker: str
    side: str
    price: float
    size: float
    timestamp: float


@dataclass(frozen=True, slots=True)
class MarketStatusUpdate:
    """A market's new status (``active``, ``closed``, ``settled`` ...)."""

    ticker: str
    status: str
    settlement: dict[str, Any] = field(default_factory=dict)
    """``result``, ``settlementValue`` (dollars) and ``settledAt`` (epoch ms), when sent."""


@dataclass(frozen=True, slots=True)
class ParsedBatch:
    """One ``applyUpdates`` batch, checked.

    ``stream_id`` names the writing stream (its books and prices then live and die with its
    lease); ``lease_ms``, when set, renews that lease (see ``_leases``).
    """

    prices: list[PriceUpdate]
    books: list[BookUpdate]
    trades: list[TradeUpdate]
    markets: list[MarketStatusUpdate]
    stream_id: str | None = None
    lease_ms: float | None = None


@dataclass(frozen=True, slots=True)
class MarketInfo:
    """Market metadata from the exchange's REST API, as ``upsertMarkets`` stores it."""

    ticker: str
    fields: dict[str, Any]


@dataclass(frozen=True, slots=True)
class StreamStatus:
    """One stream's health, as ``reportStreamStatus`` stores it."""

    stream_id: str
    updated_at: float
    fields: dict[str, Any]


def _number(value: Any, where: str) -> float:
    # bool is an int subclass, and a True price is never what the worker meant.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BatchError(f"{where}: expected a number, got {type(value).__name__}")
    result = float(value)
    if not math.isfinite(result):
        raise BatchError(f"{where}: expected a finite number, got {value!r}")
    return result


def _optional_number(entry: dict[str, Any], key: str, where: str) -> float | None:
    value = entry.get(key)
    return None if value is None else _number(value, f"{where}.{key}")


def _text(value: Any, where: str, max_len: int = MAX_TEXT) -> str:
    if not isinstance(value, str):
        raise BatchError(f"{where}: expected a string, got {type(value).__name__}")
    if not value or len(value) > max_len:
        raise BatchError(f"{where}: expected 1 to {max_len} characters, got {len(value)}")
    return value


def _optional_text(entry: dict[str, Any], key: str, where: str) -> str | None:
    value = entry.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > _MAX_LONG_TEXT:
        raise BatchError(f"{where}.{key}: expected a string of at most {_MAX_LONG_TEXT} characters")
    return value


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BatchError(f"{where}: expected an object, got {type(value).__name__}")
    return value


def _array(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list | tuple):
        raise BatchError(f"{where}: expected an array, got {type(value).__name__}")
    return list(value)


def _depth(levels: int, where: str) -> None:
    if levels > BOOK_LEVELS:
        raise BatchError(f"{where}: at most {BOOK_LEVELS} levels, got {levels}")


def _levels(value: Any, where: str) -> bytes:
    if isinstance(value, bytes):
        # Packed by the worker (packed_levels.pack_decimal_levels): kept as it came, once checked.
        _depth(level_count(value), where)
        problem = check_packed(value)
        if problem is not None:
            raise BatchError(f"{where}: {problem}")
        return value
    raw = _array(value, where)
    _depth(len(raw), where)
    packed = pack_levels(raw)
    if packed is not None:
        return packed
    # The slow path: names the bad level, or converts what the fast path does not take as is
    # (an Int64 size, a list subclass).
    levels: list[list[float]] = []
    for i, level in enumerate(raw):
        if not isinstance(level, list | tuple) or len(level) != 2:
            raise BatchError(f"{where}[{i}]: expected [price, size]")
        levels.append(
            [_number(level[0], f"{where}[{i}][0]"), _number(level[1], f"{where}[{i}][1]")]
        )
    repacked = pack_levels(levels)
    assert repacked is not None
    return repacked


def _price(entry: dict[str, Any], where: str) -> PriceUpdate:
    return PriceUpdate(
        ticker=_text(entry.get("ticker"), f"{where}.ticker"),
        ts=_number(entry.get("ts"), f"{where}.ts"),
        price=_optional_number(entry, "price", where),
        yes_bid=_optional_number(entry, "yesBid", where),
        yes_ask=_optional_number(entry, "yesAsk", where),
        volume=_optional_number(entry, "volume", where),
        open_interest=_optional_number(entry, "openInterest", where),
    )


def _book(entry: dict[str, Any], where: str) -> BookUpdate:
    valid = entry.get("valid", True)
    if not isinstance(valid, bool):
        raise BatchError(f"{where}.valid: expected a boolean")
    return BookUpdate(
        ticker=_text(entry.get("ticker"), f"{where}.ticker"),
        ts=_number(entry.get("ts"), f"{where}.ts"),
        valid=valid,
        bids=_levels(entry.get("bids"), f"{where}.bids") if valid else b"",
        asks=_levels(entry.get("asks"), f"{where}.asks") if valid else b"",
    )


def _trade(entry: dict[str, Any], where: str) -> TradeUpdate:
    side = entry.get("side")
    if side not in ("buy", "sell"):
        raise BatchError(f"{where}.side: expected 'buy' or 'sell', got {side!r}")
    size = _number(entry.get("size"), f"{where}.size")
    if size < 0:
        raise BatchError(f"{where}.size: expected a size >= 0, got {size}")
    return TradeUpdate(
        trade_id=_text(entry.get("id"), f"{where}.id"),
        ticker=_text(entry.get("ticker"), f"{where}.ticker"),
        side=side,
        price=_number(entry.get("price"), f"{where}.price"),
        size=size,
        timestamp=_number(entry.get("timestamp"), f"{where}.timestamp"),
    )


def _status(entry: dict[str, Any], where: str) -> MarketStatusUpdate:
    settlement: dict[str, Any] = {}
    if entry.get("result") is not None:
        settlement["result"] = _optional_text(entry, "result", where)
    for key in ("settlementValue", "settledAt"):
        if entry.get(key) is not None:
            settlement[key] = _optional_number(entry, key, where)
    return MarketStatusUpdate(
        ticker=_text(entry.get("ticker"), f"{where}.ticker"),
        status=_text(entry.get("status"), f"{where}.status"),
        settlement=settlement,
    )


def parse_batch(batch: Any) -> ParsedBatch:
    """Check an ``applyUpdates`` batch and return its typed updates.

    Args:
        batch: The ``batch`` argument as received (Convex values).

    Returns:
        The batch's prices, books, trades and market statuses, in the order sent.

    Raises:
        BatchError: Naming the first entry and field that do not have the documented shape.
    """
    body = _object(batch, "batch")
    unknown = set(body) - _BATCH_KEYS
    if unknown:
        raise BatchError(f"batch: unknown keys {sorted(unknown)}; expected {sorted(_BATCH_KEYS)}")
    stream_id = body.get("streamId")
    lease_ms = _optional_number(body, "leaseMs", "batch")
    if lease_ms is not None:
        if stream_id is None:
            raise BatchError("batch.leaseMs: a lease needs the batch's streamId")
        if not MIN_LEASE_MS <= lease_ms <= MAX_LEASE_MS:
            raise BatchError(
                f"batch.leaseMs: expected {MIN_LEASE_MS:g} to {MAX_LEASE_MS:g} ms, got {lease_ms:g}"
            )
    return ParsedBatch(
        prices=_entries(body, "prices", _price),
        books=_entries(body, "books", _book),
        trades=_entries(body, "trades", _trade),
        markets=_entries(body, "markets", _status),
        stream_id=None if stream_id is None else _text(stream_id, "batch.streamId"),
        lease_ms=lease_ms,
    )


def refused_entries(batch: Any) -> dict[str, dict[int, str]]:
    """Every entry of an ``applyUpdates`` batch that :func:`parse_batch` refuses, and why.

    A writer whose batch was refused drops these and sends the rest again: one bad update must
    not cost the good ones batched beside it.

    Returns:
        ``{key: {index: reason}}`` for ``prices``, ``books``, ``trades`` and ``markets``; empty
        when no entry on its own is refused (the batch's own fields, or a rule this copy of the
        check does not know, refused it).
    """
    if not isinstance(batch, dict):
        return {}
    refused: dict[str, dict[int, str]] = {}
    for key, parse in _ENTRY_PARSERS.items():
        entries = batch.get(key)
        if not isinstance(entries, list):
            continue
        for i, entry in enumerate(entries):
            where = f"{key}[{i}]"
            try:
                parse(_object(entry, where), where)
            except BatchError as exc:
                refused.setdefault(key, {})[i] = str(exc)
    return refused


def _entries(body: dict[str, Any], key: str, parse: Callable[[dict[str, Any], str], T]) -> list[T]:
    out: list[T] = []
    for i, entry in enumerate(_array(body.get(key), key)):
        where = f"{key}[{i}]"
        out.append(parse(_object(entry, where), where))
    return out


_ENTRY_PARSERS: dict[str, Callable[[dict[str, Any], str], object]] = {
    "prices": _price,
    "books": _book,
    "trades": _trade,
    "markets": _status,
}

_MARKET_TEXT = ("eventTicker", "seriesTicker", "title", "subtitle", "result")
_MARKET_NUMBERS = (
    "settlementValue",
    "settledAt",
    "closeTime",
    "previousPrice",
    "lastPrice",
    "yesBid",
    "yesAsk",
    "volume",
    "openInterest",
)


CandleRows = tuple[str, str, list[tuple[float, ...]]]
"""``(ticker, interval, rows)``: the exchange's candles of one market and interval, each row
``(start, open, high, low, close, volume)`` of a complete past interval."""


def _interval(value: Any, where: str) -> str:
    interval = _text(value, where)
    if interval not in INTERVALS:
        raise BatchError(f"{where}: one of {sorted(INTERVALS)}")
    return interval


def parse_candles(candles: Any) -> list[CandleRows]:
    """Check ``upsertCandles``' list of exchange candles (one object per candle).

    Raises:
        BatchError: Naming the first entry and field that do not have the documented shape.
    """
    groups: dict[tuple[str, str], list[tuple[float, ...]]] = {}
    for i, raw in enumerate(_array(candles, "candles")):
        where = f"candles[{i}]"
        entry = _object(raw, where)
        interval = _interval(entry.get("interval"), f"{where}.interval")
        ticker = _text(entry.get("ticker"), f"{where}.ticker")
        row = tuple(_number(entry.get(k), f"{where}.{k}") for k in CANDLE_FIELDS)
        groups.setdefault((ticker, interval), []).append(row)
    return [(t, i, rows) for (t, i), rows in groups.items()]


def parse_packed_candles(packed: Any) -> list[CandleRows]:
    """Check ``upsertCandles``' packed form: ``{"ticker", "interval", "rows"}`` objects whose
    ``rows`` are :func:`~marketpulse.marketdata._candles.pack_rows` bytes.

    A day of minutes is 1,440 candles a market: packed, the store checks and decodes them
    without a JSON object (and its eight keys) per candle.

    Raises:
        BatchError: Naming the first entry that does not have the documented shape.
    """
    out: list[CandleRows] = []
    for i, raw in enumerate(_array(packed, "packed")):
        where = f"packed[{i}]"
        entry = _object(raw, where)
        interval = _interval(entry.get("interval"), f"{where}.interval")
        ticker = _text(entry.get("ticker"), f"{where}.ticker")
        blob = entry.get("rows")
        if not isinstance(blob, bytes) or len(blob) % ROW_BYTES:
            raise BatchError(
                f"{where}.rows: expected bytes, {ROW_BYTES} a candle "
                f"({', '.join(CANDLE_FIELDS)} as little-endian float64)"
            )
        rows = unpack_rows(blob)
        if not all(map(math.isfinite, itertools.chain.from_iterable(rows))):
            raise BatchError(f"{where}.rows: expected finite numbers")
        out.append((ticker, interval, rows))
    return out


def parse_markets(markets: Any) -> list[MarketInfo]:
    """Check ``upsertMarkets``' list of market metadata.

    Only the keys sent are returned in ``fields``, so an upsert never blanks what it omits.

    Raises:
        BatchError: Naming the first entry and field that do not have the documented shape.
    """
    result: list[MarketInfo] = []
    for i, raw in enumerate(_array(markets, "markets")):
        where = f"markets[{i}]"
        entry = _object(raw, where)
        fields: dict[str, Any] = {}
        for key in _MARKET_TEXT:
            if key in entry:
                fields[key] = _optional_text(entry, key, where)
        for key in _MARKET_NUMBERS:
            if key in entry:
                fields[key] = _optional_number(entry, key, where)
        # REST may send an empty status; it says nothing, so the stored one is kept.
        if entry.get("status"):
            fields["status"] = _text(entry["status"], f"{where}.status")
        result.append(
            MarketInfo(ticker=_text(entry.get("ticker"), f"{where}.ticker"), fields=fields)
        )
    return result


_STREAM_NUMBERS = ("messagesPerSecond", "lastMessageAt", "reconnects", "gaps", "lagMs")


def parse_stream_status(status: Any) -> StreamStatus:
    """Check ``reportStreamStatus``' payload.

    Raises:
        BatchError: Naming the field that does not have the documented shape.
    """
    entry = _object(status, "status")
    state = entry.get("state")
    fields: dict[str, Any] = {
        "state": "unknown" if state == "" else _text(state, "status.state"),
    }
    for key in _STREAM_NUMBERS:
        fields[key] = _optional_number(entry, key, "status")
    markets = _array(entry.get("markets"), "status.markets")
    fields["markets"] = [_text(m, f"status.markets[{i}]") for i, m in enumerate(markets)]
    return StreamStatus(
        stream_id=_text(entry.get("streamId"), "status.streamId"),
        updated_at=_number(entry.get("updatedAt"), "status.updatedAt"),
        fields=fields,
    )
