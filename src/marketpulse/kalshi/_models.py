"""Typed REST v2 results (pydantic), tolerant of unknown and missing fields.

Each model reads the current fields (``*_dollars`` price strings, ``*_fp`` size strings) and
falls back to the transition-era integer cents and counts (docs/protocols/kalshi.md §3.3, §5) when those are all a
payload has. Unknown fields are kept (``extra="allow"``) so nothing the exchange adds is lost.
"""

from __future__ import annotations

import math
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from marketpulse.kalshi._messages import dec
from marketpulse.kalshi.book import Level, OrderBook

__all__ = [
    "CandleSide",
    "Candlestick",
    "Event",
    "EventsPage",
    "Market",
    "MarketsPage",
    "Orderbook",
    "PriceRange",
    "RestTrade",
    "Series",
    "TradesPage",
]

_CENT = Decimal("0.01")


def _price(data: dict[str, Any], name: str) -> None:
    """Set ``data[name]`` to dollars from ``name_dollars``, else from legacy integer cents
    (the ``_dollars`` key is consumed: the typed field holds it, and it is not an unknown one)."""
    got = _side_price(data, name)
    data.pop(f"{name}_dollars", None)
    if got is not None:
        data[name] = got
    elif data.get(name) is not None and not isinstance(data[name], Decimal):
        data[name] = None


def _size(data: dict[str, Any], name: str) -> None:
    """Set ``data[name]`` to contracts from ``name_fp`` (consumed), else from the legacy count."""
    v = data.pop(f"{name}_fp", None)
    if v is not None:
        data[name] = dec(v)
    elif data.get(name) is not None:
        data[name] = dec(data[name])


class _Model(BaseModel):
    """Base: unknown fields kept; null lists and strings read as empty (``_empty_*``)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, arbitrary_types_allowed=True)
    _empty_lists: ClassVar[tuple[str, ...]] = ()
    _empty_strings: ClassVar[tuple[str, ...]] = ()

    @property
    def unknown_fields(self) -> list[str]:
        """Fields the exchange sent that this model does not declare (kept as sent)."""
        return sorted(self.model_extra or ())

    @model_validator(mode="before")
    @classmethod
    def _nulls_as_empty(cls, data: Any) -> Any:
        if isinstance(data, dict) and (cls._empty_lists or cls._empty_strings):
            data = dict(data)
            for key in cls._empty_lists:
                data[key] = data.get(key) or []
            for key in cls._empty_strings:
                data[key] = data.get(key) or ""
        return data


class PriceRange(_Model):
    """One band of a market's price grid."""

    start: Decimal
    end: Decimal
    step: Decimal


_MARKET_PRICES = (
    "last_price",
    "yes_bid",
    "yes_ask",
    "no_bid",
    "no_ask",
    "previous_price",
    "previous_yes_bid",
    "previous_yes_ask",
    "notional_value",
    "settlement_value",
    "liquidity",
)
_MARKET_SIZES = ("volume", "volume_24h", "open_interest", "yes_bid_size", "yes_ask_size")


