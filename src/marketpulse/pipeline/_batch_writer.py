"""The batch writer: drains the coalescer into ``marketData:applyUpdates``, one batch at a time.

It waits for a change, lets the loop go idle once (or at most ``flush_window``), then sends ONE
batch and waits for the store's answer; whatever arrives meanwhile is coalesced into the next
batch, so the write rate adapts to the store's speed.

With a lease (``lease_ms``), every batch names the stream, and renews its lease in the store
while ``healthy()`` says the feed is heard from; a quiet feed renews with an empty batch every
third of the lease. The store marks the stream's books and prices stale when renewals stop
(docs/marketdata.md); a renewal that finds the lease dead (lapsed, or the store restarted)
answers ``revived``, and ``on_revived`` then re-sends the markets' full state.

A store restart is noticed that way too (the store marks every lease dead as it starts), and
it matters more since market data is written with relaxed durability: a crash loses the
commits answered in the last few ms (docs/store.md, "Durability"). The writer does not rely on
the lease alone: a batch that succeeds after failed ones, or on a new socket, may have reached a
restarted store or, through a balancer, another node while the dead one's last relaxed commits
are lost. That, too, re-sends the full state, without waiting for a lease to lapse.
``failing_since_ms`` says when the calls started failing, so the trades of that lost tail can
be fetched again.

Live batches go first: other writers to the store (a market's history) wait for :meth:`idle`
before each of their bounded mutations, so a live batch waits behind one of them at most, and
they go in turn with the live batches (one each) while the feed never lets the writer rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import structlog

from marketpulse._clock import now_ms
from marketpulse.pipeline import _metrics
from marketpulse.pipeline._coalesce import Coalescer, PendingBatch
from marketpulse.pipeline._store import StoreClient, StoreError
from marketpulse.pipeline._stream_stats import StreamStats

__all__ = ["APPLY_UPDATES", "BatchWriter"]

log = structlog.get_logger("marketpulse.pipeline.stream")

APPLY_UPDATES = "marketData:applyUpdates"

_MAX_BACKOFF_S = 1.0
"""Retries of a failed batch back off up to this: a restarted store is noticed within it."""
_SHUTDOWN_BATCHES = 3
_SHUTDOWN_TIMEOUT = 3.0


class BatchWriter:
    """Writes the coalescer's batches to the store (the coalescer's driver on the store side).

    Args:
        stream_id: Stream id for metrics and logs.
        store: Store client (admin).
        coalescer: Where the batches come from.
        stats: Counts ``batches``, ``batch_errors`` and ``last_batch_ms``.
        flush_window: Seconds a batch may wait for more events while the feed is busy.
        lease_ms: The stream's lease in the store (None: no lease, batches name no stream).
        healthy: Whether the feed is heard from now (only then is the lease renewed).
        on_revived: Called when the store may have lost our last relaxed commits: a renewal
            found the lease dead, or a call succeeded after failures or on a new socket.
    """

    def __init__(
        self,
        *,
        stream_id: str,
        store: StoreClient,
        coalescer: Coalescer,
        stats: StreamStats,
        flush_window: float,
        lease_ms: float | None = None,
        healthy: Callable[[], bool] = lambda: True,
        on_revived: Callable[[], None] = lambda: None,
    ) -> None:
        self._lease_ms = lease_ms
        self._healthy = healthy
        self._on_revived = on_revived
        self._renewed_at = float("-inf")
        self.revivals = 0
        """Renewals that found the lease dead."""
        self._connections: int | None = None
        self.failing_since_ms: float | None = None
        """Wall-clock ms of the first failed store call since the last one that succeeded."""
        self._stream_id = stream_id
        self._store = store
        self._coalescer = coalescer
        self._stats = stats
        self._flush_window = flush_window
        self._dirty = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._seen = 0

    def wake(self) -> None:
        """The coalescer took input: write it soon."""
        self._seen += 1
        self._dirty.set()

    async def idle(self) -> None:
        """Return once no live batch is being written (at once if none is)."""
        await self._idle.wait()

    async def run(self) -> None:
        """Write batches until cancelled."""
        loop = asyncio.get_running_loop()
        pending: list[PendingBatch] = []
        backoff = 0.05
        while True:
            if not pending:
                if not await self._wait_or_renew():
                    continue
                deadline = loop.time() + self._flush_window
                # Flush as soon as the loop goes idle (one turn with no new event), or at the
                # window's end while events keep coming.
                while loop.time() < deadline:
                    seen = self._seen
                    await asyncio.sleep(0)
                    if self._seen == seen:
                        break
                self._dirty.clear()
                pending = self._coalescer.batches_to_send()
                if len(self._coalescer):
                    self._dirty.set()  # a backlog: the rest comes out on the next round
                continue
            if await self._write(pending[0]):
                del pending[0]
                backoff = 0.05
            else:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)

    async def _wait_or_renew(self) -> bool:
        """Wait for a change (True); with a lease, renew it while nothing changes (False)."""
        if self._lease_ms is None:
            await self._dirty.wait()
            return True
        every = self._lease_ms / 3000.0
        while True:
            wait = self._renewed_at + every - time.monotonic()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._dirty.wait()
                        return True
            if self._healthy():
                with contextlib.suppress(StoreError):
                    await self._send({})
                return False
            # Not heard from: no renewal, and the lease lapses; data still goes out.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(every, 0.2)):
                    await self._dirty.wait()
                    return True

    def _args(self, batch: dict[str, Any]) -> dict[str, Any]:
        if self._lease_ms is None:
            return {"batch": batch}
        body = {**batch, "streamId": self._stream_id}
        if self._healthy():
            body["leaseMs"] = self._lease_ms
        return {"batch": body}

    async def _send(self, batch: dict[str, Any]) -> None:
        """One ``applyUpdates`` call (renewing the lease if it may)."""
        args = self._args(batch)
        renewing = "leaseMs" in args["batch"]
        self._idle.clear()
        try:
            result = await self._store.mutation(APPLY_UPDATES, args)
        except StoreError:
            if self.failing_since_ms is None:
                self.failing_since_ms = now_ms()
            raise
        finally:
            self._idle.set()
        if renewing:
            self._renewed_at = time.monotonic()
        reason = self._lost_reason(result)
        if reason is not None:
            self.revivals += 1
            log.info("re-sending the full state", stream=self._stream_id, reason=reason)
            self._on_revived()
        self.failing_since_ms = None

    def _lost_reason(self, result: Any) -> str | None:
        """Why the store may have lost our last relaxed commits, after a successful call."""
        connections, self._connections = self._connections, self._store.connections
        if isinstance(result, dict) and result.get("revived"):
            return "lease revived"
        if self.failing_since_ms is not None:
            return "store calls failed"
        if connections is not None and connections != self._store.connections:
            return "new store connection"
        return None

    async def _write(self, batch: PendingBatch) -> bool:
        """Send one batch; False when it must be retried (a transient store error)."""
        stream = self._stream_id
        sent = time.monotonic()
        try:
            await self._send(batch.args["batch"])
        except StoreError as exc:
            self._stats.batch_errors += 1
            _metrics.BATCH_ERRORS.labels(stream=stream).inc()
            if exc.transient:
                log.warning("store write failed; retrying", stream=stream, error=str(exc))
                return False
            log.error("store refused a batch", stream=stream, error=str(exc))
            return True
        done = time.monotonic()
        self._stats.batches += 1
        self._stats.last_batch_ms = (done - batch.first_event_at) * 1000.0
        _metrics.BATCHES.labels(stream=stream).inc()
        _metrics.BATCH_LATENCY.labels(stream=stream).observe(done - batch.first_event_at)
        _metrics.STORE_WRITE.labels(stream=stream).observe(done - sent)
        _metrics.BATCH_SIZE.labels(stream=stream).observe(batch.events)
        return True

    async def flush_at_shutdown(self) -> None:
        """Best effort on the way out: write what is pending, a few bounded batches at most."""
        with contextlib.suppress(Exception):
            for _ in range(_SHUTDOWN_BATCHES):
                batches = self._coalescer.batches_to_send()
                if not batches:
                    break
                for batch in batches:
                    async with asyncio.timeout(_SHUTDOWN_TIMEOUT):
                        await self._store.mutation(APPLY_UPDATES, self._args(batch.args["batch"]))
