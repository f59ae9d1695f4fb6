"""marketData functions against a real engine: results, idempotency, ordering, staleness,
candles, cleanup and argument errors."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Any

import orjson

from marketpulse.marketdata._candles import new_candle
from marketpulse.marketdata._pricing import DAY_MS
from marketpulse.marketdata.functions import marketData
from marketpulse.marketdata.packed_candles import CANDLE_FIELDS, pack_rows
from marketpulse.reactive.engine import Engine
from marketpulse.reactive.persistence import open_persistence
from marketpulse.reactive.values import value_to_json

from .conftest import Store

T0 = 1_700_000_000_000.0
MIN = 60_000.0


def trade(
    i: int,
    ticker: str = "A",
    price: float = 0.5,
    ts: float = T0,
    side: str = "buy",
    size: float = 1.0,
) -> dict[str, Any]:
    return {
        "id": f"{ticker}-t{i}",
        "ticker": ticker,
        "side": side,
        "price": price,
        "size": size,
        "timestamp": ts,
    }


def book(
    ticker: str, ts: float, bids: list[list[float]], asks: list[list[float]]
) -> dict[str, Any]:
    return {"ticker": ticker, "bids": bids, "asks": asks, "ts": ts, "valid": True}


# --- getPrice -------------------------------------------------------------------------------


async def test_unknown_ticker_is_null_everywhere(store: Store) -> None:
    assert store.query("getPrice", ticker="NOPE") is None
    assert store.query("getOrderbook", ticker="NOPE") is None
    assert store.query("getRecentTrades", ticker="NOPE") is None
    assert store.query("getCandles", ticker="NOPE", interval="1m") is None
    assert store.query("getMarket", ticker="NOPE") is None


async def test_price_is_mid_until_a_trade_then_last_trade(store: Store) -> None:
    await store.apply(
        prices=[
            {
                "ticker": "A",
                "yesBid": 0.40,
                "yesAsk": 0.50,
                "volume": 10,
                "openInterest": 7,
                "ts": T0,
            }
        ]
    )
    p = store.query("getPrice", ticker="A")
    assert p == {
        "ticker": "A",
        "price": 0.45,
        "changePercent24h": 0.0,
        "yesBid": 0.40,
        "yesAsk": 0.50,
        "volume": 10.0,
        "openInterest": 7.0,
        "updatedAt": T0,
        "live": True,
    }
    await store.apply(trades=[trade(1, price=0.48, ts=T0 + 5)])
    p = store.query("getPrice", ticker="A")
    assert p["price"] == 0.48 and p["updatedAt"] == T0 + 5
    assert p["yesBid"] == 0.40  # trades do not touch the ticker fields


async def test_change_uses_previous_price_until_24h_of_history(store: Store) -> None:
    await store.mutate(
        "upsertMarkets",
        markets=[{"ticker": "A", "title": "A?", "previousPrice": 0.40, "status": "active"}],
    )
    await store.apply(trades=[trade(1, price=0.50, ts=T0)])
    assert store.query("getPrice", ticker="A")["changePercent24h"] == 25.0
    # A day later the store has its own price from 24 h earlier (0.50), and uses it.
    await store.apply(trades=[trade(2, price=0.60, ts=T0 + DAY_MS + MIN)])
    p = store.query("getPrice", ticker="A")
    assert p["price"] == 0.60
    assert p["changePercent24h"] == 20.0
    assert store.query("getMarket", ticker="A")["changePercent24h"] == 20.0


async def test_change_is_against_the_price_that_held_24h_earlier(store: Store) -> None:
    hour = 60 * MIN
    await store.apply(trades=[trade(1, price=0.50, ts=T0)])
    await store.apply(trades=[trade(2, price=0.40, ts=T0 + hour)])
    # Quiet for 29 h: 24 h before the next trade, the price was still 0.40 (set at T0 + 1 h).
    await store.apply(trades=[trade(3, price=0.48, ts=T0 + 30 * hour)])
    assert store.query("getPrice", ticker="A")["changePercent24h"] == 20.0
    # 24 h before T0 + 24 h 10 min, B was at 0.30 (its 0.60 came only at T0 + 30 min).
    await store.apply(prices=[{"ticker": "B", "price": 0.3, "ts": T0}])
    await store.apply(prices=[{"ticker": "B", "price": 0.6, "ts": T0 + 30 * MIN}])
    await store.apply(prices=[{"ticker": "B", "price": 0.45, "ts": T0 + 24 * hour + 10 * MIN}])
    assert store.query("getPrice", ticker="B")["changePercent24h"] == 50.0


async def test_a_quiet_market_keeps_its_24h_change_through_cleanup(store: Store) -> None:
    hour = 60 * MIN
    await store.apply(trades=[trade(1, price=0.40, ts=T0)])
    await store.apply(trades=[trade(2, price=0.50, ts=T0 + 10 * MIN)])
    # Quiet for 50 h, then a trade: 24 h before it the price was 0.50.
    last = T0 + 50 * hour
    await store.apply(trades=[trade(3, price=0.60, ts=last)])
    assert store.query("getPrice", ticker="A")["changePercent24h"] == 20.0
    # Cleanup goes by a sample's time: the one the change reads must not look 50 h old.
    await store.mutate("cleanup", olderThanMs=DAY_MS, nowMs=last + MIN, limit=1000)
    assert store.query("getPrice", ticker="A")["changePercent24h"] == 20.0


async def test_older_price_is_ignored_and_ticker_price_does_not_override_newer_trade(
    store: Store,
) -> None:
    await store.apply(prices=[{"ticker": "A", "yesBid": 0.40, "yesAsk": 0.50, "ts": T0 + 10}])
    r = await store.apply(prices=[{"ticker": "A", "yesBid": 0.10, "yesAsk": 0.90, "ts": T0 + 5}])
    assert r["skipped"] == 1 and r["prices"] == 0
    assert store.query("getPrice", ticker="A")["yesBid"] == 0.40
    await store.apply(trades=[trade(1, price=0.47, ts=T0 + 30)])
    await store.apply(prices=[{"ticker": "A", "price": 0.44, "yesBid": 0.41, "ts": T0 + 20}])
    p = store.query("getPrice", ticker="A")
    assert p["price"] == 0.47 and p["yesBid"] == 0.41


# --- getOrderbook ---------------------------------------------------------------------------


async def test_orderbook_depth_spread_mid(store: Store) -> None:
    bids = [[round(0.50 - i * 0.01, 2), 10.0 + i] for i in range(15)]
    asks = [[round(0.55 + i * 0.01, 2), 20.0 + i] for i in range(15)]
    await store.apply(books=[book("A", T0, bids, asks)])
    ob = store.query("getOrderbook", ticker="A")
    assert ob["bids"] == bids[:10] and ob["asks"] == asks[:10]
    assert ob["spread"] == 0.05 and ob["mid"] == 0.525 and ob["updatedAt"] == T0
    assert store.query("getOrderbook", ticker="A", depth=3)["bids"] == bids[:3]
    assert len(store.query("getOrderbook", ticker="A", depth=200)["asks"]) == 15


async def test_one_sided_book_has_null_spread(store: Store) -> None:
    await store.apply(books=[book("A", T0, [[0.3, 5.0]], [])])
    ob = store.query("getOrderbook", ticker="A")
    assert ob["asks"] == [] and ob["spread"] is None and ob["mid"] is None


async def test_invalid_book_is_not_served_until_a_valid_one(store: Store) -> None:
    await store.apply(books=[book("A", T0, [[0.4, 1.0]], [[0.6, 1.0]])])
    await store.apply(books=[{"ticker": "A", "ts": T0 + 1, "valid": False}])
    assert store.query("getOrderbook", ticker="A") is None
    # A stale valid book (older than the invalidation) must not resurrect the bad state.
    r = await store.apply(books=[book("A", T0, [[0.4, 1.0]], [[0.6, 1.0]])])
    assert r["skipped"] == 1
    assert store.query("getOrderbook", ticker="A") is None
    await store.apply(books=[book("A", T0 + 2, [[0.45, 2.0]], [[0.55, 3.0]])])
    assert store.query("getOrderbook", ticker="A")["bids"] == [[0.45, 2.0]]


async def test_older_book_is_ignored(store: Store) -> None:
    await store.apply(books=[book("A", T0 + 10, [[0.4, 1.0]], [])])
    r = await store.apply(books=[book("A", T0 + 9, [[0.1, 1.0]], [])])
    assert r == {"prices": 0, "books": 0, "trades": 0, "skipped": 1, "revived": 0}
    assert store.query("getOrderbook", ticker="A")["bids"] == [[0.4, 1.0]]


# --- getRecentTrades ------------------------------------------------------------------------


async def test_recent_trades_newest_first_with_limit(store: Store) -> None:
    # Sent out of order, across two batches.
    await store.apply(trades=[trade(i, price=0.5 + i / 100, ts=T0 + i * 1000) for i in (3, 1, 4)])
    await store.apply(
        trades=[trade(i, price=0.5 + i / 100, ts=T0 + i * 1000, side="sell") for i in (2, 0)]
    )
    trades = store.query("getRecentTrades", ticker="A")
    assert [t["id"] for t in trades] == ["A-t4", "A-t3", "A-t2", "A-t1", "A-t0"]
    assert trades[0] == {
        "id": "A-t4",
        "ticker": "A",
        "side": "buy",
        "price": 0.54,
        "size": 1.0,
        "timestamp": T0 + 4000,
    }
    assert trades[2]["side"] == "sell"
    assert [t["id"] for t in store.query("getRecentTrades", ticker="A", limit=2)] == [
        "A-t4",
        "A-t3",
    ]
    assert store.query("getRecentTrades", ticker="B") is None


async def test_known_market_without_trades_is_empty_list(store: Store) -> None:
    await store.apply(books=[book("A", T0, [[0.4, 1.0]], [])])
    assert store.query("getRecentTrades", ticker="A") == []
    assert store.query("getCandles", ticker="A", interval="5m") == []


async def test_replayed_batch_is_idempotent(store: Store) -> None:
    batch: dict[str, Any] = {
        "prices": [{"ticker": "A", "yesBid": 0.4, "yesAsk": 0.5, "ts": T0}],
        "books": [book("A", T0, [[0.4, 1.0]], [[0.5, 2.0]])],
        "trades": [trade(1, ts=T0), trade(2, ts=T0 + 1), trade(2, ts=T0 + 1)],
    }
    first = await store.apply(**batch)
    assert first == {"prices": 1, "books": 1, "trades": 2, "skipped": 1, "revived": 0}
    snapshot = [
        store.query("getPrice", ticker="A"),
        store.query("getOrderbook", ticker="A"),
        store.query("getRecentTrades", ticker="A"),
        store.query("getCandles", ticker="A", interval="1m"),
    ]
    second = await store.apply(**batch)
    assert second["trades"] == 0 and second["skipped"] == 3
    assert snapshot == [
        store.query("getPrice", ticker="A"),
        store.query("getOrderbook", ticker="A"),
        store.query("getRecentTrades", ticker="A"),
        store.query("getCandles", ticker="A", interval="1m"),
    ]
    assert snapshot[3][0]["volume"] == 2.0  # the duplicate did not count twice


# --- candles --------------------------------------------------------------------------------


async def test_candles_from_trades_with_carry_over(store: Store) -> None:
    start = T0 - T0 % (60 * MIN)  # an hour boundary
    await store.apply(
        trades=[
            trade(1, price=0.50, ts=start + 1_000, size=2),
            trade(2, price=0.55, ts=start + 20_000, size=1),
            trade(3, price=0.45, ts=start + 40_000, size=3),
            # minute 1 and 2: no trades
            trade(4, price=0.60, ts=start + 3 * MIN + 5_000, size=4),
        ]
    )
    # A late trade for minute 0 (sent after minute 3's) still becomes its open.
    await store.apply(trades=[trade(5, price=0.52, ts=start + 500, size=1)])
    c1 = store.query("getCandles", ticker="A", interval="1m")
    assert [c["start"] for c in c1] == [start + i * MIN for i in range(4)]
    assert c1[0] == {
        "start": start,
        "open": 0.52,
        "high": 0.55,
        "low": 0.45,
        "close": 0.45,
        "volume": 7.0,
        "trades": 4.0,
    }
    assert c1[1] == {
        "start": start + MIN,
        "open": 0.45,
        "high": 0.45,
        "low": 0.45,
        "close": 0.45,
        "volume": 0.0,
        "trades": 0.0,
    }
    assert c1[2]["close"] == 0.45 and c1[3]["close"] == 0.60
    [c5] = store.query("getCandles", ticker="A", interval="5m")
    assert (c5["open"], c5["high"], c5["low"], c5["close"], c5["volume"]) == (
        0.52,
        0.60,
        0.45,
        0.60,
        11.0,
    )
    assert store.query("getCandles", ticker="A", interval="1h")[0]["trades"] == 5.0
    assert len(store.query("getCandles", ticker="A", interval="1m", limit=2)) == 2


def exchange_candle(start: float, close: float, interval: str = "1m") -> dict[str, Any]:
    return {
        "ticker": "A",
        "interval": interval,
        "start": start,
        "open": 0.40,
        "high": 0.70,
        "low": 0.30,
        "close": close,
        "volume": 10.0,
    }


async def test_history_candles_win_over_built_ones_across_packed_documents(store: Store) -> None:
    start = T0 - T0 % (60 * MIN)
    # A live trade in minute 0 (which the exchange's history covers too) and in minute 200.
    await store.apply(
        trades=[trade(1, price=0.90, ts=start + 1_000), trade(2, price=0.20, ts=start + 200 * MIN)]
    )
    # 150 minutes of history (three 60-minute documents), minute 5 without a trade.
    day = [exchange_candle(start + i * MIN, 0.5 + i / 1000) for i in range(150) if i != 5]
    assert await store.mutate("upsertCandles", candles=day[:100]) == {
        "inserted": 100,
        "updated": 0,
    }
    # Re-sent (overlapping the first call) and one candle corrected: written once each.
    again = [*day[90:-1], {**day[-1], "close": 0.99}]
    assert await store.mutate("upsertCandles", candles=again) == {"inserted": 49, "updated": 0}
    assert await store.mutate("upsertCandles", candles=[day[-1]]) == {
        "inserted": 0,
        "updated": 1,
    }
    c1 = store.query("getCandles", ticker="A", interval="1m", limit=1000)
    assert [c["start"] for c in c1] == [start + i * MIN for i in range(201)]
    # The exchange's candle of minute 0 replaces the one built from the live trade.
    assert c1[0] == {
        "start": start,
        "open": 0.40,
        "high": 0.70,
        "low": 0.30,
        "close": 0.5,
        "volume": 10.0,
        "trades": 0.0,
    }
    assert c1[5] == {**c1[4], "start": start + 5 * MIN, "open": c1[4]["close"], "high":
                     c1[4]["close"], "low": c1[4]["close"], "volume": 0.0}  # fmt: skip
    assert c1[149]["close"] == day[-1]["close"]
    assert c1[150]["close"] == c1[199]["close"] == c1[149]["close"]  # carried to minute 200
    assert c1[200]["close"] == 0.20 and c1[200]["trades"] == 1.0
    # The newest ``limit`` (history and built together), however the documents split them.
    for limit in (1, 2, 60, 61, 130):
        assert store.query("getCandles", ticker="A", interval="1m", limit=limit) == c1[-limit:]
    # With ``before``: what started before it, as in the whole (the filled minutes too).
    for k in (1, 5, 6, 60, 61, 149, 150, 170, 200):
        before = start + k * MIN
        for limit in (1, 60, 1000):
            got = store.query("getCandles", ticker="A", interval="1m", limit=limit, before=before)
            assert got == [c for c in c1 if c["start"] < before][-limit:], (k, limit)
    # The open candle (minute 200) is left out, its minute filled at the last close before it.
    after = store.query("getCandles", ticker="A", interval="1m", limit=3, before=start + 201 * MIN)
    assert after == [c1[198], c1[199], {**c1[199], "start": start + 200 * MIN}]
    # Cleanup drops a history document once its last minute ended by the cutoff.
    r = await store.mutate(
        "cleanup", olderThanMs=60 * MIN, nowMs=start + 120 * MIN + 60 * MIN, limit=1000
    )
    assert r["more"] is False
    left = store.query("getCandles", ticker="A", interval="1m", limit=1000)
    assert left[0]["start"] == start + 120 * MIN and left[-1]["start"] == start + 200 * MIN


async def test_packed_history_is_the_same_candles_and_bad_rows_are_refused(store: Store) -> None:
    start = T0 - T0 % (60 * MIN)
    day = [exchange_candle(start + i * MIN, 0.5 + i / 1000) for i in range(90)]
    await store.mutate("upsertCandles", candles=day)
    as_objects = store.query("getCandles", ticker="A", interval="1m", limit=200)
    rows = [tuple(c[k] for k in CANDLE_FIELDS) for c in day]
    packed = [{"ticker": "B", "interval": "1m", "rows": pack_rows(rows)}]
    await store.apply(trades=[trade(1, ticker="B", price=0.5, ts=start - MIN)])
    assert await store.mutate("upsertCandles", packed=packed) == {"inserted": 90, "updated": 0}
    as_packed = store.query("getCandles", ticker="B", interval="1m", limit=200)
    assert as_packed[1:] == as_objects and as_packed[0]["trades"] == 1.0
    for bad, says in [
        ({**packed[0], "rows": pack_rows(rows)[:-1]}, "packed[1].rows: expected bytes, 48 a"),
        ({**packed[0], "rows": [list(r) for r in rows]}, "packed[1].rows: expected bytes"),
        ({**packed[0], "rows": pack_rows([(start, float("nan"), 1, 1, 1, 1)])}, "finite"),
        ({**packed[0], "interval": "2m"}, "packed[1].interval: one of"),
    ]:
        assert says in await store.mutate_error("upsertCandles", packed=[packed[0], bad]), says
    assert store.query("getCandles", ticker="B", interval="1m", limit=200) == as_packed


# --- markets, streams -----------------------------------------------------------------------


async def test_markets_list_filter_search_and_get(store: Store) -> None:
    await store.mutate(
        "upsertMarkets",
        markets=[
            {
                "ticker": "FED-1",
                "eventTicker": "FED",
                "title": "Fed hikes?",
                "status": "active",
                "closeTime": T0,
                "lastPrice": 0.3,
            },
            {"ticker": "CPI-1", "eventTicker": "CPI", "title": "CPI above 3%?", "status": "active"},
            {"ticker": "OLD-1", "eventTicker": "OLD", "title": "Old one", "status": "settled"},
        ],
    )
    assert [m["ticker"] for m in store.query("listMarkets")] == ["CPI-1", "FED-1", "OLD-1"]
    assert [m["ticker"] for m in store.query("listMarkets", status="active")] == ["CPI-1", "FED-1"]
    assert [m["ticker"] for m in store.query("listMarkets", search="fed")] == ["FED-1"]
    assert [m["ticker"] for m in store.query("listMarkets", limit=1)] == ["CPI-1"]
    fed = store.query("getMarket", ticker="FED-1")
    assert fed["title"] == "Fed hikes?" and fed["eventTicker"] == "FED" and fed["closeTime"] == T0
    assert fed["price"] == 0.3  # the REST snapshot until the feed says otherwise
    await store.apply(
        markets=[{"ticker": "FED-1", "status": "closed"}], trades=[trade(1, "FED-1", price=0.35)]
    )
    assert store.query("getMarket", ticker="FED-1")["status"] == "closed"
    assert store.query("listMarkets", status="closed")[0]["price"] == 0.35
    # Without prices: the same markets, no price fields (a list whose rows subscribe to theirs).
    bare = store.query("listMarkets", status="closed", prices=False)[0]
    priced = store.query("listMarkets", status="closed")[0]
    no_price = dict.fromkeys(("price", "yesBid", "yesAsk", "volume", "openInterest"))
    assert bare == {**priced, **no_price, "live": False}
    # A re-upsert does not blank fields it omits, nor override the feed's price.
    await store.mutate(
        "upsertMarkets", markets=[{"ticker": "FED-1", "subtitle": "Dec", "lastPrice": 0.1}]
    )
    fed = store.query("getMarket", ticker="FED-1")
    assert (fed["title"], fed["subtitle"], fed["price"]) == ("Fed hikes?", "Dec", 0.35)


async def test_a_rest_snapshot_taken_before_a_settlement_does_not_undo_it(store: Store) -> None:
    # The feed's lifecycle event lands first; the REST snapshot fetched before it lands after.
    await store.apply(
        markets=[
            {
                "ticker": "FED-1",
                "status": "finalized",
                "result": "yes",
                "settlementValue": 1.0,
                "settledAt": T0,
            }
        ]
    )
    stale = {"ticker": "FED-1", "title": "Fed hikes?", "status": "active", "result": None}
    await store.mutate("upsertMarkets", markets=[{**stale, "settlementValue": None}])
    fed = store.query("getMarket", ticker="FED-1")
    assert (fed["status"], fed["result"], fed["settlementValue"]) == ("finalized", "yes", 1.0)
    assert fed["title"] == "Fed hikes?"  # the rest of the snapshot is taken
    # A later stage from REST still applies (e.g. a market the feed saw only as active).
    await store.apply(markets=[{"ticker": "CPI-1", "status": "active"}])
    await store.mutate("upsertMarkets", markets=[{"ticker": "CPI-1", "status": "closed"}])
    assert store.query("getMarket", ticker="CPI-1")["status"] == "closed"


async def test_stream_status(store: Store) -> None:
    status = {
        "streamId": "kalshi-1",
        "state": "connected",
        "markets": ["A", "B"],
        "messagesPerSecond": 120.0,
        "lastMessageAt": T0,
        "reconnects": 1,
        "gaps": 0,
        "lagMs": 3.5,
        "updatedAt": T0,
    }
    assert await store.mutate("reportStreamStatus", status=status) is True
    assert (
        await store.mutate(
            "reportStreamStatus", status={**status, "state": "stale", "updatedAt": T0 - 1}
        )
        is False
    )
    [s] = store.query("getStreamStatus")
    assert (
        s["state"] == "connected"
        and s["markets"] == ["A", "B"]
        and s["marketCount"] == 2.0
        and s["lagMs"] == 3.5
    )


# --- cleanup --------------------------------------------------------------------------------


async def test_cleanup_deletes_in_bounded_chunks(store: Store) -> None:
    old = [trade(i, price=0.5, ts=T0 + i * MIN) for i in range(12)]  # 12 trades, 12 1m candles
    await store.apply(trades=old)
    await store.apply(trades=[trade(100, price=0.6, ts=T0 + 3 * 60 * MIN)])
    cutoff = T0 + 2 * 60 * MIN
    chunks = []
    while True:
        r = await store.mutate("cleanup", olderThanMs=60 * MIN, nowMs=cutoff + 60 * MIN, limit=7)
        chunks.append(r)
        assert r["deleted"] <= 7
        if not r["more"]:
            break
    # 12 trades + 12 one-minute candles + 3 five-minute candles; the one-hour candle is kept
    # a month (the hourly history fetched when a market is added).
    assert sum(c["deleted"] for c in chunks) == 27
    assert all(c["more"] for c in chunks[:-1]) and len(chunks) == 4
    assert [t["id"] for t in store.query("getRecentTrades", ticker="A")] == ["A-t100"]
    assert len(store.query("getCandles", ticker="A", interval="1m")) == 1
    assert await store.mutate("cleanup", olderThanMs=60 * MIN, nowMs=cutoff + 60 * MIN) == {
        "deleted": 0,
        "more": False,
    }
    # Without nowMs the age counts back from the server's clock: these trades (2023) go.
    # 1 trade, its 3 candles, the first hour's candle and 1 price-history sample (the price
    # before the second batch): all older than a month too.
    assert await store.mutate("cleanup", olderThanMs=DAY_MS) == {"deleted": 6, "more": False}
    assert store.query("getRecentTrades", ticker="A") == []
    assert store.query("getCandles", ticker="A", interval="1h") == []


# --- errors ---------------------------------------------------------------------------------


async def test_argument_errors_are_clear(store: Store) -> None:
    for name, args in [
        ("getOrderbook", {"ticker": "A", "depth": 201}),
        ("getOrderbook", {"ticker": "A", "depth": "10"}),
        ("getOrderbook", {"ticker": "A", "depth": 2.5}),
        ("getRecentTrades", {"ticker": "A", "limit": 0}),
        ("getRecentTrades", {"ticker": 5}),
        ("getCandles", {"ticker": "A", "interval": "2m"}),
        ("getCandles", {"ticker": "A", "interval": "1m", "before": -1.0}),
        ("getCandles", {"ticker": "A", "interval": "1m", "before": float("inf")}),
        ("getCandles", {"ticker": "A", "interval": "1m", "before": float("nan")}),
        ("listMarkets", {"limit": 1000}),
        ("getPrice", {}),
        ("getPrice", {"ticker": "X" * 300}),
    ]:
        message = store.query_error(name, **args)
        assert "ArgumentValidationError" in message, (name, message)
    # Integral floats are fine: the Python client sends every number as a float.
    assert store.query("getRecentTrades", ticker="A", limit=5.0) is None


async def test_bad_batch_is_refused_whole(store: Store) -> None:
    message = await store.mutate_error(
        "applyUpdates",
        batch={
            "trades": [trade(1)],
            "books": [{"ticker": "A", "ts": T0, "bids": [[0.5]], "asks": []}],
        },
    )
    assert "books[0].bids[0]" in message
    assert store.query("getRecentTrades", ticker="A") is None  # the valid trade was not written


async def test_internal_mutations_need_the_admin_key(store: Store) -> None:
    for name, args in [
        ("applyUpdates", {"batch": {"trades": [trade(1)]}}),
        ("upsertMarkets", {"markets": []}),
        ("cleanup", {"olderThanMs": MIN}),
    ]:
        message = await store.mutate_error(name, identity=store.anon, **args)
        assert "Could not find public function" in message
    assert store.query("getRecentTrades", ticker="A") is None


async def test_cleanup_argument_errors(store: Store) -> None:
    for args in [{"olderThanMs": -1}, {"olderThanMs": "1h"}, {"olderThanMs": MIN, "limit": 0}, {}]:
        assert "ArgumentValidationError" in await store.mutate_error("cleanup", **args)


async def test_upsert_accepts_what_the_pipeline_sends_from_rest(store: Store) -> None:
    # Kalshi REST may leave status and subtitle empty: the entry is still stored.
    await store.mutate(
        "upsertMarkets",
        markets=[
            {
                "ticker": "X",
                "eventTicker": "",
                "seriesTicker": "",
                "title": "",
                "subtitle": "",
                "status": "",
            }
        ],
    )
    market = store.query("getMarket", ticker="X")
    assert market["title"] == "X" and market["status"] == "unknown"


async def test_a_quiet_market_s_open_candles_go_with_cleanup_hourly_ones_stay(
    store: Store,
) -> None:
    start = T0 - T0 % (60 * MIN)
    await store.apply(trades=[trade(1, price=0.5, ts=start + MIN)])
    # Two hours later, with an hour's retention: the minute candles are past it, the hourly
    # one is kept a month (as a closed candle now).
    now = start + 3 * 60 * MIN
    assert await store.mutate("cleanup", olderThanMs=60 * MIN, nowMs=now) == {
        "deleted": 3,  # the trade and its 1m and 5m candles
        "more": False,
    }
    assert store.query("getCandles", ticker="A", interval="1m") == []
    [hourly] = store.query("getCandles", ticker="A", interval="1h")
    assert (hourly["start"], hourly["trades"]) == (start, 1.0)
    # The market trades again: the hourly candle is its newest, and the new hour follows it.
    await store.apply(trades=[trade(2, price=0.7, ts=now)])
    assert [
        (c["start"], c["close"], c["trades"])
        for c in store.query("getCandles", ticker="A", interval="1h")
    ] == [
        (start, 0.5, 1.0),
        (start + 60 * MIN, 0.5, 0.0),
        (start + 120 * MIN, 0.5, 0.0),
        (now, 0.7, 1.0),
    ]
    assert await store.mutate("cleanup", olderThanMs=60 * MIN, nowMs=now) == {
        "deleted": 0,
        "more": False,
    }


async def test_cleanup_of_quiet_markets_goes_in_bounded_chunks(store: Store) -> None:
    start = T0 - T0 % (60 * MIN)
    await store.apply(trades=[trade(i, ticker=f"M{i}", ts=start) for i in range(5)])
    now = start + 3 * 60 * MIN
    # Each quiet market is three candles to delete (the hourly ones too, at this retention).
    runs = []
    while not runs or runs[-1]["more"]:
        runs.append(
            await store.mutate("cleanup", olderThanMs=60 * MIN, nowMs=now + 31 * DAY_MS, limit=7)
        )
    # Two markets a call (a third would pass the limit), then the trades.
    assert [r["deleted"] for r in runs[:2]] == [6, 6] and all(r["deleted"] <= 7 for r in runs)
    assert sum(r["deleted"] for r in runs) == 5 * 4  # 5 trades, 15 candles
    for i in range(5):
        assert store.query("getCandles", ticker=f"M{i}", interval="1h") == []


async def test_candles_stored_one_document_each_are_taken_in_by_the_next_trade(
    tmp_path: Path,
) -> None:
    """A store written before a market's open candles shared one document kept each candle,
    the newest too, in ``candles``: its next trade carries on from them."""
    path = tmp_path / "store.db"
    start = T0 - T0 % (60 * MIN)
    engine = await Engine.open(open_persistence(f"sqlite:{path}"), [marketData])
    await engine.close()
    legacy = [
        {**new_candle("A", "1m", start, 0.4, 2.0, start + 1_000), "_creationTime": start},
        {**new_candle("A", "1m", start + MIN, 0.5, 1.0, start + MIN), "_creationTime": start},
        {**new_candle("A", "5m", start, 0.4, 3.0, start), "_creationTime": start},
        {**new_candle("A", "1h", start, 0.4, 3.0, start), "_creationTime": start},
    ]
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.executemany(
            "INSERT INTO documents (id, tbl, ts, doc) VALUES (?, 'candles', 0, ?)",
            [
                (f"legacy{i}", orjson.dumps(value_to_json({**d, "_id": f"legacy{i}"})))
                for i, d in enumerate(legacy)
            ],
        )
    engine = await Engine.open(open_persistence(f"sqlite:{path}"), [marketData])
    try:
        store = Store(engine)
        # Minute 1 goes on; a late trade of minute 0 joins its closed candle.
        await store.apply(
            trades=[
                trade(1, price=0.6, ts=start + MIN + 5_000),
                trade(2, price=0.3, ts=start + 2_000),
            ]
        )
        c1 = store.query("getCandles", ticker="A", interval="1m")
        assert [(c["start"], c["high"], c["low"], c["close"], c["trades"]) for c in c1] == [
            (start, 0.4, 0.3, 0.3, 2.0),
            (start + MIN, 0.6, 0.5, 0.6, 2.0),
        ]
        [c5] = store.query("getCandles", ticker="A", interval="5m")
        [h1] = store.query("getCandles", ticker="A", interval="1h")
        assert c5["trades"] == h1["trades"] == 3.0 and c5["volume"] == 5.0
    finally:
        await engine.close()