class Market(_Model):
    """A market (``GET /markets``, ``GET /markets/{ticker}``). Prices in dollars, sizes in
    contracts; ``previous_price`` is the last YES trade a day ago (for 24 h change)."""

    ticker: str
    event_ticker: str = ""
    title: str = ""
    subtitle: str = ""
    yes_sub_title: str = ""
    no_sub_title: str = ""
    status: str = ""
    market_type: str = ""
    open_time: datetime | None = None
    close_time: datetime | None = None
    expiration_time: datetime | None = None
    created_time: datetime | None = None
    updated_time: datetime | None = None
    expected_expiration_time: datetime | None = None
    latest_expiration_time: datetime | None = None
    settlement_ts: datetime | None = None
    can_close_early: bool | None = None
    fractional_trading_enabled: bool | None = None
    tick_size: int | None = None
    strike_type: str | None = None
    floor_strike: Decimal | None = None
    cap_strike: Decimal | None = None
    liquidity: Decimal | None = None
    last_price: Decimal | None = None
    yes_bid: Decimal | None = None
    yes_ask: Decimal | None = None
    no_bid: Decimal | None = None
    no_ask: Decimal | None = None
    previous_price: Decimal | None = None
    previous_yes_bid: Decimal | None = None
    previous_yes_ask: Decimal | None = None
    notional_value: Decimal | None = None
    settlement_value: Decimal | None = None
    volume: Decimal | None = None
    volume_24h: Decimal | None = None
    open_interest: Decimal | None = None
    yes_bid_size: Decimal | None = None
    yes_ask_size: Decimal | None = None
    price_level_structure: str | None = None
    price_ranges: list[PriceRange] = Field(default_factory=list)
    result: str = ""
    _empty_lists = ("price_ranges",)

    @model_validator(mode="before")
    @classmethod
    def _normalise(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for name in _MARKET_PRICES:
            _price(data, name)
        for name in _MARKET_SIZES:
            _size(data, name)
        for key in ("floor_strike", "cap_strike"):
            if data.get(key) is not None:
                data[key] = dec(data[key])
        for key in _MARKET_TIMES:
            if data.get(key) in ("", None):
                data[key] = None
        return data


_MARKET_TIMES = (
    "open_time",
    "close_time",
    "expiration_time",
    "created_time",
    "updated_time",
    "expected_expiration_time",
    "latest_expiration_time",
    "settlement_ts",
)


class CandleSide(_Model):
    """Open, high, low and close of one series of a candlestick (dollars; None: no trade)."""

    open: Decimal | None = None
    high: Decimal | None = None
    low: Decimal | None = None
    close: Decimal | None = None
    mean: Decimal | None = None
    previous: Decimal | None = None

    @model_validator(mode="before")
    @classmethod
    def _normalise(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for name in ("open", "high", "low", "close", "mean", "previous"):
            _price(data, name)
        return data


class Candlestick(_Model):
    """One period of ``GET .../candlesticks``: its end, the trade prices, the YES bid and ask,
    volume and open interest (contracts)."""

    end_period_ts: int
    price: CandleSide = Field(default_factory=CandleSide)
    yes_bid: CandleSide = Field(default_factory=CandleSide)
    yes_ask: CandleSide = Field(default_factory=CandleSide)
    volume: Decimal | None = None
    open_interest: Decimal | None = None

    @model_validator(mode="before")
    @classmethod
    def _normalise(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for name in ("volume", "open_interest"):
            _size(data, name)
        for name in ("price", "yes_bid", "yes_ask"):
            if data.get(name) is None:
                data.pop(name, None)
        return data

    @staticmethod
    def trade_row(data: dict[str, Any]) -> tuple[int, float, float, float, float, float] | None:
        """``(end_period_ts, open, high, low, close, volume)`` of a candle's trade prices as
        floats (the store's numbers), read from its JSON as the model reads it but without
        building the model, nor a Decimal per number where the exchange sent a string (a day of
        minutes of 20 markets is 29,000 candles; a model costs about 100 µs, five Decimals
        about 4 µs). None when the period had no trade or is malformed."""
        side = data.get("price")
        end = data.get("end_period_ts")
        if not isinstance(side, dict) or not isinstance(end, int) or isinstance(end, bool):
            return None
        try:
            o = _side_float(side, "open", "open_dollars")
            h = _side_float(side, "high", "high_dollars")
            lo = _side_float(side, "low", "low_dollars")
            c = _side_float(side, "close", "close_dollars")
            v = data.get("volume_fp")
            if v is None:
                v = data.get("volume")
            volume = 0.0 if v is None else _float(v)
        except ValueError:
            return None
        if o is None or h is None or lo is None or c is None:
            return None
        return end, o, h, lo, c, volume


_OHLC = ("open", "high", "low", "close")


def _float(value: Any) -> float:
    """:func:`dec` as a float: the same number (both round the decimal text once), cheaper
    for the strings the exchange sends.

    Raises:
        ValueError: Not a finite number.
    """
    if type(value) is str:
        f = float(value)
        if not math.isfinite(f):
            raise ValueError(f"not a finite decimal: {value!r}")
        return f
    return float(dec(value))


def _side_float(side: dict[str, Any], name: str, key: str) -> float | None:
    """:func:`_side_price` as a float."""
    v = side.get(key)
    if v is not None:
        return _float(v)
    price = _side_price(side, name)
    return None if price is None else float(price)


def _side_price(side: dict[str, Any], name: str) -> Decimal | None:
    """Dollars of ``name`` in ``side``: ``name_dollars``, else legacy integer cents, else None."""
    v = side.get(f"{name}_dollars")
    if v is not None:
        return dec(v)
    legacy = side.get(name)
    if isinstance(legacy, int | float) and not isinstance(legacy, bool):
        return dec(legacy) * _CENT
    return None


class MarketsPage(_Model):
    """One page of ``GET /markets``; an empty ``cursor`` means the last page."""

    markets: list[Market] = Field(default_factory=list)
    cursor: str = ""
    _empty_lists = ("markets",)
    _empty_strings = ("cursor",)


class RestTrade(_Model):
    """A public trade (``GET /markets/trades``). ``taker_side`` is the taker's outcome side."""

    trade_id: str = ""
    ticker: str
    yes_price: Decimal
    no_price: Decimal
    count: Decimal
    taker_side: str | None = None
    taker_book_side: str | None = None
    is_block_trade: bool = False
    created_time: datetime | None = None

    @model_validator(mode="before")
    @classmethod
    def _normalise(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        _price(data, "yes_price")
        _price(data, "no_price")
        if data.get("no_price") is None and data.get("yes_price") is not None:
            data["no_price"] = 1 - data["yes_price"]
        if data.get("yes_price") is None and data.get("no_price") is not None:
            data["yes_price"] = 1 - data["no_price"]
        _size(data, "count")
        data["taker_side"] = data.get("taker_outcome_side") or data.get("taker_side")
        return data


class TradesPage(_Model):
    """One page of ``GET /markets/trades``."""

    trades: list[RestTrade] = Field(default_factory=list)
    cursor: str = ""
    _empty_lists = ("trades",)
    _empty_strings = ("cursor",)


class Event(_Model):
    """An event; ``markets`` is filled with ``with_nested_markets`` (or from the legacy
    top-level ``markets`` of ``GET /events/{ticker}``)."""

    event_ticker: str
    series_ticker: str = ""
    title: str = ""
    sub_title: str = ""
    category: str = ""
    mutually_exclusive: bool = False
    strike_period: str = ""
    markets: list[Market] = Field(default_factory=list)
    _empty_lists = ("markets",)


class EventsPage(_Model):
    """One page of ``GET /events``."""

    events: list[Event] = Field(default_factory=list)
    cursor: str = ""
    _empty_lists = ("events",)
    _empty_strings = ("cursor",)


class Series(_Model):
    """A series (``GET /series``)."""

    ticker: str
    title: str = ""
    category: str = ""
    frequency: str = ""
    tags: list[str] = Field(default_factory=list)
    fee_type: str = ""
    _empty_lists = ("tags",)


class Orderbook(_Model):
    """``GET /markets/{ticker}/orderbook``: YES and NO bids, ascending, in dollars/contracts.

    Reads ``orderbook_fp.{yes,no}_dollars`` (current) or the legacy ``orderbook`` object
    (``yes_dollars`` with integer counts, or ``yes`` in cents); null or omitted sides are empty.
    """

    ticker: str = ""
    yes: list[tuple[Decimal, Decimal]] = Field(default_factory=list)
    no: list[tuple[Decimal, Decimal]] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _normalise(cls, data: Any) -> Any:
        if not isinstance(data, dict) or ("yes" in data and "orderbook" not in data):
            return data
        fp = data.get("orderbook_fp")
        legacy = data.get("orderbook")
        out: dict[str, Any] = {"ticker": data.get("ticker", "")}
        for side in ("yes", "no"):
            levels: list[Level] = []
            if isinstance(fp, dict) and fp.get(f"{side}_dollars") is not None:
                levels = [(dec(p), dec(s)) for p, s in fp[f"{side}_dollars"]]
            elif isinstance(legacy, dict) and legacy.get(f"{side}_dollars") is not None:
                levels = [(dec(p), dec(s)) for p, s in legacy[f"{side}_dollars"]]
            elif isinstance(legacy, dict) and legacy.get(side) is not None:
                levels = [(dec(p) * _CENT, dec(s)) for p, s in legacy[side]]
            out[side] = sorted(levels)
        return out

    def to_book(self, ticker: str | None = None) -> OrderBook:
        """A valid :class:`OrderBook` holding these levels."""
        book = OrderBook(ticker or self.ticker)
        book.apply_snapshot(self.yes, self.no)
        return book
