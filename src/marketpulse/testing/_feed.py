"""A synthetic market feed for a store, in place of the pipeline, for tests and benchmarks.

It makes what the worker writes (docs/interfaces.md §4-5): ``marketData:upsertMarkets`` entries
once, then ``marketData:applyUpdates`` batches of prices, books and trades, so the dashboard can
be exercised against a plain ``marketpulse serve``; an :class:`~marketpulse.testing.AdminClient`
sends them with the admin key.
"""

from __future__ import annotations

import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from marketpulse.testing._client import AdminClient

__all__ = ["FeedMarket", "SyntheticFeed"]

_TITLES: list[tuple[str, str, list[Any]]] = [
    ("KXBTC", "Bitcoin above ${strike:,} at year end?", [90_000, 100_000, 110_000, 125_000]),
    ("KXFED", "Fed cuts rates by {strike} bp in December?", [25, 50]),
    ("KXCPI", "CPI year-over-year above {strike}% in November?", [2.5, 2.8, 3.0]),
    ("KXNBA", "Will the {strike} win the NBA Finals?", ["Celtics", "Thunder", "Nuggets"]),
    ("KXRAIN", "Rain in {strike} tomorrow?", ["NYC", "Chicago", "Seattle"]),
    ("KXGDP", "Q4 GDP growth above {strike}%?", [1.5, 2.0, 2.5]),
]


@dataclass
class FeedMarket:
    """One synthetic market and its evolving state."""

    ticker: str
    title: str
    event_ticker: str
    price: float
    status: str = "active"
    volume: float = 0.0
    open_interest: float = 0.0
    trades: int = 0
    close_time: float = 0.0
    book_sizes: list[float] = field(default_factory=list)


class SyntheticFeed:
    """Deterministic (seeded) random-walk markets: books, tickers and trades."""

    def __init__(self, markets: int = 12, *, seed: int = 1, closed: int = 1) -> None:
        self.rng = random.Random(seed)
        # Trade ids must differ between runs on the same store, or they are skipped as replays.
        self.run_id = uuid.uuid4().hex[:8]
        self.markets: list[FeedMarket] = []
        now = time.time() * 1000
        combos = [
            (series, title, strike) for series, title, strikes in _TITLES for strike in strikes
        ]
        for i in range(markets):
            series, template, strike = combos[i % len(combos)]
            tag = str(strike).replace(".", "").replace(",", "").upper()[:7]
            if i >= len(combos):
                tag += f"-{i // len(combos)}"
            self.markets.append(
                FeedMarket(
                    ticker=f"{series}-26DEC31-{tag}",
                    title=template.format(strike=strike),
                    event_ticker=f"{series}-26DEC31",
                    price=round(self.rng.uniform(0.08, 0.92), 2),
                    close_time=now + self.rng.uniform(2, 40) * 86_400_000,
                )
            )
        for m in self.markets[len(self.markets) - closed :] if closed else []:
            m.status = "closed"
            m.close_time = now - 3_600_000

    def metadata(self) -> list[dict[str, Any]]:
        """``upsertMarkets`` entries for every market."""
        return [
            {
                "ticker": m.ticker,
                "eventTicker": m.event_ticker,
                "seriesTicker": m.event_ticker.split("-")[0],
                "title": m.title,
                "subtitle": None,
                "status": m.status,
                "closeTime": m.close_time,
                "previousPrice": round(
                    min(0.99, max(0.01, m.price + self.rng.uniform(-0.06, 0.06))), 2
                ),
            }
            for m in self.markets
        ]

    def _book(self, m: FeedMarket, ts: float) -> dict[str, Any]:
        bid = round(m.price - 0.01, 2)
        ask = round(m.price + 0.01, 2)
        bids = [
            [round(bid - 0.01 * k, 2), float(self.rng.randint(20, 900) * (1 + k // 3))]
            for k in range(12)
            if bid - 0.01 * k >= 0.01
        ]
        asks = [
            [round(ask + 0.01 * k, 2), float(self.rng.randint(20, 900) * (1 + k // 3))]
            for k in range(12)
            if ask + 0.01 * k <= 0.99
        ]
        return {"ticker": m.ticker, "bids": bids, "asks": asks, "ts": ts, "valid": True}

    def _price(self, m: FeedMarket, ts: float) -> dict[str, Any]:
        return {
            "ticker": m.ticker,
            "price": m.price,
            "yesBid": round(m.price - 0.01, 2),
            "yesAsk": round(m.price + 0.01, 2),
            "volume": m.volume,
            "openInterest": m.open_interest,
            "ts": ts,
        }

    def trade(self, m: FeedMarket, ts: float, *, trade_id: str | None = None) -> dict[str, Any]:
        """A new trade on ``m`` (moves its price, volume and open interest)."""
        side = self.rng.choice(["buy", "sell"])
        step = self.rng.choice([-0.01, 0.0, 0.0, 0.01])
        m.price = round(min(0.97, max(0.03, m.price + step)), 2)
        size = float(self.rng.choice([1, 5, 10, 25, 50, 100, 250]))
        m.volume += size
        m.open_interest += size / 2
        m.trades += 1
        return {
            "id": trade_id or f"{m.ticker}-{self.run_id}-{m.trades}",
            "ticker": m.ticker,
            "side": side,
            "price": m.price if side == "buy" else round(m.price - 0.01, 2),
            "size": size,
            "timestamp": ts,
        }

    def snapshot(self, ts: float | None = None) -> dict[str, Any]:
        """A batch with every open market's price and book."""
        ts = ts if ts is not None else time.time() * 1000
        live = [m for m in self.markets if m.status == "active"]
        return {
            "prices": [self._price(m, ts) for m in live],
            "books": [self._book(m, ts) for m in live],
        }

    def tick(self, n_markets: int = 3, trades_per_market: int = 1) -> dict[str, Any]:
        """A batch like one flush of the worker: a few markets trade and re-quote."""
        ts = time.time() * 1000
        live = [m for m in self.markets if m.status == "active"]
        chosen = self.rng.sample(live, min(n_markets, len(live)))
        trades = [self.trade(m, ts) for m in chosen for _ in range(trades_per_market)]
        return {
            "prices": [self._price(m, ts) for m in chosen],
            "books": [self._book(m, ts) for m in chosen],
            "trades": trades,
        }

    def stream_status(self, state: str = "streaming", rate: float = 0.0) -> dict[str, Any]:
        """A ``reportStreamStatus`` report for this feed."""
        now = time.time() * 1000
        return {
            "streamId": "synthetic",
            "state": state,
            "markets": [m.ticker for m in self.markets],
            "messagesPerSecond": rate,
            "lastMessageAt": now,
            "reconnects": 0,
            "gaps": 0,
            "lagMs": 2.0,
            "updatedAt": now,
        }

    def seed_store(self, writer: AdminClient, history_trades: int = 40) -> None:
        """Write metadata, books, prices, some trade history and a stream status."""
        writer.mutation("marketData:upsertMarkets", {"markets": self.metadata()})
        writer.mutation("marketData:applyUpdates", {"batch": self.snapshot()})
        start = time.time() * 1000 - history_trades * 45_000
        live = [m for m in self.markets if m.status == "active"]
        for k in range(history_trades):
            ts = start + k * 45_000
            batch = {"trades": [self.trade(m, ts) for m in live]}
            writer.mutation("marketData:applyUpdates", {"batch": batch})
        writer.mutation("marketData:applyUpdates", {"batch": self.snapshot()})
        writer.mutation("marketData:reportStreamStatus", {"status": self.stream_status()})
