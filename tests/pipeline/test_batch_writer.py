"""The batch writer: several batches in flight, in order, through failures.

A fake store (answers under the test's control) checks the ordering and failure rules; a real
``marketpulse serve`` checks the order end to end and a restart under a stream.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from marketpulse.pipeline._batch_writer import BatchWriter
from marketpulse.pipeline._coalesce import Coalescer
from marketpulse.pipeline._store import StoreClient, StoreError
from marketpulse.pipeline._stream_stats import StreamStats
from marketpulse.reactive.sync.client import LightSyncClient
from marketpulse.testing import LocalSystem

pytestmark = pytest.mark.timeout(120)

TICKER = "KXWRITER-1"


def _price(coalescer: Coalescer, writer: BatchWriter, last: int) -> None:
    coalescer.price(
        TICKER, {"lastPrice": last / 100, "yesBid": 0.4, "yesAsk": 0.6}, time.time() * 1000, 0.0
    )
    writer.wake()


async def _until(check: object, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():  # type: ignore[operator]
            await asyncio.sleep(0.02)


async def test_a_batch_on_a_new_socket_re_sends_the_full_state(store: LocalSystem) -> None:
    """No lease to lose, and no call failed: only the new socket says the store may have lost
    our last relaxed commits (a restarted store, or another node behind a balancer)."""
    client = StoreClient(store.store_url, store.admin_key, timeout=5.0)
    coalescer = Coalescer()
    resends: list[int] = []
    writer = BatchWriter(
        stream_id="writer-test",
        store=client,
        coalescer=coalescer,
        stats=StreamStats(),
        flush_window=0.005,
        on_revived=lambda: resends.append(client.connections),
    )
    task = asyncio.create_task(writer.run())
    try:
        _price(coalescer, writer, 41)
        await _until(lambda: writer._stats.batches >= 1)
        _price(coalescer, writer, 42)
        await _until(lambda: writer._stats.batches >= 2)
        assert resends == [], "the first socket and its batches are no loss"

        store.procs["store"].stop(10)
        store.procs["store"].start()  # same port and file: the old socket is dead
        sync = client._sync
        assert sync is not None
        await _until(lambda: sync.failure is not None)

        _price(coalescer, writer, 43)
        await _until(lambda: writer._stats.batches >= 3)
        assert resends == [2], "the batch on the new socket asked for the full state again"
        assert writer._stats.batch_errors == 0, "no call failed: the socket was replaced idle"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.aclose()


# -- a fake store: each call's answer is the test's to give ---------------------------------


class FakeCall:
    def __init__(self, args: dict[str, Any], connection: int) -> None:
        self.path = "marketData:applyUpdates"
        self.batch = args["batch"]
        self.connection = connection
        self.answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    async def result(self) -> Any:
        return await self.answer

    @property
    def last(self) -> float | None:
        prices = self.batch.get("prices", [])
        return prices[0].get("lastPrice") if prices else None

    @property
    def trades(self) -> list[str]:
        return [t["id"] for t in self.batch.get("trades", [])]


class FakeStore:
    """Sockets numbered like ``StoreClient.connections``; a lost socket fails its calls."""

    def __init__(self) -> None:
        self.connections = 1
        self.alive = True
        self.calls: list[FakeCall] = []

    async def send_mutation(
        self, path: str, args: dict[str, Any], *, connection: int | None = None
    ) -> FakeCall:
        if connection is not None and (not self.alive or connection != self.connections):
            raise StoreError(path, "store connection lost", transient=True)
        if not self.alive:
            self.connections += 1
            self.alive = True
        call = FakeCall(args, self.connections)
        self.calls.append(call)
        return call

    def in_flight(self) -> list[FakeCall]:
        return [c for c in self.calls if not c.answer.done()]

    def lose_socket(self, *, fail_calls: bool = True) -> None:
        self.alive = False
        if fail_calls:
            for call in self.in_flight():
                call.answer.set_exception(StoreError(call.path, "lost", transient=True))


def _fake_writer(
    store: FakeStore,
    in_flight: int,
    revived: list[int] | None = None,
    lease_ms: float | None = None,
) -> tuple[Coalescer, BatchWriter]:
    coalescer = Coalescer()
    writer = BatchWriter(
        stream_id="fake",
        store=store,  # type: ignore[arg-type]
        coalescer=coalescer,
        stats=StreamStats(),
        flush_window=0.005,
        on_revived=(lambda: revived.append(1)) if revived is not None else (lambda: None),
        max_in_flight=in_flight,
        lease_ms=lease_ms,
    )
    return coalescer, writer


def _tick(coalescer: Coalescer, writer: BatchWriter, last: float, trade: str | None = None) -> None:
    coalescer.price(TICKER, {"lastPrice": last}, 1_000.0, 0.0)
    if trade is not None:
        coalescer.trade({"id": trade, "ticker": TICKER}, 0.0)
    writer.wake()


async def _settle_loop() -> None:
    """Long enough for the writer to send whatever it would send now."""
    await asyncio.sleep(0.05)


@pytest.mark.parametrize("depth", [1, 2, 3])
async def test_at_most_the_limit_is_in_flight_and_each_batch_carries_newer_state(
    depth: int,
) -> None:
    store = FakeStore()
    coalescer, writer = _fake_writer(store, depth)
    task = asyncio.create_task(writer.run())
    try:
        for i in range(depth):
            _tick(coalescer, writer, 0.10 + i / 100)
            await _until(lambda i=i: len(store.calls) == i + 1)
        # The window is full: what comes now waits, coalesced into one batch.
        _tick(coalescer, writer, 0.50)
        _tick(coalescer, writer, 0.51)
        await _settle_loop()
        assert len(store.in_flight()) == depth and len(store.calls) == depth
        store.calls[0].answer.set_result({})
        await _until(lambda: len(store.calls) == depth + 1)
        assert store.calls[-1].last == 0.51
        assert [c.last for c in store.calls] == sorted(c.last for c in store.calls)  # type: ignore[type-var]
        assert writer.max_seen_in_flight == depth
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_lost_socket_puts_the_batches_back_and_none_is_re_sent_as_it_was() -> None:
    """Two batches in flight fail with their socket: their content goes out again merged
    beneath the newer state (no older price after a newer one, no trade lost), one batch at a
    time until a write succeeds, and then the full state is asked for again."""
    store = FakeStore()
    revived: list[int] = []
    coalescer, writer = _fake_writer(store, 2, revived)
    task = asyncio.create_task(writer.run())
    try:
        _tick(coalescer, writer, 0.41, "t1")
        await _until(lambda: len(store.calls) == 1)
        _tick(coalescer, writer, 0.42, "t2")
        await _until(lambda: len(store.calls) == 2)
        _tick(coalescer, writer, 0.43, "t3")  # waits: the window is full
        await _settle_loop()
        store.lose_socket()
        await _until(lambda: len(store.calls) == 3)
        retry = store.calls[2]
        assert retry.connection == 2, "on a new socket"
        assert retry.last == 0.43, "the newest price, never the failed batches' older ones"
        assert retry.trades == ["t1", "t2", "t3"], "the failed batches' trades, in order"
        # Recovering: one batch in flight until a write succeeds.
        _tick(coalescer, writer, 0.44, "t4")
        await _settle_loop()
        assert len(store.calls) == 3
        retry.answer.set_result({})
        await _until(lambda: len(store.calls) == 4)
        assert store.calls[3].last == 0.44 and store.calls[3].trades == ["t4"]
        assert revived == [1], "a success after failures re-sends the full state"
        assert writer.failing_since_ms is None
        # Pipelining again.
        _tick(coalescer, writer, 0.45)
        await _until(lambda: len(store.calls) == 5)
        assert len(store.in_flight()) == 2
        lasts = [c.last for c in store.calls]
        assert lasts == sorted(lasts)  # type: ignore[type-var]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_no_batch_goes_out_on_a_new_socket_while_an_earlier_one_is_unanswered() -> None:
    """The socket is gone but the batch on it has not failed yet (its call is still closing
    it): the next batch is not sent on a new socket, where it could be applied first."""
    store = FakeStore()
    coalescer, writer = _fake_writer(store, 2)
    task = asyncio.create_task(writer.run())
    try:
        _tick(coalescer, writer, 0.41, "t1")
        await _until(lambda: len(store.calls) == 1)
        store.lose_socket(fail_calls=False)
        _tick(coalescer, writer, 0.42, "t2")
        await _settle_loop()
        assert len(store.calls) == 1, "refused by the pin, not sent elsewhere"
        store.calls[0].answer.set_exception(StoreError("x", "lost", transient=True))
        await _until(lambda: len(store.calls) == 2)
        assert store.calls[1].connection == 2
        assert store.calls[1].last == 0.42 and store.calls[1].trades == ["t1", "t2"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_failure_answered_before_a_later_success_is_not_put_back() -> None:
    """The store answers one socket's mutations in order: when a later batch succeeded, the
    earlier one that failed (say, it timed out here) was applied there, or refused."""
    store = FakeStore()
    revived: list[int] = []
    coalescer, writer = _fake_writer(store, 2, revived)
    task = asyncio.create_task(writer.run())
    try:
        _tick(coalescer, writer, 0.41, "t1")
        await _until(lambda: len(store.calls) == 1)
        _tick(coalescer, writer, 0.42, "t2")
        await _until(lambda: len(store.calls) == 2)
        store.calls[0].answer.set_exception(StoreError("x", "timed out", transient=True))
        await _settle_loop()
        assert len(store.calls) == 2, "nothing new while a failure is unresolved"
        store.calls[1].answer.set_result({})
        await _until(lambda: revived == [1])
        await _settle_loop()
        assert len(store.calls) == 2, "0.41 is not written again after 0.42"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_refused_batch_is_dropped_and_the_next_ones_go_on() -> None:
    store = FakeStore()
    coalescer, writer = _fake_writer(store, 2)
    task = asyncio.create_task(writer.run())
    try:
        _tick(coalescer, writer, 0.41, "t1")
        await _until(lambda: len(store.calls) == 1)
        store.calls[0].answer.set_exception(StoreError("x", "bad batch", transient=False))
        _tick(coalescer, writer, 0.42)
        await _until(lambda: len(store.calls) == 2)
        assert store.calls[1].trades == [] and store.calls[1].last == 0.42
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_idle_lets_the_batches_in_flight_drain_and_then_goes_next() -> None:
    """A history write waits for idle(): no further live batch joins those in flight, so
    the history mutation goes right after them."""
    store = FakeStore()
    coalescer, writer = _fake_writer(store, 2)
    task = asyncio.create_task(writer.run())
    try:
        _tick(coalescer, writer, 0.41)
        await _until(lambda: len(store.calls) == 1)
        waiter = asyncio.create_task(writer.idle())
        await _settle_loop()
        assert not waiter.done()
        _tick(coalescer, writer, 0.42)
        await _settle_loop()
        assert len(store.calls) == 1, "the live batch waits for the window to drain"
        store.calls[0].answer.set_result({})
        await _until(waiter.done)
        await _until(lambda: len(store.calls) == 2)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_batches_in_flight_at_shutdown_are_flushed_again() -> None:
    store = FakeStore()
    coalescer, writer = _fake_writer(store, 2)
    task = asyncio.create_task(writer.run())
    _tick(coalescer, writer, 0.41, "t1")
    await _until(lambda: len(store.calls) == 1)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert len(coalescer) == 2, "the unanswered batch is pending again"

    async def answered(path: str, args: dict[str, Any]) -> Any:
        await store.send_mutation(path, args)
        return {}

    store.mutation = answered  # type: ignore[attr-defined]
    await writer.flush_at_shutdown()
    assert store.calls[-1].trades == ["t1"] and store.calls[-1].last == 0.41


# -- a real store ---------------------------------------------------------------------------


async def test_pipelined_batches_are_applied_in_the_order_sent(store: LocalSystem) -> None:
    """Every batch carries the same ts and a growing volume, so the store applies each one
    (it skips only older ts): a subscriber must see the volume only grow, ending at the last."""
    client = StoreClient(store.store_url, store.admin_key, timeout=5.0)
    coalescer = Coalescer()
    writer = BatchWriter(
        stream_id="order-test",
        store=client,
        coalescer=coalescer,
        stats=StreamStats(),
        flush_window=0.0,
        max_in_flight=4,
    )
    seen: list[float] = []
    sub = await LightSyncClient(LightSyncClient.ws_url(store.store_url)).connect()
    task = asyncio.create_task(writer.run())
    try:
        coalescer.price(TICKER, {"volume": 0, "yesBid": 0.4}, 1_000.0, 0.0)
        writer.wake()
        query = await sub.subscribe("marketData:getPrice", {"ticker": TICKER})
        await sub.wait_for(query, lambda v: v is not None)
        count = 300
        for i in range(1, count + 1):
            coalescer.price(TICKER, {"volume": i}, 1_000.0, 0.0)
            writer.wake()
            await asyncio.sleep(0.0005)
        await sub.wait_for(query, lambda v: v["volume"] == count, timeout=30)
        seen = [
            float(t.modifications[0]["value"]["volume"])
            for t in sub.transitions
            if t.modifications and t.modifications[0].get("value")
        ]
        assert seen == sorted(seen), "a batch was applied after a newer one"
        assert writer.max_seen_in_flight >= 2, "the batches were not pipelined"
        assert writer._stats.batch_errors == 0
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await sub.close()
        await client.aclose()


async def test_a_store_restart_under_pipelined_batches_converges_and_keeps_every_trade(
    store: LocalSystem,
) -> None:
    client = StoreClient(store.store_url, store.admin_key, timeout=5.0)
    coalescer = Coalescer()
    writer = BatchWriter(
        stream_id="restart-test",
        store=client,
        coalescer=coalescer,
        stats=StreamStats(),
        flush_window=0.0,
        max_in_flight=2,
    )
    task = asyncio.create_task(writer.run())
    trades: list[str] = []
    now = time.time() * 1000

    async def produce(start: int, stop: int) -> None:
        for i in range(start, stop):
            coalescer.price(TICKER, {"volume": i, "yesBid": 0.4}, now, 0.0)
            trades.append(f"r-{i}")
            coalescer.trade(
                {
                    "id": f"r-{i}",
                    "ticker": TICKER,
                    "side": "buy",
                    "price": 0.5,
                    "size": 1,
                    "timestamp": now + i,
                },
                0.0,
            )
            writer.wake()
            await asyncio.sleep(0.002)

    try:
        await produce(0, 50)
        producing = asyncio.create_task(produce(50, 150))
        await asyncio.sleep(0.05)
        await asyncio.to_thread(store.procs["store"].stop, 10)
        await asyncio.to_thread(store.procs["store"].start)
        await producing
        last = len(trades) - 1

        def converged() -> bool:
            price = store.query("marketData:getPrice", {"ticker": TICKER})
            return price is not None and price["volume"] == last

        await _until(converged, 30)
        stored = {
            t["id"]
            for t in store.query("marketData:getRecentTrades", {"ticker": TICKER, "limit": 200})
        }
        assert stored >= set(trades), sorted(set(trades) - stored)[:10]
        assert writer._stats.batch_errors >= 1, "the restart failed some write"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.aclose()


async def test_a_batch_refused_for_one_entry_is_written_without_it(store: LocalSystem) -> None:
    """The store refuses a whole batch for one bad entry; the writer sends the rest again, so
    the good trade and price batched beside it are stored and the bad one is not."""
    client = StoreClient(store.store_url, store.admin_key, timeout=5.0)
    coalescer = Coalescer()
    writer = BatchWriter(
        stream_id="refused-entry-test",
        store=client,
        coalescer=coalescer,
        stats=StreamStats(),
        flush_window=0.05,
    )
    now = time.time() * 1000
    trade = {"ticker": TICKER, "side": "buy", "price": 0.5, "timestamp": now}
    coalescer.price(TICKER, {"volume": 7, "yesBid": 0.4}, now, 0.0)
    coalescer.trade({**trade, "id": "good", "size": 2}, 0.0)
    coalescer.trade({**trade, "id": "bad", "size": -1}, 0.0)
    task = asyncio.create_task(writer.run())
    try:
        writer.wake()
        await _until(lambda: writer._stats.batches >= 1)
        recent = store.query("marketData:getRecentTrades", {"ticker": TICKER, "limit": 10})
        assert [t["id"] for t in recent] == ["good"]
        assert store.query("marketData:getPrice", {"ticker": TICKER})["volume"] == 7
        assert writer._stats.batch_errors == 1, "the first send was refused"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.aclose()


async def test_failed_renewals_back_off() -> None:
    """A store that refuses every call at once is asked again after growing pauses, not in a
    tight loop; the first batch after it is back renews the lease."""

    class RefusingStore(FakeStore):
        refusing = True

        async def send_mutation(
            self, path: str, args: dict[str, Any], *, connection: int | None = None
        ) -> FakeCall:
            if self.refusing:
                self.calls.append(FakeCall(args, self.connections))
                raise StoreError(path, "connection refused", transient=True)
            call = await super().send_mutation(path, args, connection=connection)
            call.answer.set_result({"applied": True})
            return call

    store = RefusingStore()
    coalescer, writer = _fake_writer(store, 2, lease_ms=300.0)  # renews every 0.1 s when idle
    task = asyncio.create_task(writer.run())
    try:
        await asyncio.sleep(1.5)
        # Pauses of 0.05, 0.1, 0.2, 0.4, 0.8 s: about 5 renewals in 1.5 s (a tight loop made
        # thousands).
        assert 3 <= len(store.calls) <= 8, len(store.calls)
        store.refusing = False
        _tick(coalescer, writer, 0.5)
        await _until(lambda: any(c.last == 0.5 for c in store.calls))
        assert "leaseMs" in store.calls[-1].batch
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
