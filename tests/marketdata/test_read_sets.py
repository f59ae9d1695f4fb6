"""The read-set rules of issue 4, counted as query runs (not only as results).

A market updated in every batch must not make unrelated subscriptions re-run:
getRecentTrades(A) is not re-run by a book change on A nor by anything on B; getOrderbook(A)
is not re-run by a trade on A; a replayed batch re-runs nothing. ``SharedQuery.runs`` is the
engine's own count of how many times a subscribed query ran.
"""

from __future__ import annotations

from typing import Any

from .conftest import Listener, Store

T0 = 1_700_000_000_000.0


def everything(ticker: str, ts: float, n: int) -> dict[str, Any]:
    """A batch that changes every kind of data of one market."""
    return {
        "prices": [
            {
                "ticker": ticker,
                "yesBid": 0.40 + n / 1000,
                "yesAsk": 0.60,
                "volume": float(n),
                "ts": ts,
            }
        ],
        "books": [
            {
                "ticker": ticker,
                "bids": [[0.40 + n / 1000, 5.0 + n]],
                "asks": [[0.60, 3.0]],
                "ts": ts,
                "valid": True,
            }
        ],
        "trades": [
            {
                "id": f"{ticker}-{n}",
                "ticker": ticker,
                "side": "buy",
                "price": 0.5,
                "size": 1.0,
                "timestamp": ts,
            }
        ],
        "markets": [{"ticker": ticker, "status": "active" if n % 2 else "paused"}],
    }


