"""Async Kalshi REST v2 client (httpx): markets, order books, trades, events, series.

Every request is signed when credentials are given (the order-book endpoints are marked as
requiring auth in the OpenAPI spec while the docs say they are public, docs/protocols/kalshi.md §6: sign anyway).
429 and 5xx responses, and transport errors, are retried with jittered exponential backoff up
to ``max_retries`` times; Kalshi sends no ``Retry-After`` on 429 (docs/protocols/kalshi.md §4), but one is honoured
if present. Results are typed pydantic models (:mod:`marketpulse.kalshi._models`).
"""

from __future__ import annotations

import asyncio
import functools
import random
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import httpcore  # noqa: F401  (httpx loads it at its first client: here, not in a stream's start)
import httpx
import orjson

from marketpulse.kalshi._models import (
    Candlestick,
    Event,
    EventsPage,
    Market,
    MarketsPage,
    Orderbook,
    RestTrade,
    Series,
    TradesPage,
)
from marketpulse.kalshi._ratelimit import TokenBucket
from marketpulse.kalshi.auth import KalshiCredentials

__all__ = [
    "DEMO_REST_URL",
    "DEMO_WS_URL",
    "PROD_REST_URL",
    "PROD_WS_URL",
    "KalshiRestClient",
    "KalshiRestError",
    "resolve_rest_url",
    "resolve_ws_url",
]

# docs/protocols/kalshi.md §1.1: the dedicated external hosts (May 2026); the shared hosts still work too.
PROD_REST_URL = "https://external-api.kalshi.com/trade-api/v2"
DEMO_REST_URL = "https://external-api.demo.kalshi.co/trade-api/v2"
PROD_WS_URL = "wss://external-api-ws.kalshi.com/trade-api/ws/v2"
DEMO_WS_URL = "wss://external-api-ws.demo.kalshi.co/trade-api/ws/v2"


def resolve_rest_url(name: str) -> str:
    """``prod`` / ``demo`` to Kalshi's REST base URL; anything else is taken as a URL."""
    return {"prod": PROD_REST_URL, "demo": DEMO_REST_URL}.get(name, name).rstrip("/")


def resolve_ws_url(name: str) -> str:
    """``prod`` / ``demo`` to Kalshi's WebSocket URL; anything else is taken as a URL."""
    return {"prod": PROD_WS_URL, "demo": DEMO_WS_URL}.get(name, name)


class KalshiRestError(Exception):
    """A REST call failed for good (a 4xx, or retries exhausted)."""

    def __init__(self, status: int | None, path: str, detail: str) -> None:
        """Build from the HTTP status (None for transport errors), path and a short detail."""
        super().__init__(f"GET {path}: {status if status is not None else 'no response'} {detail}")
        self.status = status
        self.path = path
        self.detail = detail


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """httpx's default context, built once per process: loading the CA bundle took 0.1-0.4 s
    of each stream attempt's start on a loaded host (before its first history request). Used
    for plain-http base URLs too, so a redirect to https is still verified."""
    import certifi

    return ssl.create_default_context(cafile=certifi.where())


