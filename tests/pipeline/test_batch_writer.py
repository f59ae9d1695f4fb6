"""The batch writer against a real ``marketpulse serve`` that restarts under it."""

from __future__ import annotations

import asyncio
import time

import pytest

from marketpulse.pipeline._batch_writer import BatchWriter
from marketpulse.pipeline._coalesce import Coalescer
from marketpulse.pipeline._store import StoreClient
from marketpulse.pipeline._stream_stats import StreamStats
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
