"""Candlesticks: a generated past that ends at each market's starting price, then the real
trades of the session.

Before the catalog's epoch (the simulator's "now" at start) a market's price follows a seeded
random walk backwards from its starting price, one anchor per hour; a minute's close runs on a
noisy bridge between the two anchors of its hour, so hourly and minute candles agree on open
and close and the last minute before the epoch closes at the starting price. From the epoch on,
candles are built from the model's trades. Deterministic per seed and ticker, and independent of
the range asked (the same interval always reads the same).
"""

from __future__ import annotations

import functools
import random
import zlib
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from marketpulse.simulator._catalog import Market, price_bounds, snap, step_at
from marketpulse.simulator._units import ONE, price_str, size_str

if TYPE_CHECKING:
    from marketpulse.simulator._model import Trade

__all__ = ["HISTORY_HOURS", "PastPrices", "candlesticks"]

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
HISTORY_HOURS = 32 * 24
"""How far back the generated past goes (a month and a day)."""


class PastPrices:
    """The generated past of one market: hour anchors and hour candles cached, minutes
    generated per hour on demand (one seeded generator per hour)."""

    def __init__(self, market: Market, epoch_ms: int, seed: int) -> None:
        self.market = market
        self.epoch_minute = epoch_ms // MINUTE_MS
        self.epoch_hour = self.epoch_minute // 60
        self.first_minute = (self.epoch_hour - HISTORY_HOURS) * 60
        self._base = (zlib.crc32(market.ticker.encode()) ^ (seed * 0x9E3779B1)) << 32
        self._lo, self._hi = price_bounds(market.structure)
        rng = random.Random(self._base)
        # _anchors[k]: the price at the start of hour epoch_hour + 1 - k; _anchors[0] is the
        # starting price, reached at the epoch itself.
        price = market.initial_price
        self._anchors = [price]
        for _ in range(HISTORY_HOURS + 1):
            move = step_at(market.structure, price) * rng.choice((-2, -1, -1, 0, 1, 1, 2))
            price = self._clamp(price + move)
            self._anchors.append(price)
        self._hours: dict[int, tuple[int, int, int, int, int]] = {}

    def _clamp(self, p: int) -> int:
        return min(max(snap(self.market.structure, p), self._lo), self._hi)

    def minutes(self, hour: int) -> list[tuple[int, int, int, int, int]]:
        """``(open, high, low, close, volume)`` of each generated minute of clock ``hour``."""
        n = min(60, self.epoch_minute - hour * 60)
        k = self.epoch_hour + 1 - hour
        if n <= 0 or k > HISTORY_HOURS:
            return []
        a, b = self._anchors[k], self._anchors[k - 1]
        rng = random.Random(self._base + hour)
        noise = rng.choices((-1, 0, 0, 1), k=n)
        vols = rng.choices(range(1, 41), k=n)
        wicks = rng.choices((0, 0, 1), k=2 * n)
        structure = self.market.structure
        out = []
        prev = a
        for j in range(n):
            base = a + (b - a) * (j + 1) // n
            close = b if j == n - 1 else self._clamp(base + noise[j] * step_at(structure, base))
            tick = step_at(structure, close)
            high = min(max(prev, close) + tick * wicks[2 * j], self._hi)
            low = max(min(prev, close) - tick * wicks[2 * j + 1], self._lo)
            out.append((prev, high, low, close, 100 * vols[j]))
            prev = close
        return out

    def hour(self, hour: int) -> tuple[int, int, int, int, int] | None:
        """The candle of clock ``hour`` (None: not in the generated past). Open and close are
        its minutes' (the hour's anchors); the wicks and volume are drawn per hour, so a month
        of hours costs no minute generation."""
        got = self._hours.get(hour)
        if got is None:
            k = self.epoch_hour + 1 - hour
            if hour * 60 >= self.epoch_minute or k > HISTORY_HOURS:
                return None
            a, b = self._anchors[k], self._anchors[k - 1]
            rng = random.Random(self._base + hour)
            tick = step_at(self.market.structure, max(a, b))
            got = (
                a,
                min(max(a, b) + tick * rng.randint(0, 2), self._hi),
                max(min(a, b) - tick * rng.randint(0, 2), self._lo),
                b,
                100 * rng.randint(60, 2400),
            )
            self._hours[hour] = got
        return got


