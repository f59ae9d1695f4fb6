"""Typed Kalshi WebSocket v2 server messages and their parser (docs/protocols/kalshi.md §3).

Every parse accepts both the current (2026) shapes (``*_dollars`` price strings, ``*_fp`` size
strings, ``ts_ms``) and the transition-era ones that also carried integer cents (docs/protocols/kalshi.md §3.3); a
number where a string is expected is accepted too (docs/protocols/kalshi.md §3.3). Unknown message types
and unknown fields are tolerated: the parser reports them so the core can count them.

Message objects are plain slotted dataclasses, not pydantic models: ``orderbook_delta`` is the
hot path and a pydantic model per delta would cost more than the rest of the work together.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from enum import IntEnum
from typing import Any

from marketpulse.kalshi.book import PriceGrid

__all__ = [
    "ERROR_TEXTS",
    "ErrorCode",
    "ErrorMessage",
    "EventLifecycle",
    "MalformedMessage",
    "MarketLifecycle",
    "OkMessage",
    "OrderbookDelta",
    "OrderbookSnapshot",
    "OtherMessage",
    "ParseError",
    "ServerMessage",
    "SubscribedMessage",
    "TickerMessage",
    "TradeMessage",
    "UnknownMessage",
    "UnsubscribedMessage",
    "parse_message",
]


class ErrorCode(IntEnum):
    """WebSocket error codes (AsyncAPI, current; 6, 16, 17 are retired)."""

    UNABLE_TO_PROCESS = 1
    PARAMS_REQUIRED = 2
    CHANNELS_REQUIRED = 3
    SUBSCRIPTION_IDS_REQUIRED = 4
    UNKNOWN_COMMAND = 5
    ALREADY_SUBSCRIBED = 6
    UNKNOWN_SUBSCRIPTION_ID = 7
    UNKNOWN_CHANNEL = 8
    AUTHENTICATION_REQUIRED = 9
    CHANNEL_ERROR = 10
    INVALID_PARAMETER = 11
    EXACTLY_ONE_SID_REQUIRED = 12
    UNSUPPORTED_ACTION = 13
    MARKET_TICKER_REQUIRED = 14
    ACTION_REQUIRED = 15
    MARKET_NOT_FOUND = 16
    INTERNAL_ERROR = 17
    COMMAND_TIMEOUT = 18
    SHARD_FACTOR_POSITIVE = 19
    SHARD_FACTOR_REQUIRED = 20
    SHARD_KEY_RANGE = 21
    SHARD_FACTOR_MAX = 22
    MATCH_IDS_REQUIRED = 23
    INDEX_IDS_REQUIRED = 24
    SUBSCRIPTION_BUFFER_OVERFLOW = 25
    SUBSCRIPTION_MARKET_LIMIT = 26
    TOO_MANY_REQUESTS = 27
    UNDERLYING_TICKERS_REQUIRED = 28


ERROR_TEXTS: dict[int, str] = {
    1: "Unable to process message",
    2: "Params required",
    3: "Channels required",
    4: "Subscription IDs required",
    5: "Unknown command",
    6: "Already subscribed",
    7: "Unknown subscription ID",
    8: "Unknown channel name",
    9: "Authentication required",
    10: "Channel error",
    11: "Invalid parameter",
    12: "Exactly one subscription ID is required",
    13: "Unsupported action",
    14: "Market Ticker required",
    15: "Action required",
    16: "Market not found",
    17: "Internal error",
    18: "Command timeout",
    19: "shard_factor must be > 0",
    20: "shard_factor is required when shard_key is set",
    21: "shard_key must be >= 0 and < shard_factor",
    22: "shard_factor must be <= 100",
    23: "Match IDs required",
    24: "Index IDs required",
    25: "Subscription buffer overflow",
    26: "Subscription market limit exceeded",
    27: "Too many requests",
    28: "Underlying tickers required",
}
"""The exact ``msg.msg`` Kalshi sends with each error code: its published table (the AsyncAPI
spec and docs.kalshi.com's WebSocket quick start; 6, 16 and 17 are retired). The exchange
adds no detail to the text: what a command got wrong is only in ``code`` and, for markets,
``msg.market_ticker(s)`` (docs/protocols/kalshi.md §3.1)."""


class ParseError(ValueError):
    """A frame is not a valid Kalshi message (bad JSON, missing or ill-typed field)."""


_CENT = Decimal("0.01")
_HUNDRED = Decimal(100)
MAX_QUANTITY = Decimal(10) ** 15
"""Largest contract count, size, volume or delta taken from the exchange. Far above any real
market's, and small enough that sums of them stay exact whole cents in a float64: a larger
value (``1e400`` is a finite Decimal but an infinite float) is a malformed frame, not a book
level or trade the store would then refuse with everything batched beside it."""


def cents_to_dollars(value: Any, name: str) -> Decimal:
    """A legacy integer-cents price in dollars; anything but whole cents in 0..100 is refused.

    The two conventions overlap: ``35`` cents is ``"0.3500"`` dollars, and a dollars value sent
    in a cents field (``0.35``) would read as a third of a cent, a price some markets' grids
    allow. Kalshi's cents fields only ever held whole cents, so a fraction means the frame is in
    the other convention.

    Raises:
        ParseError: Not whole cents in 0..100.
    """
    d = dec(value)
    if d != d.to_integral_value() or not 0 <= d <= _HUNDRED:
        raise ParseError(
            f"{name}={value!r} is not whole cents in 0..100 (a dollars value in a cents field?)"
        )
    return d * _CENT


def dec(value: Any) -> Decimal:
    """A Decimal from a dollar/size string, or from a JSON number (via ``str``: no float noise)."""
    if isinstance(value, str):
        try:
            d = Decimal(value)
        except InvalidOperation:
            raise ParseError(f"not a decimal: {value!r}") from None
        if not d.is_finite():
            raise ParseError(f"not a finite decimal: {value!r}")
        return d
    if isinstance(value, bool) or value is None:
        raise ParseError(f"not a decimal: {value!r}")
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float) and value == value and abs(value) != float("inf"):
        return Decimal(repr(value))
    raise ParseError(f"not a decimal: {value!r}")


def _opt_dec(msg: dict[str, Any], key: str, legacy_cents: str | None = None) -> Decimal | None:
    """An optional price: dollars from ``key``, else legacy cents from ``legacy_cents``."""
    v = msg.get(key)
    if v is not None:
        d = dec(v)
        if not 0 <= d <= 1:
            raise ParseError(f"{key}={v!r} is not in $0..1 (a cents value in a dollars field?)")
        return d
    if legacy_cents is not None:
        c = msg.get(legacy_cents)
        if c is not None:
            return cents_to_dollars(c, legacy_cents)
    return None


def quantity(value: Any, name: str, *, signed: bool = False) -> Decimal:
    """A contract count, size or (``signed``) size change: a decimal within
    :data:`MAX_QUANTITY`, and not negative unless ``signed``.

    Raises:
        ParseError: Not a decimal, negative where it may not be, or beyond ``MAX_QUANTITY``.
    """
    d = dec(value)
    if abs(d) > MAX_QUANTITY or (d < 0 and not signed):
        raise ParseError(f"{name}={value!r} is not a quantity in 0..{MAX_QUANTITY:.0e}")
    return d


def _opt_size(msg: dict[str, Any], key: str, legacy: str | None = None) -> Decimal | None:
    v = msg.get(key)
    if v is None and legacy is not None:
        v = msg.get(legacy)
    return None if v is None else quantity(v, key)


def _ts_ms(msg: dict[str, Any]) -> int | None:
    """``ts_ms``, else the deprecated ``ts`` (seconds int, or RFC3339 on deltas), else ``time``."""
    v = msg.get("ts_ms")
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    for key in ("ts", "time"):
        v = msg.get(key)
        if isinstance(v, bool) or v is None:
            continue
        if isinstance(v, int | float):
            return int(v * 1000)
        if isinstance(v, str):
            try:
                return int(datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp() * 1000)
            except ValueError:
                continue
    return None


def _str(msg: dict[str, Any], key: str) -> str:
    v = msg.get(key)
    if not isinstance(v, str) or not v:
        raise ParseError(f"missing or non-string {key!r}")
    return v


def _levels(msg: dict[str, Any], side: str) -> list[tuple[Decimal, Decimal]]:
    # Current: yes_dollars_fp [[price str, size str]]; transition: yes_dollars [[price str, int]],
    # and yes [[cents, count]]. Omitted or null means the side is empty (docs/protocols/kalshi.md §3.2).
    # Level order on WS is unconfirmed (docs/protocols/kalshi.md §10.3): kept as sent; OrderBook sorts on read.
    raw = msg.get(f"{side}_dollars_fp")
    cents = False
    if raw is None:
        raw = msg.get(f"{side}_dollars")
    if raw is None:
        raw = msg.get(side)
        cents = True
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ParseError(f"{side} levels are not a list")
    out: list[tuple[Decimal, Decimal]] = []
    for lvl in raw:
        if not isinstance(lvl, list | tuple) or len(lvl) < 2:
            raise ParseError(f"bad {side} level {lvl!r}")
        p = cents_to_dollars(lvl[0], side) if cents else dec(lvl[0])
        out.append((p, quantity(lvl[1], f"{side} level size")))
    return out


# -- message types -----------------------------------------------------------------------------


@dataclass(slots=True)
class SubscribedMessage:
    """``subscribed``: one per channel of a ``subscribe`` command."""

    id: int | None
    channel: str
    sid: int


@dataclass(slots=True)
class UnsubscribedMessage:
    """``unsubscribed``: one per sid of an ``unsubscribe`` command."""

    id: int | None
    sid: int
    seq: int | None


@dataclass(slots=True)
class OkMessage:
    """``ok``: reply to ``update_subscription`` or ``list_subscriptions``.

    Both shapes are accepted (docs/protocols/kalshi.md §2.4, §3.1): ``msg.market_tickers`` or top-level
    ``market_tickers``; ``msg`` as a list of subscriptions or a top-level ``subscriptions``.
    """

    id: int | None
    sid: int | None
    seq: int | None
    market_tickers: list[str] | None = None
    subscriptions: list[tuple[str, int]] | None = None


@dataclass(slots=True)
class ErrorMessage:
    """``error`` with its code (:class:`ErrorCode` when known)."""

    id: int | None
    sid: int | None
    seq: int | None
    code: int
    message: str
    market_tickers: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        """The exchange's wording of the error: ``message`` as sent, else its code's published
        text (:data:`ERROR_TEXTS`), else ``"error <code>"``."""
        return self.message or ERROR_TEXTS.get(self.code, f"error {self.code}")

    @property
    def terminal(self) -> bool:
        """Codes 10 and 25 end the subscription: the client must resubscribe."""
        return self.code in (ErrorCode.CHANNEL_ERROR, ErrorCode.SUBSCRIPTION_BUFFER_OVERFLOW)


@dataclass(slots=True)
class OrderbookSnapshot:
    """``orderbook_snapshot``: the full book of one market (empty sides omitted upstream)."""

    sid: int
    seq: int | None
    ticker: str
    yes: list[tuple[Decimal, Decimal]]
    no: list[tuple[Decimal, Decimal]]
    id: int | None = None
    market_id: str | None = None


@dataclass(slots=True)
class OrderbookDelta:
    """``orderbook_delta``: a signed size change at one price level."""

    sid: int
    seq: int | None
    ticker: str
    side: str
    price: Decimal
    delta: Decimal
    ts_ms: int | None = None
    client_order_id: str | None = None


@dataclass(slots=True)
class TickerMessage:
    """``ticker`` (unsequenced): last price, top of book, volume, open interest."""

    sid: int | None
    ticker: str
    price: Decimal | None
    yes_bid: Decimal | None
    yes_ask: Decimal | None
    yes_bid_size: Decimal | None
    yes_ask_size: Decimal | None
    last_trade_size: Decimal | None
    volume: Decimal | None
    open_interest: Decimal | None
    dollar_volume: int | None
    dollar_open_interest: int | None
    ts_ms: int | None
    market_id: str | None = None


@dataclass(slots=True)
class TradeMessage:
    """``trade``. ``taker_side`` is the taker's outcome side: ``taker_outcome_side``, else the
    deprecated ``taker_side``, else derived from ``taker_book_side`` (bid = yes, ask = no)."""

    sid: int | None
    seq: int | None
    trade_id: str
    ticker: str
    yes_price: Decimal
    no_price: Decimal
    count: Decimal
    taker_side: str | None
    taker_book_side: str | None
    is_block_trade: bool
    ts_ms: int | None


@dataclass(slots=True)
class MarketLifecycle:
    """``market_lifecycle_v2`` (also with ``event_type: metadata_updated``)."""

    sid: int | None
    seq: int | None
    ticker: str
    event_type: str
    fields: dict[str, Any]
    price_ranges: PriceGrid | None = None
    """The market's new ``(start, end, step)`` price ranges when the event carries them (a
    ``price_level_structure_updated``, or ``created``); None when it does not."""

    @property
    def status(self) -> str | None:
        """The market status this event implies (REST vocabulary), or None if unchanged.

        ``is_deactivated``, present when trading is paused or resumed, says which: a resume
        may come as a ``deactivated`` event with the flag false (the AsyncAPI names the flag,
        not the event type, as the answer), and the simulator sends it so.
        """
        paused = self.fields.get("is_deactivated")
        if isinstance(paused, bool):
            return "inactive" if paused else "active"
        if self.event_type == "deactivated":
            return "inactive"
        if self.event_type == "activated":
            return "active"
        return _LIFECYCLE_STATUS.get(self.event_type)


_LIFECYCLE_STATUS = {
    "created": "initialized",
    "determined": "determined",
    "settled": "finalized",
}


@dataclass(slots=True)
class EventLifecycle:
    """``event_lifecycle``: an event was created or changed."""

    sid: int | None
    seq: int | None
    event_ticker: str
    fields: dict[str, Any]


@dataclass(slots=True)
class OtherMessage:
    """A type the spec lists that this client does not interpret (fill, user_order, ...)."""

    type: str
    sid: int | None
    seq: int | None
    raw: dict[str, Any]


@dataclass(slots=True)
class UnknownMessage:
    """A ``type`` the spec does not list: tolerated, counted, passed on."""

    type: str
    sid: int | None
    seq: int | None
    raw: dict[str, Any]


@dataclass(slots=True)
class MalformedMessage:
    """A frame that could not be parsed; reported as an event, never raised."""

    reason: str
    raw: str


ServerMessage = (
    SubscribedMessage
    | UnsubscribedMessage
    | OkMessage
    | ErrorMessage
    | OrderbookSnapshot
    | OrderbookDelta
    | TickerMessage
    | TradeMessage
    | MarketLifecycle
    | EventLifecycle
    | OtherMessage
    | UnknownMessage
)

OTHER_TYPES = frozenset(
    {
        "fill",
        "user_order",
        "market_position",
        "order_group_updates",
        "event_fee_update",
        "multivariate_market_lifecycle",
        "rfq_created",
        "rfq_deleted",
        "quote_created",
        "quote_accepted",
        "quote_executed",
        "cfbenchmarks_value",
        "cfbenchmarks_value_5hz",
        "pyth_value",
    }
)

# Fields each type may carry (current and transition era); anything else is counted as unknown.
KNOWN_ENVELOPE = frozenset({"type", "sid", "seq", "id", "msg"})
KNOWN_FIELDS: dict[str, frozenset[str]] = {
    "orderbook_delta": frozenset(
        {
            "market_ticker",
            "market_id",
            "price_dollars",
            "delta_fp",
            "side",
            "ts",
            "ts_ms",
            "client_order_id",
            "subaccount",
            "price",
            "delta",
        }
    ),
    "orderbook_snapshot": frozenset(
        {
            "market_ticker",
            "market_id",
            "yes_dollars_fp",
            "no_dollars_fp",
            "yes_dollars",
            "no_dollars",
            "yes",
            "no",
        }
    ),
    "ticker": frozenset(
        {
            "market_id",
            "market_ticker",
            "price_dollars",
            "yes_bid_dollars",
            "yes_ask_dollars",
            "volume_fp",
            "open_interest_fp",
            "dollar_volume",
            "dollar_open_interest",
            "yes_bid_size_fp",
            "yes_ask_size_fp",
            "last_trade_size_fp",
            "ts",
            "ts_ms",
            "time",
            "price",
            "yes_bid",
            "yes_ask",
            "volume",
            "open_interest",
        }
    ),
    "trade": frozenset(
        {
            "trade_id",
            "market_ticker",
            "yes_price_dollars",
            "no_price_dollars",
            "count_fp",
            "taker_side",
            "taker_outcome_side",
            "taker_book_side",
            "is_block_trade",
            "ts",
            "ts_ms",
            "yes_price",
            "no_price",
            "count",
        }
    ),
}


def _int_or_none(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _req_int(v: Any, name: str) -> int:
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    raise ParseError(f"missing or non-integer {name!r}")


def _msg(frame: dict[str, Any]) -> dict[str, Any]:
    m = frame.get("msg")
    if not isinstance(m, dict):
        raise ParseError("missing or non-object 'msg'")
    return m


def parse_delta(frame: dict[str, Any], m: dict[str, Any]) -> OrderbookDelta:
    """Parse an ``orderbook_delta`` (the hot path: kept branch-light)."""
    p = m.get("price_dollars")
    price = dec(p) if p is not None else cents_to_dollars(m["price"], "price")
    d = m.get("delta_fp")
    delta = quantity(d if d is not None else m["delta"], "delta", signed=True)
    side = m.get("side")
    if side != "yes" and side != "no":
        raise ParseError(f"bad side {side!r}")
    ticker = m.get("market_ticker")
    if not isinstance(ticker, str):
        raise ParseError("missing 'market_ticker'")
    ts = m.get("ts_ms")
    return OrderbookDelta(
        _req_int(frame.get("sid"), "sid"),
        _int_or_none(frame.get("seq")),
        ticker,
        side,
        price,
        delta,
        ts if isinstance(ts, int) else _ts_ms(m),
        m.get("client_order_id"),
    )


def _parse_snapshot(frame: dict[str, Any]) -> OrderbookSnapshot:
    m = _msg(frame)
    return OrderbookSnapshot(
        sid=_req_int(frame.get("sid"), "sid"),
        seq=_int_or_none(frame.get("seq")),
        ticker=_str(m, "market_ticker"),
        yes=_levels(m, "yes"),
        no=_levels(m, "no"),
        id=_int_or_none(frame.get("id")),
        market_id=m.get("market_id"),
    )


def _parse_ticker(frame: dict[str, Any]) -> TickerMessage:
    m = _msg(frame)
    return TickerMessage(
        sid=_int_or_none(frame.get("sid")),
        ticker=_str(m, "market_ticker"),
        price=_opt_dec(m, "price_dollars", "price"),
        yes_bid=_opt_dec(m, "yes_bid_dollars", "yes_bid"),
        yes_ask=_opt_dec(m, "yes_ask_dollars", "yes_ask"),
        yes_bid_size=_opt_size(m, "yes_bid_size_fp"),
        yes_ask_size=_opt_size(m, "yes_ask_size_fp"),
        last_trade_size=_opt_size(m, "last_trade_size_fp"),
        volume=_opt_size(m, "volume_fp", "volume"),
        open_interest=_opt_size(m, "open_interest_fp", "open_interest"),
        dollar_volume=_int_or_none(m.get("dollar_volume")),
        dollar_open_interest=_int_or_none(m.get("dollar_open_interest")),
        ts_ms=_ts_ms(m),
        market_id=m.get("market_id"),
    )


def _parse_trade(frame: dict[str, Any]) -> TradeMessage:
    m = _msg(frame)
    yes = _opt_dec(m, "yes_price_dollars", "yes_price")
    no = _opt_dec(m, "no_price_dollars", "no_price")
    if yes is None and no is None:
        raise ParseError("trade without a price")
    if yes is None:
        assert no is not None
        yes = Decimal(1) - no
    if no is None:
        no = Decimal(1) - yes
    count = _opt_size(m, "count_fp", "count")
    if count is None:
        raise ParseError("trade without a count")
    book_side = m.get("taker_book_side")
    taker = m.get("taker_outcome_side") or m.get("taker_side")
    if taker is None and book_side in ("bid", "ask"):
        taker = "yes" if book_side == "bid" else "no"
    return TradeMessage(
        sid=_int_or_none(frame.get("sid")),
        seq=_int_or_none(frame.get("seq")),
        # The store keeps a trade once by its id: one without an id cannot be kept.
        trade_id=_str(m, "trade_id"),
        ticker=_str(m, "market_ticker"),
        yes_price=yes,
        no_price=no,
        count=count,
        taker_side=taker if isinstance(taker, str) else None,
        taker_book_side=book_side if isinstance(book_side, str) else None,
        is_block_trade=m.get("is_block_trade") is True,
        ts_ms=_ts_ms(m),
    )


def _parse_ok(frame: dict[str, Any]) -> OkMessage:
    m = frame.get("msg")
    tickers: Any = None
    subs: list[tuple[str, int]] | None = None
    raw_subs: Any = None
    if isinstance(m, dict):
        tickers = m.get("market_tickers")
    elif isinstance(m, list):
        raw_subs = m
    if tickers is None:
        tickers = frame.get("market_tickers")
    if raw_subs is None:
        raw_subs = frame.get("subscriptions")
    if isinstance(raw_subs, list):
        subs = []
        for s in raw_subs:
            if isinstance(s, dict) and isinstance(s.get("sid"), int):
                subs.append((str(s.get("channel", "")), s["sid"]))
    return OkMessage(
        id=_int_or_none(frame.get("id")),
        sid=_int_or_none(frame.get("sid")),
        seq=_int_or_none(frame.get("seq")),
        market_tickers=[str(t) for t in tickers] if isinstance(tickers, list) else None,
        subscriptions=subs,
    )


def _parse_error(frame: dict[str, Any]) -> ErrorMessage:
    m = frame.get("msg")
    m = m if isinstance(m, dict) else {}
    code = m.get("code")
    tickers = m.get("market_tickers")
    if isinstance(m.get("market_ticker"), str):
        tickers = [m["market_ticker"], *(tickers or [])]
    return ErrorMessage(
        id=_int_or_none(frame.get("id")),
        sid=_int_or_none(frame.get("sid")),
        seq=_int_or_none(frame.get("seq")),
        code=code if isinstance(code, int) else 0,
        message=str(m.get("msg", "")),
        market_tickers=[str(t) for t in tickers] if isinstance(tickers, list) else [],
    )


def _parse_subscribed(frame: dict[str, Any]) -> SubscribedMessage:
    m = _msg(frame)
    sid = m.get("sid", frame.get("sid"))
    return SubscribedMessage(
        id=_int_or_none(frame.get("id")),
        channel=_str(m, "channel"),
        sid=_req_int(sid, "sid"),
    )


def _parse_lifecycle(frame: dict[str, Any]) -> MarketLifecycle:
    m = _msg(frame)
    return MarketLifecycle(
        sid=_int_or_none(frame.get("sid")),
        seq=_int_or_none(frame.get("seq")),
        ticker=_str(m, "market_ticker"),
        event_type=_str(m, "event_type"),
        fields=m,
        price_ranges=_price_ranges(m.get("price_ranges")),
    )


def _price_ranges(raw: Any) -> PriceGrid | None:
    """``price_ranges`` (``[{start, end, step}]``, dollars) as ``(start, end, step)``."""
    if raw is None:
        return None
    if not isinstance(raw, list) or not raw:
        raise ParseError(f"price_ranges is not a non-empty list: {raw!r:.80}")
    ranges = []
    for r in raw:
        if not isinstance(r, dict):
            raise ParseError(f"bad price range {r!r:.80}")
        start, end, step = dec(r.get("start")), dec(r.get("end")), dec(r.get("step"))
        if not (0 <= start <= end <= 1 and 0 < step <= 1):
            raise ParseError(f"bad price range {r!r:.80}")
        ranges.append((start, end, step))
    return tuple(ranges)


def parse_frame(frame: dict[str, Any]) -> ServerMessage:
    """Turn one decoded frame into a typed message.

    Raises:
        ParseError: The frame is not a valid message of its type.
    """
    t = frame.get("type")
    if not isinstance(t, str):
        raise ParseError("missing 'type'")
    if t == "orderbook_delta":
        return parse_delta(frame, _msg(frame))
    if t == "orderbook_snapshot":
        return _parse_snapshot(frame)
    if t == "ticker":
        return _parse_ticker(frame)
    if t == "trade":
        return _parse_trade(frame)
    if t == "subscribed":
        return _parse_subscribed(frame)
    if t == "unsubscribed":
        return UnsubscribedMessage(
            id=_int_or_none(frame.get("id")),
            sid=_req_int(frame.get("sid"), "sid"),
            seq=_int_or_none(frame.get("seq")),
        )
    if t == "ok":
        return _parse_ok(frame)
    if t == "error":
        return _parse_error(frame)
    if t == "market_lifecycle_v2":
        return _parse_lifecycle(frame)
    if t == "event_lifecycle":
        m = _msg(frame)
        return EventLifecycle(
            sid=_int_or_none(frame.get("sid")),
            seq=_int_or_none(frame.get("seq")),
            event_ticker=_str(m, "event_ticker"),
            fields=m,
        )
    sid, seq = _int_or_none(frame.get("sid")), _int_or_none(frame.get("seq"))
    if t in OTHER_TYPES:
        return OtherMessage(t, sid, seq, frame)
    return UnknownMessage(t, sid, seq, frame)


def parse_message(data: str | bytes | dict[str, Any]) -> ServerMessage | MalformedMessage:
    """Parse one frame (text, bytes or an already decoded dict); never raises.

    Returns:
        The typed message, or :class:`MalformedMessage` describing why it is not one.
    """
    import orjson

    try:
        frame = data if isinstance(data, dict) else orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        return MalformedMessage(f"invalid JSON: {exc}", _raw_text(data))
    if not isinstance(frame, dict):
        return MalformedMessage("frame is not a JSON object", _raw_text(data))
    try:
        return parse_frame(frame)
    except (ParseError, KeyError, TypeError, ValueError, ArithmeticError) as exc:
        return MalformedMessage(f"{frame.get('type')}: {exc}", _raw_text(data))


def _raw_text(data: str | bytes | dict[str, Any], limit: int = 500) -> str:
    if isinstance(data, bytes):
        return data[:limit].decode("utf-8", "replace")
    if isinstance(data, str):
        return data[:limit]
    return repr(data)[:limit]