def _clean(params: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in params.items():
        if v is None:
            continue
        if isinstance(v, bool):
            out[k] = "true" if v else "false"
        elif isinstance(v, list | tuple):  # Kalshi takes comma-separated lists (``tickers``)
            out[k] = ",".join(v)
        else:
            out[k] = v
    return out


async def _follow(
    fetch: Callable[..., Awaitable[Any]], key: str, max_pages: int | None, filters: dict[str, Any]
) -> AsyncIterator[Any]:
    """Yield the items of every page, passing the cursor back until it is empty (docs/protocols/kalshi.md §6)."""
    cursor: str | None = None
    pages = 0
    while True:
        page = await fetch(cursor=cursor, **filters)
        pages += 1
        for item in getattr(page, key):
            yield item
        if not page.cursor or (max_pages is not None and pages >= max_pages):
            return
        cursor = page.cursor


class KalshiRestClient:
    """Async client for the market-data part of Kalshi REST v2.

    Args:
        base_url: ``prod``, ``demo`` or a base URL ending in ``/trade-api/v2`` (the simulator).
        credentials: Sign every request when given.
        timeout: Per-request timeout in seconds.
        max_retries: Retries after a 429, a 5xx or a transport error.
        backoff_base: First retry delay; doubles per retry with ±50 % jitter.
        backoff_max: Ceiling of one retry delay.
        transport: A custom httpx transport (tests).
        rate_limit: Reads per second allowed on our side: a Kalshi tier name (``basic`` 20,
            ``advanced`` 30, ``premier`` 100, ``prime`` 400), a number, or None for no limit.
    """

    def __init__(
        self,
        base_url: str = "prod",
        credentials: KalshiCredentials | None = None,
        *,
        timeout: float = 10.0,
        max_retries: int = 5,
        backoff_base: float = 0.25,
        backoff_max: float = 8.0,
        transport: httpx.AsyncBaseTransport | None = None,
        rate_limit: str | float | None = "basic",
    ) -> None:
        self.base_url = resolve_rest_url(base_url)
        self._base_path = urlsplit(self.base_url).path.rstrip("/")
        self._creds = credentials
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.retries = 0
        self.limiter: TokenBucket | None = (
            None
            if rate_limit is None
            else TokenBucket.for_tier(rate_limit)
            if isinstance(rate_limit, str)
            else TokenBucket(float(rate_limit))
        )
        self._client = httpx.AsyncClient(
            timeout=timeout,
            transport=transport,
            trust_env=False,
            headers={"Accept": "application/json"},
            verify=_tls_context(),
        )

    async def __aenter__(self) -> KalshiRestClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    def _delay(self, attempt: int, response: httpx.Response | None) -> float:
        if response is not None:
            ra = response.headers.get("retry-after")
            if ra and ra.replace(".", "", 1).isdigit():
                return min(self.backoff_max, float(ra))
        d: float = min(self.backoff_max, self.backoff_base * 2.0**attempt)
        return d * random.uniform(0.5, 1.5)

    async def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        """GET ``path`` (relative to the base URL) and return the decoded JSON body.

        Raises:
            KalshiRestError: A 4xx (other than 429), or retries exhausted.
        """
        url = self.base_url + path
        sign_path = self._base_path + path
        query = _clean(params or {})
        last: str = ""
        status: int | None = None
        for attempt in range(self.max_retries + 1):
            headers = self._creds.headers("GET", sign_path) if self._creds else {}
            response: httpx.Response | None = None
            if self.limiter is not None:
                await self.limiter.acquire()
            try:
                response = await self._client.get(url, params=query, headers=headers)
            except httpx.TransportError as exc:
                last, status = f"{type(exc).__name__}", None
            else:
                status = response.status_code
                if status < 300:
                    try:
                        return orjson.loads(response.content)
                    except orjson.JSONDecodeError:
                        raise KalshiRestError(status, path, "response is not JSON") from None
                last = response.text[:200]
                if status != 429 and status < 500:
                    raise KalshiRestError(status, path, last)
            if attempt == self.max_retries:
                break
            self.retries += 1
            delay = self._delay(attempt, response)
            if status == 429 and self.limiter is not None:
                self.limiter.pause(delay)  # every caller slows down, not only this one
            await asyncio.sleep(delay)
        raise KalshiRestError(status, path, f"{last} (after {self.max_retries} retries)")

    # -- markets ------------------------------------------------------------------------------

    async def list_markets(
        self,
        *,
        limit: int | None = None,
        cursor: str | None = None,
        event_ticker: str | None = None,
        series_ticker: str | None = None,
        status: str | None = None,
        tickers: Sequence[str] | None = None,
        min_close_ts: int | None = None,
        max_close_ts: int | None = None,
        mve_filter: str | None = None,
        **filters: Any,
    ) -> MarketsPage:
        """One page of ``GET /markets``. ``status`` takes the filter vocabulary
        (``unopened``/``open``/``paused``/``closed``/``settled``), not ``active``."""
        body = await self.get(
            "/markets",
            {
                "limit": limit,
                "cursor": cursor,
                "event_ticker": event_ticker,
                "series_ticker": series_ticker,
                "status": status,
                "tickers": list(tickers) if tickers else None,
                "min_close_ts": min_close_ts,
                "max_close_ts": max_close_ts,
                "mve_filter": mve_filter,
                **filters,
            },
        )
        return MarketsPage.model_validate(body)

    def iter_markets(
        self, *, max_pages: int | None = None, **filters: Any
    ) -> AsyncIterator[Market]:
        """Every market matching ``filters``, following the cursor until it is empty."""
        return _follow(self.list_markets, "markets", max_pages, filters)

    async def get_market(self, ticker: str) -> Market:
        """``GET /markets/{ticker}``."""
        body = await self.get(f"/markets/{ticker}")
        return Market.model_validate(body["market"])

    async def get_orderbook(self, ticker: str, depth: int | None = None) -> Orderbook:
        """``GET /markets/{ticker}/orderbook`` (``depth`` 1–100; None = all levels)."""
        body = await self.get(f"/markets/{ticker}/orderbook", {"depth": depth})
        return Orderbook.model_validate({"ticker": ticker, **body})

    # -- trades -------------------------------------------------------------------------------

    async def list_trades(
        self,
        *,
        ticker: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        min_ts: int | None = None,
        max_ts: int | None = None,
    ) -> TradesPage:
        """One page of ``GET /markets/trades`` (``min_ts``/``max_ts`` in Unix seconds)."""
        body = await self.get(
            "/markets/trades",
            {
                "ticker": ticker,
                "limit": limit,
                "cursor": cursor,
                "min_ts": min_ts,
                "max_ts": max_ts,
            },
        )
        return TradesPage.model_validate(body)

    def iter_trades(
        self, *, max_pages: int | None = None, **filters: Any
    ) -> AsyncIterator[RestTrade]:
        """Every trade matching ``filters``, following the cursor."""
        return _follow(self.list_trades, "trades", max_pages, filters)

    # -- events and series --------------------------------------------------------------------

    async def list_events(
        self,
        *,
        limit: int | None = None,
        cursor: str | None = None,
        status: str | None = None,
        series_ticker: str | None = None,
        with_nested_markets: bool | None = None,
    ) -> EventsPage:
        """One page of ``GET /events``."""
        body = await self.get(
            "/events",
            {
                "limit": limit,
                "cursor": cursor,
                "status": status,
                "series_ticker": series_ticker,
                "with_nested_markets": with_nested_markets,
            },
        )
        return EventsPage.model_validate(body)

    async def get_event(self, event_ticker: str, *, with_nested_markets: bool = False) -> Event:
        """``GET /events/{event_ticker}``; markets from ``event.markets`` or the legacy top level."""
        body = await self.get(
            f"/events/{event_ticker}", {"with_nested_markets": with_nested_markets or None}
        )
        event = dict(body["event"])
        if not event.get("markets") and body.get("markets"):
            event["markets"] = body["markets"]
        return Event.model_validate(event)

    async def list_series(
        self, *, category: str | None = None, tags: str | None = None
    ) -> list[Series]:
        """``GET /series``."""
        body = await self.get("/series", {"category": category, "tags": tags})
        return [Series.model_validate(s) for s in body.get("series") or []]

    async def get_candlesticks(
        self,
        tickers: Sequence[str],
        start_ts: int,
        end_ts: int,
        period_interval: int,
        series: dict[str, str] | None = None,
    ) -> dict[str, list[Candlestick]]:
        """Candlesticks of markets, by ticker: the batched ``GET /markets/candlesticks`` (100
        markets a call), or per market ``GET /series/{series}/markets/{ticker}/candlesticks``
        where the batched endpoint does not serve (a 404 or 400 from it).

        Args:
            tickers: Market tickers.
            start_ts: Unix seconds; candles whose period ends at or after it.
            end_ts: Unix seconds; candles whose period ends at or before it.
            period_interval: Minutes: 1, 60 or 1440.
            series: Series ticker of each market (for the per-market fallback); default: the
                event ticker's first part, as Kalshi names them.
        """
        raw = await self.get_raw_candlesticks(tickers, start_ts, end_ts, period_interval, series)
        return {t: [Candlestick.model_validate(c) for c in cs] for t, cs in raw.items()}

    async def get_raw_candlesticks(
        self,
        tickers: Sequence[str],
        start_ts: int,
        end_ts: int,
        period_interval: int,
        series: dict[str, str] | None = None,
    ) -> dict[str, list[dict[str, Any]]]:
        """:meth:`get_candlesticks` as the exchange sent them (JSON objects, not models).

        For bulk readers that need a few fields of thousands of candles: a typed
        :class:`Candlestick` costs about 100 µs to build, a day of minutes of 20 markets 3 s.
        """
        params = {"start_ts": start_ts, "end_ts": end_ts, "period_interval": period_interval}
        out: dict[str, list[dict[str, Any]]] = {}
        tickers = list(tickers)
        try:
            for i in range(0, len(tickers), 100):
                chunk = tickers[i : i + 100]
                body = await self.get(
                    "/markets/candlesticks", {**params, "market_tickers": ",".join(chunk)}
                )
                for m in body.get("markets") or []:
                    out[str(m.get("market_ticker") or m.get("ticker"))] = list(
                        m.get("candlesticks") or []
                    )
            return out
        except KalshiRestError as exc:
            if exc.status not in (400, 404):
                raise
        for t in tickers:
            s = (series or {}).get(t) or t.split("-", 1)[0]
            body = await self.get(f"/series/{s}/markets/{t}/candlesticks", params)
            out[t] = list(body.get("candlesticks") or [])
        return out

    async def get_series(self, series_ticker: str) -> Series:
        """``GET /series/{series_ticker}``."""
        body = await self.get(f"/series/{series_ticker}")
        return Series.model_validate(body["series"])
