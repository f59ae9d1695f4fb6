"""KalshiRestClient against a real local HTTP server (uvicorn + Starlette) serving the fixtures."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from marketpulse.kalshi import (
    KalshiCredentials,
    KalshiRestClient,
    KalshiRestError,
    generate_private_key_pem,
    load_public_key,
    verify_headers,
)
from marketpulse.kalshi.rest import DEMO_REST_URL, PROD_REST_URL, resolve_rest_url
from polling import until

# Real REST bodies recorded from Kalshi (sources and licenses: tests/fixtures/kalshi/README.md).
REST = Path(__file__).resolve().parent.parent / "fixtures" / "kalshi" / "rest"


def fixture(name: str) -> Any:
    path = REST / f"{name}.json"
    # A missing fixture is a broken checkout: fail, never skip.
    assert path.is_file(), f"fixture {path} is missing (see tests/fixtures/kalshi/README.md)"
    return json.loads(path.read_text())["response"]


class FixtureServer:
    def __init__(self, creds: KalshiCredentials) -> None:
        self.pub = load_public_key(creds.public_key_pem())
        self.key_id = creds.key_id
        self.hits: Counter[str] = Counter()
        self.fail_plan: dict[str, list[int]] = {}
        self.unsigned: list[str] = []
        self.queries: list[dict[str, str]] = []
        self.retry_after = ""
        self.times: list[float] = []
        routes = [
            Route("/trade-api/v2/markets", self.markets),
            Route("/trade-api/v2/markets/trades", self.trades),
            Route("/trade-api/v2/markets/{ticker}", self.market),
            Route("/trade-api/v2/markets/{ticker}/orderbook", self.orderbook),
            Route("/trade-api/v2/events", self.static("events_list_response")),
            Route(
                "/trade-api/v2/events/{t}",
                self.static("event_single_response"),
            ),
            Route("/trade-api/v2/series", self.static("series_list_response")),
            Route(
                "/trade-api/v2/series/{t}",
                self.static("series_single_response"),
            ),
        ]
        self.app = Starlette(routes=routes)
        self.server: uvicorn.Server | None = None
        self.url = ""

    def static(self, name: str) -> Any:
        async def endpoint(request: Request) -> Response:
            return await self.serve(request, fixture(name))

        return endpoint

    async def start(self) -> asyncio.Task[None]:
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"
        )
        self.server = uvicorn.Server(config)
        task = asyncio.create_task(self.server.serve())
        while not self.server.started:
            await asyncio.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/trade-api/v2"
        return task

    async def serve(self, request: Request, body: Any) -> Response:
        path = request.url.path
        self.hits[path] += 1
        self.times.append(time.monotonic())
        self.queries.append(dict(request.query_params))
        if not verify_headers(self.pub, request.headers, "GET", path, key_id=self.key_id):
            self.unsigned.append(path)
            return JSONResponse({"error": "unauthorized"}, status_code=401)
        plan = self.fail_plan.get(path)
        if plan:
            code = plan.pop(0)
            headers = {"Retry-After": self.retry_after} if self.retry_after else None
            return JSONResponse({"error": "too many requests"}, status_code=code, headers=headers)
        return JSONResponse(body)

    async def markets(self, request: Request) -> Response:
        body = fixture("markets_list_response")
        if request.query_params.get("cursor") == body["cursor"]:
            # The second (last) page: the same markets under other tickers, empty cursor.
            page2 = [dict(m, ticker=m["ticker"] + "-P2") for m in body["markets"]]
            return await self.serve(request, {"markets": page2, "cursor": ""})
        return await self.serve(request, body)

    async def market(self, request: Request) -> Response:
        if request.path_params["ticker"] == "CURRENT":
            return await self.serve(
                request,
                {
                    "market": {
                        "ticker": "CURRENT",
                        "event_ticker": "E",
                        "status": "active",
                        "last_price_dollars": "0.0050",
                        "yes_bid_dollars": "0.9925",
                        "yes_ask_dollars": "0.9950",
                        "previous_price_dollars": "0.0100",
                        "volume_fp": "12.50",
                        "open_interest_fp": "3.00",
                        "close_time": "2026-12-31T00:00:00Z",
                        "brand_new_field": {"x": 1},
                    }
                },
            )
        return await self.serve(request, fixture("market_single_response"))

    async def orderbook(self, request: Request) -> Response:
        if request.path_params["ticker"] == "CURRENT":
            return await self.serve(
                request,
                {
                    "orderbook_fp": {
                        "yes_dollars": [["0.0050", "10.00"], ["0.4200", "1.50"]],
                        "no_dollars": [["0.5000", "3.00"]],
                    }
                },
            )
        return await self.serve(request, fixture("orderbook_response"))

    async def trades(self, request: Request) -> Response:
        return await self.serve(request, fixture("trades_list_response"))


@pytest.fixture
async def server() -> AsyncIterator[tuple[FixtureServer, KalshiCredentials]]:
    creds = KalshiCredentials.from_pem("rest-key", generate_private_key_pem())
    srv = FixtureServer(creds)
    task = await srv.start()
    yield srv, creds
    assert srv.server is not None
    srv.server.should_exit = True
    await asyncio.wait_for(task, 10)


@pytest.fixture
async def client(
    server: tuple[FixtureServer, KalshiCredentials],
) -> AsyncIterator[KalshiRestClient]:
    srv, creds = server
    async with KalshiRestClient(srv.url, creds, backoff_base=0.01, max_retries=3) as c:
        yield c


def test_base_urls() -> None:
    assert (
        resolve_rest_url("prod") == PROD_REST_URL == "https://external-api.kalshi.com/trade-api/v2"
    )
    assert resolve_rest_url("demo") == DEMO_REST_URL
    assert resolve_rest_url("http://127.0.0.1:1/trade-api/v2/") == "http://127.0.0.1:1/trade-api/v2"


async def test_markets_pagination_and_fixture_fields(
    client: KalshiRestClient, server: tuple[FixtureServer, KalshiCredentials]
) -> None:
    srv, _ = server
    page = await client.list_markets(limit=5, status="open", tickers=["A", "B"])
    raw = fixture("markets_list_response")
    assert len(page.markets) == 5 and page.cursor == raw["cursor"]
    assert srv.queries[-1] == {"limit": "5", "status": "open", "tickers": "A,B"}
    m0, r0 = page.markets[0], raw["markets"][0]
    assert m0.ticker == r0["ticker"] and m0.event_ticker == r0["event_ticker"]
    assert m0.last_price == D(r0["last_price_dollars"])
    assert m0.yes_bid == D(r0["yes_bid_dollars"]) and m0.previous_price == D(
        r0["previous_price_dollars"]
    )
    assert m0.close_time is not None and m0.close_time.year == 2026
    assert m0.model_extra and "custom_strike" in m0.model_extra  # unknown fields are kept
    all_markets = [m.ticker async for m in client.iter_markets(limit=5)]
    assert len(all_markets) == 10 and all_markets[5].endswith("-P2")
    assert srv.hits["/trade-api/v2/markets"] == 3 and not srv.unsigned  # every request signed


async def test_current_shapes_and_subpenny(client: KalshiRestClient) -> None:
    m = await client.get_market("CURRENT")
    assert (m.last_price, m.yes_bid, m.yes_ask) == (D("0.0050"), D("0.9925"), D("0.9950"))
    assert m.volume == D("12.5") and m.open_interest == D(3) and m.no_bid is None
    assert m.previous_price == D("0.0100")
    ob = await client.get_orderbook("CURRENT", depth=10)
    assert ob.yes == [(D("0.0050"), D(10)), (D("0.42"), D("1.5"))] and ob.no == [(D("0.5"), D(3))]
    book = ob.to_book()
    assert book.valid and book.best_bid == D("0.42") and book.best_ask == D("0.5")


async def test_legacy_fixture_bodies(client: KalshiRestClient) -> None:
    m = await client.get_market("KXMVENFLSINGLEGAME-S202513E70FA7695-688BECB3826")
    assert m.ticker.startswith("KXMVENFL") and m.status == "active"
    assert m.no_bid == D("1.0000") and m.notional_value == D(1)
    assert m.price_ranges[0].step == D("0.001")
    ob = await client.get_orderbook(m.ticker)
    assert ob.yes == [] and ob.no == []  # null sides in the legacy `orderbook` object
    trades = await client.list_trades(ticker="KXELONMARS-99", limit=5)
    raw = fixture("trades_list_response")
    assert len(trades.trades) == len(raw["trades"]) and trades.cursor == raw["cursor"]
    t = trades.trades[0]
    assert t.yes_price == D("0.06") and t.no_price == D("0.94") and t.count == D(1)
    assert t.taker_side == "no" and t.created_time is not None
    events = await client.list_events(limit=5)
    assert events.events[0].event_ticker == "KXELONMARS-99" and len(events.events) == 5
    ev = await client.get_event("KXELONMARS-99")
    assert ev.series_ticker == "KXELONMARS" and ev.markets and ev.markets[0].last_price == D("0.06")
    series = await client.list_series(category="Climate and Weather")
    assert series and series[0].ticker == "CO2"
    assert (await client.get_series("CO2")).frequency == "monthly"


async def test_retries_429_then_success_and_5xx(
    client: KalshiRestClient, server: tuple[FixtureServer, KalshiCredentials]
) -> None:
    srv, _ = server
    path = "/trade-api/v2/markets/CURRENT"
    srv.fail_plan[path] = [429, 503]
    m = await client.get_market("CURRENT")
    assert m.ticker == "CURRENT" and srv.hits[path] == 3 and client.retries == 2
    srv.fail_plan[path] = [429] * 10
    with pytest.raises(KalshiRestError) as ei:
        await client.get_market("CURRENT")
    assert ei.value.status == 429 and srv.hits[path] == 3 + 4  # bounded: 1 + max_retries


async def test_4xx_is_not_retried_and_unsigned_is_refused(
    server: tuple[FixtureServer, KalshiCredentials],
) -> None:
    srv, _ = server
    async with KalshiRestClient(srv.url, None, backoff_base=0.01) as anon:
        with pytest.raises(KalshiRestError) as ei:
            await anon.get_market("CURRENT")
    assert ei.value.status == 401 and anon.retries == 0
    assert "PRIVATE" not in str(ei.value)


async def test_a_429_with_retry_after_pauses_every_caller(
    server: tuple[FixtureServer, KalshiCredentials],
) -> None:
    srv, creds = server
    path = "/trade-api/v2/markets/CURRENT"
    srv.retry_after = "0.6"
    srv.fail_plan[path] = [429]
    async with KalshiRestClient(srv.url, creds, rate_limit=1000.0, backoff_base=0.01) as c:
        t0 = time.monotonic()
        first = asyncio.create_task(c.get_market("CURRENT"))
        # The 429 came (the retry count and the pause are set together); another caller asks
        # meanwhile.
        await until(lambda: c.retries == 1, 10, "the first call's 429")
        other = await c.get_market("CURRENT")
        await first
        # The server said 0.6 s: the retry waited that long, and so did the other caller.
        assert other.ticker == "CURRENT" and c.retries == 1
        assert srv.times[1] - t0 >= 0.55 and srv.times[2] - t0 >= 0.55


async def test_a_burst_of_429s_pauses_for_the_longest_delay_not_their_sum(
    server: tuple[FixtureServer, KalshiCredentials],
) -> None:
    srv, creds = server
    path = "/trade-api/v2/markets/CURRENT"
    srv.retry_after = "0.3"
    srv.fail_plan[path] = [429] * 12
    async with KalshiRestClient(srv.url, creds, rate_limit=1000.0, backoff_base=0.01) as c:
        t0 = time.monotonic()
        got = await asyncio.gather(*(c.get_market("CURRENT") for _ in range(12)))
        took = time.monotonic() - t0
    # Twelve concurrent calls, each refused once with "retry after 0.3 s": one pause of
    # 0.3 s for all of them (they used to add up to 3.6 s).
    assert [m.ticker for m in got] == ["CURRENT"] * 12 and c.retries == 12
    assert 0.25 <= took < 1.5, took


async def test_the_client_stays_under_its_tier(
    server: tuple[FixtureServer, KalshiCredentials],
) -> None:
    srv, creds = server
    async with KalshiRestClient(srv.url, creds, rate_limit=25.0) as c:
        t0 = time.monotonic()
        await asyncio.gather(*(c.get_market("CURRENT") for _ in range(50)))
        took = time.monotonic() - t0
    times = sorted(srv.times)
    # A burst of a second's worth (25), then 25 a second: 50 requests take >= 1 s, and no
    # one-second window holds more than the burst plus that second's refill.
    assert took >= 0.95 and c.limiter is not None and c.limiter.waited > 0
    assert max(sum(1 for t in times if s <= t < s + 1.0) for s in times) <= 51
