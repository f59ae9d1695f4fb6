"""REST trades as applyUpdates trade entries, and the window a backfill asks for."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from marketpulse.kalshi import RestTrade
from marketpulse.pipeline._backfill import MARGIN_MS, fetch_trades_since, rest_trade_entry


def trade(**kw: Any) -> RestTrade:
    """A trade as ``GET /markets/trades`` sends it (dollar strings, fixed-point count)."""
    wire: dict[str, Any] = {
        "trade_id": "t1",
        "ticker": "KX-A",
        "yes_price_dollars": "0.4200",
        "no_price_dollars": "0.5800",
        "count_fp": "3.00",
        "taker_outcome_side": "no",
        "created_time": "2026-11-24T12:00:00.250Z",
    }
    return RestTrade.model_validate({**wire, **kw})


def test_rest_trade_entry_maps_the_taker_side_and_the_time() -> None:
    entry = rest_trade_entry(trade())
    assert entry == {
        "id": "t1",
        "ticker": "KX-A",
        "side": "sell",  # the taker bought NO, i.e. sold YES
        "price": 0.42,
        "size": 3.0,
        "timestamp": datetime(2026, 11, 24, 12, 0, 0, 250_000, tzinfo=UTC).timestamp() * 1000,
    }
    assert rest_trade_entry(trade(taker_outcome_side="yes"))["side"] == "buy"  # type: ignore[index]
    assert rest_trade_entry(trade(created_time=None)) is None
    assert rest_trade_entry(trade(trade_id="")) is None


class Rest:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    async def _trades(self, **filters: Any) -> AsyncIterator[RestTrade]:
        self.calls.append(filters)
        yield trade(ticker=filters["ticker"], trade_id=f"{filters['ticker']}-1")

    def iter_trades(self, **filters: Any) -> AsyncIterator[RestTrade]:
        return self._trades(**filters)


async def test_fetch_asks_each_market_from_before_the_outage_in_whole_seconds() -> None:
    rest = Rest()
    since_ms = 1_764_000_000_500.0
    entries = await fetch_trades_since(rest, ["KX-A", "KX-B"], since_ms)
    assert sorted(e["id"] for e in entries) == ["KX-A-1", "KX-B-1"]
    assert {c["ticker"] for c in rest.calls} == {"KX-A", "KX-B"}
    assert {c["min_ts"] for c in rest.calls} == {int((since_ms - MARGIN_MS) // 1000)}
