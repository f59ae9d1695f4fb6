"""Property test of the write path: trades sent in any order, split into any batches, with
replays, give the same trades, candles and last price as a reference built from the unique
trades. Runs the real engine (in-memory SQLite file per example)."""

from __future__ import annotations

import asyncio
import itertools
import tempfile
from typing import Any

from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from marketpulse.marketdata._candles import INTERVALS, bucket_start
from marketpulse.marketdata.functions import marketData
from marketpulse.reactive.engine import Engine, Identity
from marketpulse.reactive.persistence import open_persistence

T0 = 1_700_000_000_000.0

trade_st = st.builds(
    lambda i, dt, cents, size, buy: {
        "id": f"t{i}",
        "ticker": "A",
        "side": "buy" if buy else "sell",
        "price": cents / 100,
        "size": float(size),
        "timestamp": T0 + dt,
    },
    st.integers(0, 40),
    st.integers(0, 20 * 60_000),
    st.integers(1, 99),
    st.integers(1, 50),
    st.booleans(),
)


def reference_candles(trades: list[dict[str, Any]], interval: str) -> list[dict[str, Any]]:
    """OHLCV per interval from the unique trades. Trades sharing the first (last) timestamp of
    an interval may each be its open (close): ``opens``/``closes`` hold the allowed prices."""
    groups: dict[float, list[dict[str, Any]]] = {}
    for t in trades:
        groups.setdefault(bucket_start(t["timestamp"], INTERVALS[interval]), []).append(t)
    out = []
    for start in sorted(groups):
        ts = groups[start]
        first = min(t["timestamp"] for t in ts)
        last = max(t["timestamp"] for t in ts)
        out.append(
            {
                "start": start,
                "opens": {t["price"] for t in ts if t["timestamp"] == first},
                "closes": {t["price"] for t in ts if t["timestamp"] == last},
                "high": max(t["price"] for t in ts),
                "low": min(t["price"] for t in ts),
                "volume": sum(t["size"] for t in ts),
                "trades": float(len(ts)),
            }
        )
    return out


async def scenario(trades: list[dict[str, Any]], cuts: list[int], replays: list[int]) -> None:
    unique: dict[str, dict[str, Any]] = {}
    for t in trades:
        unique.setdefault(t["id"], t)
    with tempfile.TemporaryDirectory() as tmp:
        engine = await Engine.open(open_persistence(f"sqlite:{tmp}/p.db"), [marketData])
        try:
            bounds = sorted({0, len(trades), *[c % (len(trades) + 1) for c in cuts]})
            batches = [trades[a:b] for a, b in itertools.pairwise(bounds)]
            batches += [batches[r % len(batches)] for r in replays]  # replays change nothing
            for batch in batches:
                r = await engine.run_mutation(
                    "marketData:applyUpdates", {"batch": {"trades": batch}}, Identity.admin()
                )
                assert r.success, r.error_message
            first_seen = list(unique.values())  # the first occurrence of an id wins
            got = engine.run_query(
                "marketData:getRecentTrades", {"ticker": "A", "limit": 200}
            ).value
            assert sorted(t["id"] for t in got) == sorted(unique)
            assert [t["timestamp"] for t in got] == sorted(
                (t["timestamp"] for t in first_seen), reverse=True
            )
            for interval in INTERVALS:
                candles = engine.run_query(
                    "marketData:getCandles", {"ticker": "A", "interval": interval, "limit": 200}
                ).value
                stored = [c for c in candles if c["trades"] > 0]  # the rest are carried-over fills
                expected = reference_candles(first_seen, interval)
                for c, e in zip(stored, expected, strict=True):
                    assert c["start"] == e["start"]
                    assert (c["high"], c["low"], c["trades"]) == (e["high"], e["low"], e["trades"])
                    assert abs(c["volume"] - e["volume"]) < 1e-9
                    assert c["open"] in e["opens"] and c["close"] in e["closes"]
                # A quiet interval between two traded ones carries the previous close over.
                for before, after in itertools.pairwise(candles):
                    assert after["start"] == before["start"] + INTERVALS[interval]
                    if after["trades"] == 0:
                        assert after["open"] == after["close"] == before["close"]
            price = engine.run_query("marketData:getPrice", {"ticker": "A"}).value
            newest = max(t["timestamp"] for t in first_seen)
            assert price["price"] in {t["price"] for t in first_seen if t["timestamp"] == newest}
        finally:
            await engine.close()


# No shrinking: each example runs a real engine, and shrinking a failure would take minutes.
@settings(max_examples=25, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(
    st.lists(trade_st, min_size=1, max_size=30),
    st.lists(st.integers(0, 30), max_size=4),
    st.lists(st.integers(0, 5), max_size=2),
)
def test_any_order_any_batching_same_result(
    trades: list[dict[str, Any]], cuts: list[int], replays: list[int]
) -> None:
    asyncio.run(scenario(trades, cuts, replays))
