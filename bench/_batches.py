"""applyUpdates batches as the benchmarks write them, with no import of marketpulse, so that a
``--before`` child running another checkout's code can use them too. Books go packed, as the
worker sends them (``marketdata.packed_levels``: little-endian float64 ``price, size`` pairs,
here with ``struct`` alone); ``packed=False`` gives the ``[[price, size], ...]`` lists the store
also takes (``batch_codec.py`` compares the two)."""

from __future__ import annotations

import struct
from typing import Any

T0 = 1_700_000_000_000.0
"""The first batch's timestamp (epoch ms)."""


def ticker(i: int) -> str:
    """The benchmarks' market ``i``."""
    return f"BENCH-{i:04d}"


def _packed(levels: list[list[float]]) -> bytes:
    flat = [x for level in levels for x in level]
    return struct.pack(f"<{len(flat)}d", *flat)


def book(ticker: str, bid: float, n: int, ts: float, *, packed: bool = True) -> dict[str, Any]:
    """A 10-level book around ``bid`` whose sizes move with batch number ``n``."""
    bids = [[round(bid - j / 100, 2), 10.0 + n % 7 + j] for j in range(10)]
    asks = [[round(bid + 0.02 + j / 100, 2), 5.0 + j] for j in range(10)]
    return {
        "ticker": ticker,
        "bids": _packed(bids) if packed else bids,
        "asks": _packed(asks) if packed else asks,
        "ts": ts,
        "valid": True,
    }


def batch(n: int, changed: list[int], *, packed: bool = True) -> dict[str, Any]:
    """Every changed market gets a new book; every 2nd a ticker update; every 5th a trade."""
    ts = T0 + n * 10.0
    prices, books, trades = [], [], []
    for k, i in enumerate(changed):
        t = ticker(i)
        bid = 0.30 + ((n + i) % 20) / 100
        books.append(book(t, bid, n, ts, packed=packed))
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