def _merge(parts: list[tuple[int, int, int, int, int]]) -> tuple[int, int, int, int, int]:
    return (
        parts[0][0],
        max(p[1] for p in parts),
        min(p[2] for p in parts),
        parts[-1][3],
        sum(p[4] for p in parts),
    )


def _candle(end_ms: int, o: int, h: int, lo: int, c: int, v: int, oi: int) -> dict[str, Any]:
    price, bid, ask = _sides(o, h, lo, c)
    return {
        "end_period_ts": end_ms // 1000,
        "price": price,
        "yes_bid": bid,
        "yes_ask": ask,
        "volume_fp": size_str(v),
        "open_interest_fp": size_str(oi),
    }


_SPREAD = 100
_OHLC = ("open_dollars", "high_dollars", "low_dollars", "close_dollars")


@functools.lru_cache(maxsize=1 << 16)
def _sides(o: int, h: int, lo: int, c: int) -> tuple[dict[str, str], ...]:
    """The price, bid and ask objects of a candle. A walk repeats few price tuples, so a day
    of minutes builds a few hundred of them instead of 4,320 (answers are serialised, never
    changed, so candles may share them)."""
    bid = [price_str(max(p - _SPREAD, 0)) for p in (o, h, lo, c)]
    ask = [price_str(min(p + _SPREAD, ONE)) for p in (o, h, lo, c)]
    price = {
        "open_dollars": price_str(o),
        "high_dollars": price_str(h),
        "low_dollars": price_str(lo),
        "close_dollars": price_str(c),
        "mean_dollars": price_str((o + c) // 2),
        "previous_dollars": price_str(o),
    }
    return price, dict(zip(_OHLC, bid, strict=True)), dict(zip(_OHLC, ask, strict=True))


def candlesticks(
    past: PastPrices,
    trades: Iterable[Trade],
    start_ms: int,
    end_ms: int,
    period_minutes: int,
    open_interest: int,
) -> list[dict[str, Any]]:
    """Candles of one market whose period ends in ``[start_ms, end_ms]``, oldest first.

    Periods wholly before the epoch come from the generated past; the others from ``trades``
    (a period without a trade has no candle, as on the exchange).
    """
    period = period_minutes * MINUTE_MS
    epoch_ms = past.epoch_minute * MINUTE_MS
    live: dict[int, list[Trade]] = {}
    for t in trades:
        if t.ticker == past.market.ticker and t.ts_ms >= epoch_ms:
            live.setdefault(t.ts_ms // period, []).append(t)
    out: list[dict[str, Any]] = []
    first = max(-(-start_ms // period) - 1, past.first_minute * MINUTE_MS // period)
    minutes: tuple[int, list[tuple[int, int, int, int, int]]] = (-1, [])
    for b in range(first, end_ms // period):
        bucket_start, bucket_end = b * period, (b + 1) * period
        if bucket_end < start_ms:
            continue
        if bucket_end <= epoch_ms:
            m0 = bucket_start // MINUTE_MS
            if period_minutes == 1:
                hour = m0 // 60
                if minutes[0] != hour:
                    minutes = (hour, past.minutes(hour))
                row = minutes[1][m0 % 60] if m0 % 60 < len(minutes[1]) else None
            else:
                hours = [past.hour(h) for h in range(m0 // 60, (m0 + period_minutes) // 60)]
                parts = [h for h in hours if h is not None]
                row = _merge(parts) if parts else None
            if row is not None:
                out.append(_candle(bucket_end, *row, open_interest))
        elif b in live:
            ts = sorted(live[b], key=lambda t: t.ts_ms)
            prices = [t.yes_price for t in ts]
            volume = sum(t.count for t in ts)
            row = (prices[0], max(prices), min(prices), prices[-1], volume)
            out.append(_candle(bucket_end, *row, open_interest))
    return out
