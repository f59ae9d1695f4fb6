"""Market metadata from Kalshi REST, shaped for and written by ``marketData:upsertMarkets``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

import structlog

from marketpulse.marketdata.limits import MARKETS_PER_UPSERT
from marketpulse.pipeline._store import StoreClient

if TYPE_CHECKING:
    from marketpulse.kalshi.book import PriceGrid

__all__ = [
    "UPSERT_MARKETS",
    "MetadataFetch",
    "fetch_markets",
    "market_to_upsert",
    "price_grid",
    "upsert_metadata",
]

log = structlog.get_logger("marketpulse.pipeline.stream")

UPSERT_MARKETS = "marketData:upsertMarkets"

MetadataFetch = Callable[[list[str]], Awaitable[list[dict[str, Any]]]]
"""Fetches the ``upsertMarkets`` entries of tickers (:func:`fetch_markets` bound to a client)."""

_CONCURRENCY = 8
_BATCH = 100
"""Tickers per ``GET /markets`` request (Kalshi's page limit is 1,000; 100 keeps the URL short)."""


def _get(obj: Any, *names: str) -> Any:
    for name in names:
        value = obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)
        if value is not None and value != "":
            return value
    return None


def _num(value: Any) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(Decimal(str(value)))
    except (InvalidOperation, ValueError):
        return None


def _ms(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, int | float):
        return float(value) * (1000.0 if value < 10**11 else 1.0)
    if isinstance(value, datetime):
        return value.timestamp() * 1000.0
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp() * 1000.0
    except ValueError:
        return None


def market_to_upsert(market: Any) -> dict[str, Any] | None:
    """Map a Kalshi Market (REST JSON dict or a typed object) to an upsertMarkets entry.

    Returns:
        The entry, or None when the market has no ticker.
    """
    ticker = _get(market, "ticker")
    if not ticker:
        return None
    event = _get(market, "event_ticker", "eventTicker") or ""
    series = _get(market, "series_ticker", "seriesTicker") or (
        str(event).split("-", 1)[0] if event else ""
    )
    entry: dict[str, Any] = {
        "ticker": str(ticker),
        "eventTicker": str(event),
        "seriesTicker": str(series),
        "title": str(_get(market, "title") or ""),
        "subtitle": str(_get(market, "subtitle", "yes_sub_title", "sub_title") or ""),
        "status": str(_get(market, "status") or ""),
    }
    optional = {
        "closeTime": _ms(_get(market, "close_time", "closeTime", "close_ts")),
        "previousPrice": _num(_get(market, "previous_price_dollars", "previous_price")),
        "lastPrice": _num(_get(market, "last_price_dollars", "last_price")),
        "yesBid": _num(_get(market, "yes_bid_dollars", "yes_bid")),
        "yesAsk": _num(_get(market, "yes_ask_dollars", "yes_ask")),
        "volume": _num(_get(market, "volume_fp", "volume")),
        "openInterest": _num(_get(market, "open_interest_fp", "open_interest")),
        "settlementValue": _num(_get(market, "settlement_value_dollars", "settlement_value")),
        "settledAt": _ms(_get(market, "settlement_ts")),
    }
    if _get(market, "result"):
        entry["result"] = str(_get(market, "result"))
    entry.update({k: v for k, v in optional.items() if v is not None})
    return entry


def price_grid(market: Any) -> PriceGrid:
    """A REST market's ``price_ranges`` as ``(start, end, step)`` (empty: none given)."""
    return tuple((r.start, r.end, r.step) for r in getattr(market, "price_ranges", None) or ())


async def fetch_markets(
    rest: Any, tickers: list[str], seen: Callable[[Any], None] | None = None
) -> list[dict[str, Any]]:
    """Fetch the metadata of ``tickers`` (unknown tickers are skipped).

    ``GET /markets?tickers=...``, :data:`_BATCH` markets a request: at start the history and
    the trade backfill share the client's rate limit (Basic: 20 reads/s) with this, and one
    request per market spent a second of it on 20 markets. A ticker the batch did not return
    (or every ticker, if the batch failed) is asked for alone, as before.

    Args:
        rest: A ``marketpulse.kalshi.KalshiRestClient``.
        tickers: Market tickers.
        seen: Called with each fetched ``Market`` (e.g. to give the feed its price grid).
    """
    found: dict[str, Any] = {}
    for i in range(0, len(tickers), _BATCH):
        chunk = tickers[i : i + _BATCH]
        try:
            async for market in rest.iter_markets(tickers=chunk, limit=len(chunk)):
                if market.ticker in chunk:
                    found[market.ticker] = market
        except Exception as exc:  # the per-market requests below still get them
            log.warning("batched market metadata failed", error=str(exc)[:300])
    sem = asyncio.Semaphore(_CONCURRENCY)

    async def one(ticker: str) -> Any:
        market = found.get(ticker)
        if market is not None:
            return market
        async with sem:
            try:
                return await rest.get_market(ticker)
            except Exception:  # an unknown or delisted market must not block the others
                return None

    out = []
    for market in await asyncio.gather(*(one(t) for t in tickers)):
        if market is None:
            continue
        if seen is not None:
            seen(market)
        entry = market_to_upsert(market)
        if entry is not None:
            out.append(entry)
    return out


async def upsert_metadata(
    store: StoreClient, fetch: MetadataFetch, tickers: list[str], stream_id: str
) -> None:
    """Fetch the metadata of ``tickers`` and upsert it; a failure is logged, never raised."""
    if not tickers:
        return
    try:
        entries = await fetch(tickers)
        for i in range(0, len(entries), MARKETS_PER_UPSERT):
            chunk = entries[i : i + MARKETS_PER_UPSERT]
            await store.mutation(UPSERT_MARKETS, {"markets": chunk})
        log.info("market metadata upserted", stream=stream_id, markets=len(entries))
    except Exception as exc:  # metadata is nice to have; the feed must go on
        log.warning("market metadata failed", stream=stream_id, error=str(exc)[:300])
