"""Market metadata over REST (the simulator's, through the real REST client): the store entry,
and the price grid that the feed checks book prices against."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from marketpulse.kalshi import KalshiCredentials, KalshiProtocol, KalshiRestClient
from marketpulse.pipeline._metadata import fetch_markets, price_grid
from marketpulse.simulator import Simulator, SimulatorConfig


@pytest.fixture
async def sim(tmp_path: Any) -> AsyncIterator[Simulator]:
    s = Simulator(
        SimulatorConfig(host="127.0.0.1", port=0, markets=6, seed=3, key_dir=str(tmp_path))
    )
    await s.start()
    yield s
    await s.stop()


async def test_fetched_markets_give_the_feed_their_price_grid(sim: Simulator) -> None:
    tickers = sorted(sim.markets)[:3]
    creds = KalshiCredentials.from_file(sim.key_id, sim.private_key_path)
    protocol = KalshiProtocol(tickers, ("orderbook_delta",))
    seen: list[str] = []

    def on_market(market: Any) -> None:
        seen.append(market.ticker)
        protocol.set_price_grid(market.ticker, price_grid(market) or None)

    paths: list[str] = []

    class Counting(httpx.AsyncHTTPTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            paths.append(request.url.path.removeprefix("/trade-api/v2"))
            return await super().handle_async_request(request)

    async with KalshiRestClient(sim.rest_url, creds, transport=Counting()) as rest:
        entries = await fetch_markets(rest, [*tickers, "KXNOPE-1"], on_market)
    assert sorted(seen) == tickers and sorted(e["ticker"] for e in entries) == tickers
    # One batched request for all, then the ticker it did not return asked alone: at start these
    # share the client's rate limit with the history's candle requests.
    assert sorted(paths) == ["/markets", "/markets/KXNOPE-1"], paths
    for t in tickers:
        grid = protocol._grids[t]
        assert grid and all(isinstance(x, Decimal) for r in grid for x in r)
        assert grid[0][0] <= Decimal("0.01") and grid[-1][1] >= Decimal("0.99")
