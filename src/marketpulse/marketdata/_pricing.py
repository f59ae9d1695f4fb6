"""Derived price figures: display price, mid, spread and the 24 h change.

Prices are YES dollars as floats. Differences of two-decimal floats carry binary noise
(``0.56 - 0.55 == 0.010000000000000009``), so derived figures are rounded to ``DECIMALS``, finer
than Kalshi's smallest tick (0.0001 with sub-penny pricing).
"""

from __future__ import annotations

__all__ = [
    "DAY_MS",
    "DECIMALS",
    "HISTORY_BUCKET_MS",
    "change_percent",
    "display_price",
    "history_bucket",
    "mid",
    "spread",
]

DECIMALS = 6
DAY_MS = 86_400_000
HISTORY_BUCKET_MS = 300_000
"""Granularity of the stored price history the 24 h change is computed against (at most one
sample per ticker per bucket)."""


def mid(bid: float | None, ask: float | None) -> float | None:
    """Midpoint of the best bid and ask, or ``None`` unless both exist."""
    if bid is None or ask is None:
        return None
    return round((bid + ask) / 2, DECIMALS)


def spread(bid: float | None, ask: float | None) -> float | None:
    """Best ask minus best bid, or ``None`` unless both exist."""
    if bid is None or ask is None:
        return None
    return round(ask - bid, DECIMALS)


def display_price(last_trade: float | None, bid: float | None, ask: float | None) -> float | None:
    """The price a market shows: its last trade, else the mid while it has had none."""
    if last_trade is not None:
        return last_trade
    return mid(bid, ask)


def change_percent(price: float | None, reference: float | None) -> float:
    """Percent change of ``price`` against ``reference``; 0.0 when either is unknown or zero.

    Always a number, because the seed's component calls ``changePercent24h.toFixed(2)``.
    """
    if price is None or reference is None or reference == 0:
        return 0.0
    return round((price - reference) / reference * 100.0, 4)


def history_bucket(ts: float) -> float:
    """Start of the history bucket holding ``ts``."""
    return float(ts - ts % HISTORY_BUCKET_MS)
