"""JSON Schemas of every public query's result: the contract the frontends code against.

The seed's components read ``price.price``, ``price.changePercent24h.toFixed(2)``,
``orderbook.bids.map(([price, size]) => ...)``, ``orderbook.spread``, ``trade.side === "buy"``
and ``new Date(trade.timestamp)``; these schemas pin those shapes (numbers as JSON numbers,
times as epoch ms). ``RESULT_SCHEMAS`` maps each function path to its schema.
"""

from __future__ import annotations

from typing import Any

from marketpulse.marketdata.limits import BOOK_LEVELS, MAX_RESULTS

__all__ = ["RESULT_SCHEMAS"]

_NUM: dict[str, Any] = {"type": "number"}
_OPT_NUM: dict[str, Any] = {"type": ["number", "null"]}
_OPT_STR: dict[str, Any] = {"type": ["string", "null"]}
_TICKER: dict[str, Any] = {"type": "string", "minLength": 1}
_EPOCH_MS: dict[str, Any] = {"type": "number", "minimum": 0}
_LIVE: dict[str, Any] = {"type": "boolean"}
"""False once the writing stream's lease lapsed (or the store restarted): the data is stale."""


def _object(properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"oneOf": [{"type": "null"}, schema]}


_LEVEL: dict[str, Any] = {
    "type": "array",
    "prefixItems": [{"type": "number", "minimum": 0}, {"type": "number", "minimum": 0}],
    "minItems": 2,
    "maxItems": 2,
}

PRICE = _object(
    {
        "ticker": _TICKER,
        "price": _OPT_NUM,
        "changePercent24h": _NUM,
        "yesBid": _OPT_NUM,
        "yesAsk": _OPT_NUM,
        "volume": _OPT_NUM,
        "openInterest": _OPT_NUM,
        "updatedAt": _EPOCH_MS,
        "live": _LIVE,
    }
)

ORDERBOOK = _object(
    {
        "ticker": _TICKER,
        "bids": {"type": "array", "items": _LEVEL, "maxItems": BOOK_LEVELS},
        "asks": {"type": "array", "items": _LEVEL, "maxItems": BOOK_LEVELS},
        "spread": _OPT_NUM,
        "mid": _OPT_NUM,
        "updatedAt": _NUM,
        "live": _LIVE,
    }
)

TRADE = _object(
    {
        "id": {"type": "string", "minLength": 1},
        "ticker": _TICKER,
        "side": {"enum": ["buy", "sell"]},
        "price": _NUM,
        "size": {"type": "number", "minimum": 0},
        "timestamp": _EPOCH_MS,
    }
)

_MARKET_FIELDS: dict[str, Any] = {
    "ticker": _TICKER,
    "title": {"type": "string"},
    "subtitle": _OPT_STR,
    "eventTicker": _OPT_STR,
    "seriesTicker": _OPT_STR,
    "status": {"type": "string"},
    "closeTime": _OPT_NUM,
    "price": _OPT_NUM,
    "yesBid": _OPT_NUM,
    "yesAsk": _OPT_NUM,
    "volume": _OPT_NUM,
    "openInterest": _OPT_NUM,
    "result": _OPT_STR,
    "settlementValue": _OPT_NUM,
    "settledAt": _OPT_NUM,
    "live": _LIVE,
}

MARKET_SUMMARY = _object(_MARKET_FIELDS)

MARKET = _object(
    {**_MARKET_FIELDS, "previousPrice": _OPT_NUM, "changePercent24h": _NUM, "updatedAt": _EPOCH_MS}
)

CANDLE = _object(
    {
        "start": _EPOCH_MS,
        "open": _NUM,
        "high": _NUM,
        "low": _NUM,
        "close": _NUM,
        "volume": {"type": "number", "minimum": 0},
        "trades": {"type": "number", "minimum": 0},
    }
)

STREAM = _object(
    {
        "streamId": {"type": "string", "minLength": 1},
        "state": {"type": "string"},
        "live": _LIVE,
        "markets": {"type": "array", "items": {"type": "string"}},
        "marketCount": {"type": "number", "minimum": 0},
        "messagesPerSecond": _OPT_NUM,
        "lastMessageAt": _OPT_NUM,
        "reconnects": _OPT_NUM,
        "gaps": _OPT_NUM,
        "lagMs": _OPT_NUM,
        "updatedAt": _NUM,
    }
)


_CURSOR: dict[str, Any] = {"type": "string"}

TRADE_PAGE = {
    "type": "object",
    "properties": {
        "page": {"type": "array", "items": TRADE},
        "isDone": {"type": "boolean"},
        "continueCursor": _CURSOR,
        "splitCursor": {"type": ["string", "null"]},
        "pageStatus": {"enum": ["SplitRecommended", "SplitRequired", None]},
    },
    "required": ["page", "isDone", "continueCursor"],
    "additionalProperties": False,
}
"""One page of ``paginate`` (Convex's ``PaginationResult``) holding trades."""

DELIVERY = _object(
    {
        "state": {"enum": ["none", "pending", "retrying", "delivered", "failed"]},
        "attempts": {"type": "number", "minimum": 0},
        "error": _OPT_STR,
        "deliveredAt": _OPT_NUM,
    }
)

ALERT = _object(
    {
        "id": {"type": "string", "minLength": 1},
        "ticker": _TICKER,
        "above": _OPT_NUM,
        "below": _OPT_NUM,
        "createdAt": _EPOCH_MS,
        "triggeredAt": _OPT_NUM,
        "triggerPrice": _OPT_NUM,
        "delivery": _nullable(DELIVERY),
    }
)

SETTINGS = _object({"alertWebhook": _OPT_STR})


def _list(item: dict[str, Any], max_items: int = MAX_RESULTS) -> dict[str, Any]:
    return {"type": "array", "items": item, "maxItems": max_items}


RESULT_SCHEMAS: dict[str, dict[str, Any]] = {
    "marketData:getPrice": _nullable(PRICE),
    "marketData:getOrderbook": _nullable(ORDERBOOK),
    "marketData:getRecentTrades": _nullable(_list(TRADE)),
    "marketData:listMarkets": _list(MARKET_SUMMARY),
    "marketData:getMarket": _nullable(MARKET),
    "marketData:getCandles": _nullable(_list(CANDLE)),
    "marketData:getStreamStatus": _list(STREAM),
    "marketData:getTradeHistory": TRADE_PAGE,
    "watchlists:list": _list({"type": "string", "minLength": 1}),
    "watchlists:markets": _list(MARKET_SUMMARY),
    "alerts:list": _list(ALERT),
    "settings:get": SETTINGS,
}
"""Function path -> JSON Schema (draft 2020-12) of its result."""
