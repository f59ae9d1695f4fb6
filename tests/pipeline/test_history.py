"""The order and pacing of a market's history (one layer: a fake source and store).

What the chart shows first is written first (every market's day of 1-minute candles), each
mutation is bounded, and none is sent while a live batch is being written.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from marketpulse.marketdata.packed_candles import CANDLE_FIELDS, unpack_rows
from marketpulse.pipeline._history import (
    _CHUNK,
    UPSERT_CANDLES,
    Row,
    candle_rows,
    write_history,
)
from marketpulse.simulator import Simulator, SimulatorConfig
from marketpulse.simulator._rest import _candles


class SimSource:
    """The simulator's own candlestick answers, without sockets."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.requests: list[tuple[int, list[str]]] = []

    async def candles(self, tickers: list[str], at_ms: float, minutes: int) -> dict[str, list[Row]]:
        self.requests.append((minutes, tickers))
        end = int(at_ms // 1000)
        span = 86_400 + 600 if minutes == 1 else 31 * 86_400
        q = {"start_ts": str(end - span), "end_ts": str(end), "period_interval": str(minutes)}
        out = {
            m["market_ticker"]: candle_rows(minutes, m["candlesticks"], at_ms)
            for m in _candles(self.sim, tickers, q)
        }
        await asyncio.sleep(0)
        return out

    async def trades(self, tickers: list[str], since_ms: float) -> list[dict[str, Any]]:
        return [{"id": f"{t}-1", "ticker": t} for t in tickers]


def unpacked(args: dict[str, Any]) -> list[dict[str, Any]]:
    """The candles of ``upsertCandles``' packed argument, one dict each."""
    return [
        {
            "ticker": p["ticker"],
            "interval": p["interval"],
            **dict(zip(CANDLE_FIELDS, row, strict=True)),
        }
        for p in args["packed"]
        for row in unpack_rows(p["rows"])
    ]


class Store:
    """Records each mutation (candles unpacked), and whether the live writer was busy when it
    was sent."""

    def __init__(self, live_busy: asyncio.Event) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.sent_while_busy = 0
        self._busy = live_busy

    async def mutation(self, path: str, args: dict[str, Any]) -> Any:
        self.sent_while_busy += self._busy.is_set()
        if path == UPSERT_CANDLES:
            assert set(args) == {"packed"}
            args = {"candles": unpacked(args)}
        self.calls.append((path, args))
        await asyncio.sleep(0)
        return None


async def test_every_markets_day_of_minutes_first_in_bounded_mutations_behind_live() -> None:
    sim = Simulator(SimulatorConfig(markets=9, seed=3))
    tickers = list(sim.markets)
    busy = asyncio.Event()
    idle = asyncio.Event()
    idle.set()
    store = Store(busy)
    source = SimSource(sim)

    async def live_writer() -> None:
        # A live batch in flight now and then: history must wait for it each time.
        for _ in range(50):
            idle.clear()
            busy.set()
            await asyncio.sleep(0.001)
            busy.clear()
            idle.set()
            await asyncio.sleep(0)

    live = asyncio.ensure_future(live_writer())
    await write_history(store, source, tickers, "s", idle.wait)  # type: ignore[arg-type]
    await live
    assert store.sent_while_busy == 0
    kinds = []
    for path, args in store.calls:
        if path == UPSERT_CANDLES:
            part = args["candles"]
            assert 0 < len(part) <= _CHUNK
            kinds.append({c["interval"] for c in part})
        else:
            kinds.append({"trades"})
    minutes = [i for i, k in enumerate(kinds) if k == {"1m"}]
    others = [i for i, k in enumerate(kinds) if k != {"1m"}]
    assert minutes and others and max(minutes) < min(others)  # every 1-minute day first
    written = {
        c["ticker"] for path, a in store.calls if path == UPSERT_CANDLES for c in a["candles"]
    }
    assert written == set(tickers)
    ones = [c for p, a in store.calls if p == UPSERT_CANDLES for c in a["candles"]]
    for t in tickers:
        day = [c for c in ones if c["ticker"] == t and c["interval"] == "1m"]
        assert day[-1]["start"] - day[0]["start"] + 60_000 >= 86_400_000, t
        assert any(c["ticker"] == t and c["interval"] == "5m" for c in ones), t
        assert any(c["ticker"] == t and c["interval"] == "1h" for c in ones), t
    # a few markets per minute request, so the first ones land while the rest is fetched
    assert [len(ts) for m, ts in source.requests if m == 1] == [4, 4, 1]
    assert kinds[-1] == {"trades"}


async def test_every_minute_request_is_sent_before_the_first_answer() -> None:
    """The day of minutes of every market is asked for at once: no request waits for an earlier
    one's answer or write (each answer is written as it comes)."""
    sim = Simulator(SimulatorConfig(markets=12, seed=3))
    tickers = list(sim.markets)
    source = SimSource(sim)
    real = source.candles
    all_sent = asyncio.Event()
    asked: list[list[str]] = []

    async def gated(tickers: list[str], at_ms: float, minutes: int) -> dict[str, list[Row]]:
        if minutes == 1:
            asked.append(tickers)
            if len(asked) == 3:
                all_sent.set()
            await all_sent.wait()  # no answer until every request is out
        return await real(tickers, at_ms, minutes)

    source.candles = gated  # type: ignore[method-assign]
    idle = asyncio.Event()
    idle.set()
    store = Store(asyncio.Event())
    async with asyncio.timeout(30):
        await write_history(store, source, tickers, "s", idle.wait)  # type: ignore[arg-type]
    assert [len(ts) for m, ts in source.requests if m == 1] == [4, 4, 4]
    minute = {
        c["ticker"] for p, a in store.calls if p == UPSERT_CANDLES for c in a["candles"]
        if c["interval"] == "1m"
    }  # fmt: skip
    assert minute == set(tickers)


async def test_a_failed_request_costs_its_markets_only() -> None:
    sim = Simulator(SimulatorConfig(markets=6, seed=3))
    tickers = list(sim.markets)
    source = SimSource(sim)
    real = source.candles

    async def flaky(tickers: list[str], at_ms: float, minutes: int) -> dict[str, list[Row]]:
        if minutes == 1 and tickers[0] == next(iter(sim.markets)):
            raise RuntimeError("exchange said 503")
        return await real(tickers, at_ms, minutes)

    source.candles = flaky  # type: ignore[method-assign]
    store = Store(asyncio.Event())
    idle = asyncio.Event()
    idle.set()
    await write_history(store, source, tickers, "s", idle.wait)  # type: ignore[arg-type]
    minute_tickers = {
        c["ticker"]
        for p, a in store.calls
        if p == UPSERT_CANDLES
        for c in a["candles"]
        if c["interval"] == "1m"
    }
    assert minute_tickers == set(tickers[4:])  # the first request's four markets are missing
    assert store.calls[-1][0] != UPSERT_CANDLES  # and the rest (hours, trades) still went


def test_rest_history_reads_candles_as_the_typed_model_does() -> None:
    from marketpulse.kalshi import Candlestick

    sim = Simulator(SimulatorConfig(markets=2, seed=3))
    t = next(iter(sim.markets))
    now = time.time() * 1000  # the simulator's past ends at its start
    end = int(now // 1000)
    raw = _candles(
        sim, [t], {"start_ts": str(end - 7200), "end_ts": str(end), "period_interval": "1"}
    )
    sticks = raw[0]["candlesticks"]
    fast = candle_rows(1, sticks, now)
    assert len(fast) == len(sticks) > 60
    for row, c in zip(fast, (Candlestick.model_validate(s) for s in sticks), strict=True):
        start, o, h, lo, close, volume = row
        assert start == c.end_period_ts * 1000 - 60_000
        assert (o, h, lo, close) == tuple(
            float(v) for v in (c.price.open, c.price.high, c.price.low, c.price.close)
        )
        assert volume == float(c.volume)


def test_folded_candles_sum_volume_exactly() -> None:
    from marketpulse.pipeline._history import _fold

    minute = 60_000
    sizes = (1.0, 1.0, 1.0, 0.1, 0.2)
    rows = [(k * minute, 0.5, 0.5, 0.5, 0.5, size) for k, size in enumerate(sizes)]
    ((start, *_, volume),) = _fold(rows, 5 * minute)
    assert (start, volume) == (0, 3.3)  # the float sum is 3.3000000000000003


async def test_recent_trades_are_not_fetched_from_before_the_retention() -> None:
    # With a retention under the hour fetched, a restart wrote again the trades cleanup had
    # deleted, and they counted twice in the hour's candle.
    from marketpulse._clock import now_ms
    from marketpulse.pipeline._backfill import RETENTION_MARGIN_MS

    asked: list[float] = []

    class Source:
        async def candles(self, tickers: list[str], at_ms: float, minutes: int) -> dict[str, Any]:
            return {}

        async def trades(self, tickers: list[str], since_ms: float) -> list[dict[str, Any]]:
            asked.append(since_ms)
            return []

    async def idle() -> None:
        return None

    before = now_ms()
    await write_history(Store(asyncio.Event()), Source(), ["A"], "s", idle, 600_000.0)  # type: ignore[arg-type]
    assert asked and asked[0] >= before - 600_000.0 + RETENTION_MARGIN_MS
