"""StreamRunner without Temporal: a real simulator (in process), the real feed, a real store."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest

from marketpulse._clock import now_ms
from marketpulse.kalshi import KalshiCredentials, KalshiFeed, KalshiRestClient
from marketpulse.pipeline._alerts import Alerter
from marketpulse.pipeline._backfill import SETTLE_S, fetch_trades_since
from marketpulse.pipeline._store import StoreClient
from marketpulse.pipeline._stream import FeedLike, StreamRunner, StreamStats
from marketpulse.pipeline.config import StreamConfig
from marketpulse.simulator import Simulator, SimulatorConfig
from marketpulse.testing import Book, LocalSystem
from polling import until

pytestmark = pytest.mark.timeout(120)


def sim_book(sim: Simulator, ticker: str) -> Book:
    levels = sim.book_levels(ticker)
    bids = [(float(p), float(s)) for p, s in reversed(levels["yes"])][:10]
    asks = [(float(Decimal(1) - p), float(s)) for p, s in reversed(levels["no"])][:10]
    return (
        tuple((round(p, 6), round(s, 6)) for p, s in bids),
        tuple((round(p, 6), round(s, 6)) for p, s in asks),
    )


async def test_coalesced_batches_converge_and_stop_withdraws_books(store: LocalSystem) -> None:
    sim = Simulator(SimulatorConfig(port=0, markets=2, rate=3000.0, seed=3))
    await sim.start()
    client = StoreClient(store.store_url, store.admin_key)
    try:
        markets = list(sim.markets)
        assert sim.key_id and sim.private_key_path
        creds = KalshiCredentials.from_file(sim.key_id, sim.private_key_path)

        def feed_factory(tickers: list[str], stats: StreamStats) -> FeedLike:
            return KalshiFeed(sim.ws_url, creds, tickers, stats=stats)

        beats: list[dict[str, Any]] = []
        runner = StreamRunner(
            stream_id="test-stream",
            config=StreamConfig(markets=markets),
            markets_version=1,
            feed_factory=feed_factory,
            store=client,
            alerter=Alerter(None),
            heartbeat=beats.append,
            report_interval=0.2,
        )
        task = asyncio.create_task(runner.run())

        async def books_served() -> bool:
            books = [await asyncio.to_thread(store.store_book, t) for t in markets]
            return all(b is not None for b in books)

        await until(books_served, 30)
        await asyncio.sleep(1.0)
        sim.pause()

        async def converged() -> bool:
            for t in markets:
                if await asyncio.to_thread(store.store_book, t) != sim_book(sim, t):
                    return False
            return True

        await until(converged, 5)
        # Thousands of exchange messages, far fewer writes: one batch per flush.
        assert runner.stats.messages > 1000
        assert runner.stats.batches < runner.stats.messages / 3
        assert beats and beats[-1]["state"] == "connected"
        status = await asyncio.to_thread(store.query, "marketData:getStreamStatus", {})
        assert [s["streamId"] for s in status] == ["test-stream"]

        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

        async def withdrawn() -> bool:
            books = [await asyncio.to_thread(store.store_book, t) for t in markets]
            return all(b is None for b in books)

        await until(withdrawn, 5)
        status = await asyncio.to_thread(store.query, "marketData:getStreamStatus", {})
        assert status[0]["state"] == "stopped"
    finally:
        await client.aclose()
        await sim.stop()


@dataclass
class BackfillStream:
    """A simulator, a real store and a running StreamRunner that backfills trades over REST."""

    sim: Simulator
    runner: StreamRunner
    store: LocalSystem
    markets: list[str]

    async def stored_trades(self) -> dict[str, float]:
        """Trade id -> timestamp of every trade the store holds for the streamed markets."""
        out: dict[str, float] = {}
        for t in self.markets:
            trades = await asyncio.to_thread(
                self.store.query, "marketData:getRecentTrades", {"ticker": t, "limit": 200}
            )
            out |= {trade["id"]: trade["timestamp"] for trade in trades or []}
        return out


@contextlib.asynccontextmanager
async def backfill_stream(
    store: LocalSystem, seed: int, *, trades_only: bool = False
) -> AsyncIterator[BackfillStream]:
    sim = Simulator(SimulatorConfig(port=0, markets=2, rate=400.0, seed=seed))
    await sim.start()
    client = StoreClient(store.store_url, store.admin_key)
    assert sim.key_id and sim.private_key_path
    creds = KalshiCredentials.from_file(sim.key_id, sim.private_key_path)
    rest = KalshiRestClient(sim.rest_url, creds)
    markets = list(sim.markets)
    config = (
        StreamConfig(markets=markets, enableOrderbook=False, enablePrices=False)
        if trades_only
        else StreamConfig(markets=markets)
    )

    async def trades_since(tickers: list[str], since_ms: float) -> list[dict[str, Any]]:
        return await fetch_trades_since(rest, tickers, since_ms)

    runner = StreamRunner(
        stream_id="backfill-stream",
        config=config,
        markets_version=1,
        feed_factory=lambda tickers, stats: KalshiFeed(
            sim.ws_url, creds, tickers, channels=config.channels(), reconnect_delay=0.2, stats=stats
        ),
        store=client,
        alerter=Alerter(None),
        trades_since=trades_since,
    )
    task = asyncio.create_task(runner.run())
    try:
        yield BackfillStream(sim, runner, store, markets)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        task.cancel()
        await rest.aclose()
        await client.aclose()
        await sim.stop()


async def test_trades_made_while_the_feed_was_down_are_backfilled_after_it_reconnects(
    store: LocalSystem,
) -> None:
    async with backfill_stream(store, seed=5) as bs:

        async def books_served() -> bool:
            books = [await asyncio.to_thread(store.store_book, t) for t in bs.markets]
            return all(b is not None for b in books)

        await until(books_served, 30)
        # Past the start's own follow-up fetch, so only the reconnect can recover the outage.
        await asyncio.sleep(SETTLE_S + 0.5)
        # The exchange goes on trading while every handshake is refused for a while.
        bs.sim.faults.refuse_auth(-1)
        bs.sim.faults.drop_connection()
        down_from = len(bs.sim.model.trades)
        await asyncio.sleep(1.5)
        missed = {t.trade_id for t in list(bs.sim.model.trades)[down_from:]}
        assert missed, "the simulator made no trade during the outage"
        bs.sim.faults.clear()

        async def backfilled() -> bool:
            return missed <= set(await bs.stored_trades())

        await until(backfilled, 15)
        assert bs.runner.stats.reconnects >= 1


async def test_a_trade_lost_in_a_seq_gap_of_a_live_connection_is_backfilled(
    store: LocalSystem,
) -> None:
    # Only the trade channel: the simulator's skip_seq withholds a trade frame.
    async with backfill_stream(store, seed=11, trades_only=True) as bs:

        async def some_stored() -> bool:
            return len(await bs.stored_trades()) >= 3

        await until(some_stored, 30)
        first_ms = min((await bs.stored_trades()).values())
        bs.sim.faults.skip_seq(1)

        async def withheld() -> bool:
            return bs.sim.faults.counters["skipped"] >= 1 and bs.runner.stats.gaps >= 1

        await until(withheld, 10)
        await asyncio.sleep(0.5)
        bs.sim.pause()
        made = {t.trade_id for t in list(bs.sim.model.trades) if t.ts_ms > first_ms}
        assert made

        async def all_stored() -> bool:
            return made <= set(await bs.stored_trades())

        await until(all_stored, 10)


async def test_a_burst_of_trade_gaps_costs_at_most_two_backfill_rounds() -> None:
    from marketpulse.kalshi.protocol import SequenceGap

    calls: list[float] = []
    release = asyncio.Event()

    async def trades_since(tickers: list[str], since_ms: float) -> list[dict[str, Any]]:
        calls.append(since_ms)
        await release.wait()
        return []

    runner = StreamRunner(
        stream_id="gaps",
        config=StreamConfig(markets=["KX-A"], exchange="sim"),
        markets_version=1,
        feed_factory=lambda markets, stats: None,  # type: ignore[arg-type,return-value]
        store=None,  # type: ignore[arg-type]
        alerter=Alerter(),
        trades_since=trades_since,
    )
    base = now_ms() - 60_000.0  # trades of a minute ago: well inside the retention
    for last_trade_ms in (2_000.0, 3_000.0, 5_000.0, 4_000.0):
        runner._backfill.trade_seen("KX-A", base + last_trade_ms)
        runner._follower.on_event(SequenceGap(sid=2, channel="trade", expected=7, got=9))
        await asyncio.sleep(0)
    assert calls == [base + 2_000.0]  # the first gap's fetch runs; the others wait for it
    release.set()
    for _ in range(20):
        await asyncio.sleep(0)
    # One follow-up covers every gap seen meanwhile, from the earliest trade time asked (a
    # trade older than the newest seen does not move "the newest held" back).
    assert calls == [base + 2_000.0, base + 3_000.0]


async def test_finished_markets_expect_no_data_and_their_settlement_is_written() -> None:
    from marketpulse.kalshi import MarketLifecycle
    from marketpulse.pipeline.activities import all_finished

    runner = StreamRunner(
        stream_id="life",
        config=StreamConfig(markets=["KX-A", "KX-B"], exchange="sim"),
        markets_version=1,
        feed_factory=lambda markets, stats: None,  # type: ignore[arg-type,return-value]
        store=None,  # type: ignore[arg-type]
        alerter=Alerter(),
    )
    follower, stats = runner._follower, runner.stats

    def details() -> dict[str, Any]:
        return runner._reporter.details()

    def life(ticker: str, event_type: str, **fields: Any) -> MarketLifecycle:
        return MarketLifecycle(sid=9, seq=None, ticker=ticker, event_type=event_type, fields=fields)

    follower.on_event(life("KX-A", "determined", result="yes", settlement_value="1.0000"))
    assert stats.finished == 1 and not all_finished(details())
    follower.on_event(life("KX-OTHER", "settled", settled_ts=1))  # not streamed: ignored
    assert stats.finished == 1
    follower.on_event(life("KX-B", "close_date_updated", close_ts=1))  # closed in the past
    assert stats.finished == 2 and all_finished(details())
    follower.on_event(life("KX-B", "activated"))  # reopened: data expected again
    assert stats.finished == 1 and not all_finished(details())
    follower.on_event(life("KX-A", "settled", settled_ts=1_700_000_000))
    (batch,) = runner._writer._coalescer.batches_to_send()
    markets = {m["ticker"]: m for m in batch.args["batch"]["markets"]}
    assert markets["KX-A"]["status"] == "finalized"
    assert markets["KX-A"]["result"] == "yes" and markets["KX-A"]["settlementValue"] == 1.0
    assert markets["KX-A"]["settledAt"] == 1_700_000_000_000.0
    assert markets["KX-B"]["status"] == "active"