class Subs:
    """Subscriptions by label, with their runs and pushed updates counted from a baseline."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.queries: dict[str, Any] = {}
        self.listeners: dict[str, Listener] = {}
        self.base_runs: dict[str, int] = {}
        self.base_total = 0

    def add(self, label: str, name: str, **args: Any) -> None:
        q, listener = self.store.subscribe(name, **args)
        self.queries[label] = q
        self.listeners[label] = listener

    def mark(self) -> None:
        """Start counting from now."""
        self.base_runs = {label: q.runs for label, q in self.queries.items()}
        self.base_total = self.store.engine.query_runs
        for listener in self.listeners.values():
            listener.updates = 0

    def reruns(self) -> dict[str, int]:
        return {label: q.runs - self.base_runs[label] for label, q in self.queries.items()}

    def updates(self) -> dict[str, int]:
        return {label: listener.updates for label, listener in self.listeners.items()}

    def total_runs(self) -> int:
        """Every query run the engine made since ``mark`` (subscribed or not)."""
        return int(self.store.engine.query_runs - self.base_total)


LABELS = ("trades_A", "book_A", "price_A", "candles_A", "market_A", "trades_B")


async def seeded(store: Store) -> Subs:
    for ticker in ("A", "B"):
        await store.apply(**everything(ticker, T0, 0))
    subs = Subs(store)
    subs.add("trades_A", "getRecentTrades", ticker="A")
    subs.add("book_A", "getOrderbook", ticker="A")
    subs.add("price_A", "getPrice", ticker="A")
    subs.add("candles_A", "getCandles", ticker="A", interval="1m")
    subs.add("market_A", "getMarket", ticker="A")
    subs.add("trades_B", "getRecentTrades", ticker="B")
    subs.mark()
    return subs


def only(**counts: int) -> dict[str, int]:
    return {label: counts.get(label, 0) for label in LABELS}


async def test_book_change_on_a_reruns_only_the_orderbook(store: Store) -> None:
    subs = await seeded(store)
    await store.apply(
        books=[
            {
                "ticker": "A",
                "bids": [[0.41, 9.0]],
                "asks": [[0.6, 3.0]],
                "ts": T0 + 1,
                "valid": True,
            }
        ]
    )
    assert subs.reruns() == only(book_A=1)
    assert subs.updates() == only(book_A=1)
    assert subs.total_runs() == 1


async def test_trade_on_a_does_not_rerun_the_orderbook(store: Store) -> None:
    subs = await seeded(store)
    await store.apply(
        trades=[
            {
                "id": "A-new",
                "ticker": "A",
                "side": "sell",
                "price": 0.45,
                "size": 2.0,
                "timestamp": T0 + 1,
            }
        ]
    )
    # The trade moves A's trades, candles and last price: the queries showing those re-run.
    expected = only(trades_A=1, candles_A=1, price_A=1, market_A=1)
    assert subs.reruns() == expected
    assert subs.updates() == expected
    assert subs.listeners["trades_A"].values[-1][0]["id"] == "A-new"


async def test_ticker_change_on_a_reruns_only_the_price_views(store: Store) -> None:
    subs = await seeded(store)
    await store.apply(prices=[{"ticker": "A", "yesBid": 0.42, "ts": T0 + 1}])
    assert subs.reruns() == only(price_A=1, market_A=1)
    assert subs.updates() == only(price_A=1, market_A=1)


async def test_anything_on_b_reruns_nothing_about_a(store: Store) -> None:
    subs = await seeded(store)
    for n in range(1, 6):
        await store.apply(**everything("B", T0 + n, n))
    assert subs.reruns() == only(trades_B=5)
    assert subs.updates() == only(trades_B=5)


async def test_replayed_batch_reruns_nothing(store: Store) -> None:
    subs = await seeded(store)
    result = await store.apply(**everything("A", T0, 0))  # the seed batch again
    assert result["trades"] == 0
    assert subs.reruns() == only()
    assert subs.total_runs() == 0


async def test_identical_subscriptions_share_one_run(store: Store) -> None:
    subs = await seeded(store)
    extra = [store.subscribe("getRecentTrades", ticker="A") for _ in range(5)]
    assert all(q is subs.queries["trades_A"] for q, _ in extra)
    await store.apply(
        trades=[
            {
                "id": "A-x",
                "ticker": "A",
                "side": "buy",
                "price": 0.5,
                "size": 1.0,
                "timestamp": T0 + 1,
            }
        ]
    )
    assert subs.reruns()["trades_A"] == 1
    assert all(listener.updates == 1 for _, listener in extra)


async def test_candle_history_under_a_live_window_is_not_rerun_by_trades(store: Store) -> None:
    """getCandles with ``before`` (the chart's history) re-runs only when a candle that started
    before it changes: not on each trade of the current interval, nor when one closes after it."""
    minute = 60_000.0
    start = T0 - T0 % minute

    def a_trade(n: int, ts: float) -> dict[str, Any]:
        return {"id": f"A-h{n}", "ticker": "A", "side": "buy", "price": 0.5, "size": 1.0,
                "timestamp": ts}  # fmt: skip

    await store.apply(trades=[a_trade(i, start + i * minute) for i in range(5)])
    history, listener = store.subscribe(
        "getCandles", ticker="A", interval="1m", before=start + 3 * minute
    )
    live, _ = store.subscribe("getCandles", ticker="A", interval="1m")
    runs, live_runs = history.runs, live.runs
    await store.apply(trades=[a_trade(10, start + 4 * minute + 1_000)])  # the open minute
    await store.apply(trades=[a_trade(11, start + 5 * minute)])  # minute 4 closes
    assert (history.runs - runs, live.runs - live_runs) == (0, 2)
    assert listener.updates == 0
    await store.apply(trades=[a_trade(12, start + 2 * minute + 1_000)])  # a late one, minute 2
    assert history.runs - runs == 1 and listener.updates == 1
    assert [c["start"] for c in listener.values[-1]] == [start + i * minute for i in range(3)]
    assert listener.values[-1][2]["trades"] == 2.0


async def test_a_list_without_prices_is_not_rerun_by_prices(store: Store) -> None:
    """listMarkets ``prices: false`` re-runs on a listed market's metadata, not its price."""
    subs = await seeded(store)
    bare, listener = store.subscribe("listMarkets", prices=False)
    priced, _ = store.subscribe("listMarkets")
    runs, priced_runs = bare.runs, priced.runs
    await store.apply(prices=[{"ticker": "A", "yesBid": 0.42, "ts": T0 + 1}])
    await store.apply(**everything("B", T0 + 2, 1))  # B's trades, book, price; B now active
    assert (bare.runs - runs, priced.runs - priced_runs) == (1, 2)  # B's status moved
    assert listener.updates == 1
    assert [m["status"] for m in listener.values[-1]] == ["paused", "active"]
    assert subs.reruns()["price_A"] == 1
