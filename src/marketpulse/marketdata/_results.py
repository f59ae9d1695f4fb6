"""The public result shapes, built from stored documents.

One place defines what a client receives (the seed's components read ``price.price``,
``orderbook.bids``, ``trade.side`` ...); ``schemas`` describes the same shapes as JSON Schema.
Every number leaves as a float and every time as epoch ms.
"""

from __future__ import annotations

from typing import Any

from marketpulse.marketdata._pricing import change_percent, display_price, mid, spread
from marketpulse.marketdata.packed_levels import unpack_levels

__all__ = [
    "current_price",
    "is_live",
    "market_detail",
    "market_result",
    "orderbook_result",
    "price_result",
    "stream_result",
    "trade_result",
    "updated_at",
]


def _opt(value: Any) -> float | None:
    return None if value is None else float(value)


def updated_at(price_doc: dict[str, Any]) -> float:
    """When a prices doc last changed from the feed (its ticker fields or its last trade)."""
    return float(max(price_doc.get("ts", 0.0), price_doc.get("lastPriceTs", 0.0)))


def is_live(doc: dict[str, Any] | None) -> bool:
    """Whether a books or prices doc is live: written by a stream whose lease holds (a doc of
    no stream, written directly, is live as written)."""
    return doc is not None and bool(doc.get("live", True))


def current_price(price_doc: dict[str, Any]) -> float | None:
    """The display price of a prices doc (last trade, else the mid)."""
    return display_price(
        price_doc.get("lastPrice"), price_doc.get("yesBid"), price_doc.get("yesAsk")
    )


def price_result(price_doc: dict[str, Any], reference: float | None) -> dict[str, Any]:
    """``getPrice``'s result for a prices doc and the price 24 h earlier (or the previous price)."""
    price = current_price(price_doc)
    return {
        "ticker": price_doc["ticker"],
        "price": _opt(price),
        "changePercent24h": change_percent(price, reference),
        "yesBid": _opt(price_doc.get("yesBid")),
        "yesAsk": _opt(price_doc.get("yesAsk")),
        "volume": _opt(price_doc.get("volume")),
        "openInterest": _opt(price_doc.get("openInterest")),
        "updatedAt": updated_at(price_doc),
        "live": is_live(price_doc),
    }


def orderbook_result(book_doc: dict[str, Any], depth: int) -> dict[str, Any]:
    """``getOrderbook``'s result: the top ``depth`` levels per side, best first."""
    bids = unpack_levels(book_doc["bids"], depth)
    asks = unpack_levels(book_doc["asks"], depth)
    best_bid = bids[0][0] if bids else None
    best_ask = asks[0][0] if asks else None
    return {
        "ticker": book_doc["ticker"],
        "bids": bids,
        "asks": asks,
        "spread": spread(best_bid, best_ask),
        "mid": mid(best_bid, best_ask),
        "updatedAt": float(book_doc["ts"]),
        "live": is_live(book_doc),
    }


def trade_result(trade_doc: dict[str, Any]) -> dict[str, Any]:
    """One entry of ``getRecentTrades``."""
    return {
        "id": trade_doc["tradeId"],
        "ticker": trade_doc["ticker"],
        "side": trade_doc["side"],
        "price": float(trade_doc["price"]),
        "size": float(trade_doc["size"]),
        "timestamp": float(trade_doc["timestamp"]),
    }


def market_result(market_doc: dict[str, Any], price_doc: dict[str, Any] | None) -> dict[str, Any]:
    """One entry of ``listMarkets``: metadata and the latest price."""
    live = price_doc is not None and is_live(price_doc)
    price_doc = price_doc or {}
    return {
        "ticker": market_doc["ticker"],
        "title": market_doc.get("title") or market_doc["ticker"],
        "subtitle": market_doc.get("subtitle"),
        "eventTicker": market_doc.get("eventTicker"),
        "seriesTicker": market_doc.get("seriesTicker"),
        "status": market_doc.get("status", "unknown"),
        "closeTime": _opt(market_doc.get("closeTime")),
        "price": _opt(current_price(price_doc)),
        "yesBid": _opt(price_doc.get("yesBid")),
        "yesAsk": _opt(price_doc.get("yesAsk")),
        "volume": _opt(price_doc.get("volume")),
        "openInterest": _opt(price_doc.get("openInterest")),
        "result": market_doc.get("result") or None,
        "settlementValue": _opt(market_doc.get("settlementValue")),
        "settledAt": _opt(market_doc.get("settledAt")),
        "live": live,
    }


def market_detail(
    market_doc: dict[str, Any], price_doc: dict[str, Any] | None, reference: float | None
) -> dict[str, Any]:
    """``getMarket``'s result: ``market_result`` plus the previous price and the 24 h change."""
    result = market_result(market_doc, price_doc)
    result["previousPrice"] = _opt(market_doc.get("previousPrice"))
    result["changePercent24h"] = change_percent(result["price"], reference)
    result["updatedAt"] = 0.0 if price_doc is None else updated_at(price_doc)
    return result


def stream_result(stream_doc: dict[str, Any]) -> dict[str, Any]:
    """One entry of ``getStreamStatus``; a stream whose lease lapsed says ``stale``, whatever
    its worker last reported (a dead worker cannot say so itself)."""
    markets = list(stream_doc.get("markets") or [])
    live = bool(stream_doc.get("live", True))
    state = stream_doc["state"]
    return {
        "streamId": stream_doc["streamId"],
        "state": state if live or state == "stopped" else "stale",
        "live": live,
        "markets": markets,
        "marketCount": float(len(markets)),
        "messagesPerSecond": _opt(stream_doc.get("messagesPerSecond")),
        "lastMessageAt": _opt(stream_doc.get("lastMessageAt")),
        "reconnects": _opt(stream_doc.get("reconnects")),
        "gaps": _opt(stream_doc.get("gaps")),
        "lagMs": _opt(stream_doc.get("lagMs")),
        "updatedAt": float(stream_doc["updatedAt"]),
    }
