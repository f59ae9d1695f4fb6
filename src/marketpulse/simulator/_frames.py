"""Encoding of server frames in Kalshi's current (2026) shapes.

``msg`` bodies are encoded once per event and cached on it; a frame for one subscriber then only
wraps that body with its ``type``, ``sid`` and ``seq``. ``legacy=True`` adds the integer-cent and
integer-count fields that Kalshi removed on 2026-03-12, for clients that want the old shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

import orjson

from marketpulse.simulator._book import Book
from marketpulse.simulator._catalog import Market
from marketpulse.simulator._model import Delta, Event, Lifecycle, Ticker, Trade
from marketpulse.simulator._units import ONE, cents, contracts, price_str, size_str

_last_ms = -1
_last_iso = ""


def rfc3339(ts_ms: int) -> str:
    """``ts_ms`` as RFC 3339 the way Kalshi writes it: UTC ``Z``, fraction with its trailing
    zeros trimmed (``...:05.12Z``, ``...:05Z``), as in the production payloads of
    tests/fixtures/kalshi (docs/protocols/kalshi.md §3.2)."""
    global _last_ms, _last_iso
    if ts_ms != _last_ms:
        secs, ms = divmod(ts_ms, 1000)
        base = datetime.fromtimestamp(secs, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _last_iso = f"{base}.{ms:03d}".rstrip("0").rstrip(".") + "Z"
        _last_ms = ts_ms
    return _last_iso


def encode_msg(ev: Event, markets: Mapping[str, Market], use_yes: bool, legacy: bool) -> bytes:
    """The encoded ``msg`` of an event for one subscription variant (cached on the event)."""
    key = (2 if use_yes and isinstance(ev, Delta) else 0) + (1 if legacy else 0)
    enc = ev.enc
    if enc is None:
        enc = ev.enc = {}
    else:
        hit = enc.get(key)
        if hit is not None:
            return hit
    body = orjson.dumps(_msg(ev, markets, use_yes, legacy))
    enc[key] = body
    return body


def _msg(
    ev: Event, markets: Mapping[str, Market], use_yes: bool, legacy: bool
) -> dict[str, object]:
    m = markets.get(ev.ticker)
    market_id = m.market_id if m else ""
    if isinstance(ev, Delta):
        price = ONE - ev.price if use_yes and ev.side == "no" else ev.price
        d: dict[str, object] = {
            "market_ticker": ev.ticker,
            "market_id": market_id,
            "price_dollars": price_str(price),
            "delta_fp": size_str(ev.delta),
            "side": ev.side,
            "ts": rfc3339(ev.ts_ms),
            "ts_ms": ev.ts_ms,
        }
        if legacy:
            d["price"] = cents(price)
            d["delta"] = contracts(ev.delta) if ev.delta >= 0 else -contracts(-ev.delta)
        return d
    if isinstance(ev, Trade):
        no_price = ONE - ev.yes_price
        d = {
            "trade_id": ev.trade_id,
            "market_ticker": ev.ticker,
            "yes_price_dollars": price_str(ev.yes_price),
            "no_price_dollars": price_str(no_price),
            "count_fp": size_str(ev.count),
            "taker_side": ev.taker,
            "taker_outcome_side": ev.taker,
            "taker_book_side": "bid" if ev.taker == "yes" else "ask",
            "is_block_trade": False,
            "ts": ev.ts_ms // 1000,
            "ts_ms": ev.ts_ms,
        }
        if legacy:
            d.update(
                yes_price=cents(ev.yes_price), no_price=cents(no_price), count=contracts(ev.count)
            )
        return d
    if isinstance(ev, Ticker):
        d = {
            "market_id": market_id,
            "market_ticker": ev.ticker,
            "price_dollars": price_str(ev.price),
            "yes_bid_dollars": price_str(ev.yes_bid),
            "yes_ask_dollars": price_str(ev.yes_ask),
            "volume_fp": size_str(ev.volume),
            "open_interest_fp": size_str(ev.open_interest),
            # Whole-dollar notionals; captured production frames show contracts x $0.50.
            "dollar_volume": ev.volume // 200,
            "dollar_open_interest": ev.open_interest // 200,
            "yes_bid_size_fp": size_str(ev.yes_bid_size),
            "yes_ask_size_fp": size_str(ev.yes_ask_size),
            "last_trade_size_fp": size_str(ev.last_trade_size),
            "ts": ev.ts_ms // 1000,
            "ts_ms": ev.ts_ms,
            "time": rfc3339(ev.ts_ms),
        }
        if legacy:
            d.update(
                price=cents(ev.price),
                yes_bid=cents(ev.yes_bid),
                yes_ask=cents(ev.yes_ask),
                volume=contracts(ev.volume),
                open_interest=contracts(ev.open_interest),
            )
        return d
    if isinstance(ev, Lifecycle):
        return {"market_ticker": ev.ticker, "event_type": ev.event_type, **ev.fields}
    raise TypeError(f"cannot encode {type(ev).__name__}")


def snapshot_msg(market: Market, book: Book, use_yes: bool, legacy: bool) -> bytes:
    """An ``orderbook_snapshot`` body; empty sides are omitted, levels ascending by price."""
    d: dict[str, object] = {"market_ticker": market.ticker, "market_id": market.market_id}
    yes = book.levels("yes")
    no = book.levels("no")
    if use_yes:
        no = sorted((ONE - p, s) for p, s in no)
    if yes:
        d["yes_dollars_fp"] = [[price_str(p), size_str(s)] for p, s in yes]
    if no:
        d["no_dollars_fp"] = [[price_str(p), size_str(s)] for p, s in no]
    if legacy:
        if yes:
            d["yes"] = [[cents(p), contracts(s)] for p, s in yes]
            d["yes_dollars"] = [[price_str(p), contracts(s)] for p, s in yes]
        if no:
            d["no"] = [[cents(p), contracts(s)] for p, s in no]
            d["no_dollars"] = [[price_str(p), contracts(s)] for p, s in no]
    return orjson.dumps(d)


def seq_frame(type_: str, sid: int, seq: int, msg: bytes, cmd_id: int | None = None) -> bytes:
    """A sequenced frame; ``cmd_id`` is set on snapshots that answer ``get_snapshot``."""
    if cmd_id:
        return b'{"type":"%s","id":%d,"sid":%d,"seq":%d,"msg":%s}' % (
            type_.encode(),
            cmd_id,
            sid,
            seq,
            msg,
        )
    return b'{"type":"%s","sid":%d,"seq":%d,"msg":%s}' % (type_.encode(), sid, seq, msg)


def ticker_frame(sid: int, msg: bytes) -> bytes:
    """A ``ticker`` frame (unsequenced)."""
    return b'{"type":"ticker","sid":%d,"msg":%s}' % (sid, msg)


def response(obj: dict[str, object]) -> bytes:
    """Encode a command response."""
    return orjson.dumps(obj)
