"""REST trades as applyUpdates trade entries, and the window a backfill asks for."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

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


async def test_fetches_start_after_the_newest_trade_held_per_market(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from marketpulse.pipeline import _backfill
    from marketpulse.pipeline._backfill import TradeBackfill
    from marketpulse.pipeline._coalesce import Coalescer

    monkeypatch.setattr(_backfill, "SETTLE_S", 0.05)
    calls: list[tuple[tuple[str, ...], float]] = []

    async def trades_since(tickers: list[str], since_ms: float) -> list[dict[str, Any]]:
        calls.append((tuple(tickers), since_ms))
        return []

    async def newest_stored(tickers: list[str]) -> dict[str, float | None]:
        return {"A": 7_000.0, "B": None}

    bf = TradeBackfill(
        stream_id="s",
        trades_since=trades_since,
        enabled=True,
        coalescer=Coalescer(),
        markets=lambda: ["A", "B"],
        wake=lambda: None,
        spawn=asyncio.ensure_future,
    )
    # The attempt's start: after the store's newest per market (B has none: everything kept).
    await bf.start_from_store(newest_stored)
    bf.feed_state_changed("connected")
    await asyncio.sleep(0.2)
    start = {(("A",), 7_000.0), (("B",), float(MARGIN_MS))}
    assert set(calls) == start and len(calls) == 4  # now, and again once the connection settled
    # A reconnect: after the newest trade received per market, never "since it was noticed".
    calls.clear()
    bf.trade_seen("A", 9_000.0)
    bf.trade_seen("A", 8_000.0)  # an older one does not move it back
    bf.feed_state_changed("reconnecting")
    bf.feed_state_changed("connected")
    await asyncio.sleep(0.2)
    assert set(calls) == {(("A",), 9_000.0), (("B",), float(MARGIN_MS))} and len(calls) == 4


async def test_fetched_trades_come_oldest_first_so_candles_close_on_the_last_one() -> None:
    # REST pages newest first; three fills of one order share an instant. Handed over in
    # that order, the store's candle took the oldest fill for its close and open.
    made = [
        ("f1", "0.5000", "12:00:05Z"),
        ("f2", "0.5100", "12:00:07Z"),
        ("f3", "0.5200", "12:00:07Z"),
    ]

    class NewestFirst(Rest):
        async def _trades(self, **filters: Any) -> AsyncIterator[RestTrade]:
            for trade_id, price, at in reversed(made):
                yield trade(
                    trade_id=trade_id, yes_price_dollars=price, created_time=f"2026-11-24T{at}"
                )

    entries = await fetch_trades_since(NewestFirst(), ["KX-A"], 1_764_000_000_000.0)
    assert [e["id"] for e in entries] == ["f1", "f2", "f3"]
    from marketpulse.marketdata._candles import merge_trade, new_candle

    first = entries[0]
    candle = new_candle("KX-A", "1m", 0.0, first["price"], first["size"], first["timestamp"])
    for e in entries[1:]:
        merge_trade(candle, e["price"], e["size"], e["timestamp"])
    assert (candle["open"], candle["close"]) == (0.50, 0.52)


async def test_no_fetch_asks_for_trades_the_retention_may_have_deleted() -> None:
    # A market whose trades cleanup deleted holds none: the attempt's start fetched it from the
    # exchange's oldest trade, and the store took every deleted trade as new (listed again,
    # counted twice in the hour's candle: 650 trades for 325 in a live run).
    from marketpulse._clock import now_ms
    from marketpulse.pipeline._backfill import RETENTION_MARGIN_MS, TradeBackfill
    from marketpulse.pipeline._coalesce import Coalescer

    calls: list[float] = []

    async def trades_since(tickers: list[str], since_ms: float) -> list[dict[str, Any]]:
        calls.append(since_ms)
        return []

    async def newest_stored(tickers: list[str]) -> dict[str, float | None]:
        return {"A": None}

    bf = TradeBackfill(
        stream_id="s",
        trades_since=trades_since,
        enabled=True,
        coalescer=Coalescer(),
        markets=lambda: ["A"],
        wake=lambda: None,
        spawn=asyncio.ensure_future,
        retention_ms=60_000.0,
    )
    before = now_ms()
    await bf.start_from_store(newest_stored)
    await asyncio.sleep(0.05)
    assert calls and calls[0] >= before - 60_000.0 + RETENTION_MARGIN_MS
