"""applyUpdates batches as the benchmarks write them, with no import of marketpulse, so that a
``--before`` child running another checkout's code can use them too. Books go as
``[[price, size], ...]`` lists, a form the store still takes; the worker sends them packed
(``marketdata.packed_levels``; ``batch_codec.py`` compares the two)."""

from __future__ import annotations

from typing import Any

T0 = 1_700_000_000_000.0
"""The first batch's timestamp (epoch ms)."""


def ticker(i: int) -> str:
    """The benchmarks' market ``i``."""
    return f"BENCH-{i:04d}"


def book(ticker: str, bid: float, n: int, ts: float) -> dict[str, Any]:
    """A 10-level book around ``bid`` whose sizes move with batch number ``n``."""
    return {
        "ticker": ticker,
        "bids": [[round(bid - j / 100, 2), 10.0 + n % 7 + j] for j in range(10)],
        "asks": [[round(bid + 0.02 + j / 100, 2), 5.0 + j] for j in range(10)],
        "ts": ts,
        "valid": True,
    }


def batch(n: int, changed: list[int]) -> dict[str, Any]:
    """Every changed market gets a new book; every 2nd a ticker update; every 5th a trade."""
    ts = T0 + n * 10.0
    prices, books, trades = [], [], []
    for k, i in enumerate(changed):
        t = ticker(i)
        bid = 0.30 + ((n + i) % 20) / 100
        books.append(book(t, bid, n, ts))
        if k % 2 == 0:
            prices.append(
                {
                    "ticker": t,
                    "yesBid": bid,
                    "yesAsk": round(bid + 0.02, 2),
                    "volume": float(n),
                    "ts": ts,
                }
            )
        if k % 5 == 0:
            trades.append(
                {
                    "id": f"{t}-{n}",
                    "ticker": t,
                    "side": "buy" if n % 2 else "sell",
                    "price": bid + 0.01,
                    "size": 1.0,
                    "timestamp": ts,
                }
            )
    return {"prices": prices, "books": books, "trades": trades}
