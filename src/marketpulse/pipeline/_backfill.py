"""Trades the feed missed, fetched over REST: after a reconnect, and after a trade-channel gap.

A reconnect or a seq gap resnapshots the books, so books heal by themselves; trades do not: a
trade sent while the socket was down, or swallowed by a gap, is gone from the stream. The
runner then asks the REST API for each market's trades since the outage began (or since the
last trade seen), with a margin, and writes them like live ones. The store keys trades by id,
so the ones the feed did deliver are skipped there.
"""

from __future__ import annotations

import asyncio
from typing import Any

from marketpulse.kalshi import RestTrade

__all__ = ["MARGIN_MS", "fetch_trades_since", "rest_trade_entry", "trade_entry"]

MARGIN_MS = 2_000
"""Fetched before the outage's start: the last frames before a drop may be lost too."""

MAX_PAGES = 20
"""Per market and outage (100 trades a page): a long outage is not replayed in full."""


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
    """Every trade of ``tickers`` at or after ``since_ms - MARGIN_MS``, as trade entries."""
    # Kalshi's min_ts is whole Unix seconds: round down, never miss the first second.
    min_ts = max(0, int((since_ms - MARGIN_MS) // 1000))

    async def one(ticker: str) -> list[dict[str, Any]]:
        out = []
        async for trade in rest.iter_trades(max_pages=MAX_PAGES, ticker=ticker, min_ts=min_ts):
            entry = rest_trade_entry(trade)
            if entry is not None:
                out.append(entry)
        return out

    pages = await asyncio.gather(*(one(t) for t in tickers))
    return [entry for page in pages for entry in page]
