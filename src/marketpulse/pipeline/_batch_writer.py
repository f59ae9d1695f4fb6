"""The batch writer: drains the coalescer into ``marketData:applyUpdates``, a few batches in flight.

It waits for a change, lets the loop go idle once (or at most ``flush_window``), then sends ONE
batch; while it is in flight, what arrives next goes out as the next batch without waiting for
the first's answer, up to ``max_in_flight`` batches (the store runs one socket's mutations in the
order sent and answers them in that order: docs/sync.md, "Mutations are pipelined"). When the
window is full, whatever arrives is coalesced into the next batch, so the write rate still
adapts to the store's speed.

Order is the point of every rule below: a batch carries the latest state of its markets, so an
older one must never be applied after a newer one. All batches in flight ride one socket (a
batch is sent pinned to the socket of those ahead of it, and fails rather than open another).
When one fails transiently (the socket is lost, a timeout), nothing new is sent until every
batch in flight has come back; those that failed go back into the coalescer *beneath* what is
pending there (newer state wins, their trades are kept), and the writer resumes with one batch
in flight until a write succeeds. A failed batch is therefore never re-sent as it was, after or
before a newer one: its content goes out merged into the next batch. A batch that failed while a
later one on the same socket succeeded is not put back: the store answered it before the later
one, so it was applied (or refused).

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
import dataclasses
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from marketpulse._aio import cancel_and_wait
from marketpulse._clock import now_ms
from marketpulse.pipeline import _metrics
from marketpulse.pipeline._coalesce import Coalescer, PendingBatch
from marketpulse.pipeline._store import SentMutation, StoreClient, StoreError
from marketpulse.pipeline._stream_stats import StreamStats

__all__ = ["APPLY_UPDATES", "BatchWriter"]

log = structlog.get_logger("marketpulse.pipeline.stream")

APPLY_UPDATES = "marketData:applyUpdates"

_FIRST_BACKOFF_S = 0.05
_MAX_BACKOFF_S = 1.0
"""Retries of a failed batch back off up to this: a restarted store is noticed within it."""
DEFAULT_IN_FLIGHT = 2
"""Batches in flight by default (``marketpulse worker --batches-in-flight``)."""
_SHUTDOWN_BATCHES = 3
_SHUTDOWN_TIMEOUT = 3.0


@dataclass
class _Sent:
    """A batch in flight: sent, its answer awaited by ``answer``."""

    seq: int
    batch: PendingBatch
    call: SentMutation
    answer: asyncio.Task[Any]
    sent_at: float
    renewing: bool


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
        max_in_flight: Batches sent and not yet answered, at most (1: each waits for the
            answer to the one before).
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
        max_in_flight: int = DEFAULT_IN_FLIGHT,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        self._lease_ms = lease_ms
        self._healthy = healthy
        self._on_revived = on_revived
        self._max_in_flight = max_in_flight
        self._renewed_at = float("-inf")
        self._renew_retry_s = _FIRST_BACKOFF_S
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
        self._idle_waiters = 0
        self._calls = 0  # store calls of this writer sent and not yet settled
        self._seen = 0
        self._window: deque[_Sent] = deque()
        self._sent = 0  # batches sent (or tried): each one's place in the send order
        self._failed: list[tuple[int, PendingBatch]] = []  # (place, batch), to put back
        self._recovering = False
        self.max_seen_in_flight = 0
        """The most batches that were in flight at once (for tests and benchmarks)."""

    def wake(self) -> None:
        """The coalescer took input: write it soon."""
        self._seen += 1
        self._dirty.set()

    async def idle(self) -> None:
        """Return once no live batch is being written (at once if none is).

        While someone waits here, the writer sends no further batch until those in flight are
        answered, so the waiter's mutation goes next, behind them (and a live batch then waits
        behind one such mutation at most).
        """
        self._idle_waiters += 1
        try:
            await self._idle.wait()
        finally:
            self._idle_waiters -= 1

    async def run(self) -> None:
        """Write batches until cancelled."""
        try:
            await self._run()
        finally:
            # Whatever was in flight may not have been written: it goes back, beneath what
            # is pending, for flush_at_shutdown (a re-sent state or trade is harmless).
            window, self._window = list(self._window), deque()
            await cancel_and_wait(*(s.answer for s in window))
            self._failed += [(sent.seq, sent.batch) for sent in window]
            self._calls = 0
            self._idle.set()
            self._put_back()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = _FIRST_BACKOFF_S
        while True:
            self._settle()
            if self._failed:
                # A batch failed: let every batch in flight come back before anything new goes
                # out (one that is sent now could be applied before the failed one's content).
                if self._window:
                    await asyncio.wait([self._window[0].answer])
                    continue
                self._put_back()
                self._recovering = True
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)
                continue
            if not self._recovering:
                backoff = _FIRST_BACKOFF_S
            limit = 1 if self._recovering else self._max_in_flight
            if self._window and (len(self._window) >= limit or self._idle_waiters):
                # Full (or a history write waits for the live ones to drain): the next batch
                # waits for an answer, and coalesces what arrives meanwhile.
                await asyncio.wait([self._window[0].answer])
                continue
            if not self._window:
                if not await self._wait_or_renew():
                    continue
            elif not self._dirty.is_set():
                changed = asyncio.ensure_future(self._dirty.wait())
                try:
                    await asyncio.wait(
                        [changed, self._window[0].answer], return_when=asyncio.FIRST_COMPLETED
                    )
                finally:
                    changed.cancel()
                continue
            deadline = loop.time() + self._flush_window
            # Flush as soon as the loop goes idle (one turn with no new event), or at the
            # window's end while events keep coming.
            while loop.time() < deadline:
                seen = self._seen
                await asyncio.sleep(0)
                if self._seen == seen:
                    break
            self._settle()
            if self._failed or (self._window and self._idle_waiters):
                continue  # decided again above, with the batch still in the coalescer
            self._dirty.clear()
            for batch in self._coalescer.batches_to_send():
                await self._send_batch(batch)
            if len(self._coalescer):
                self._dirty.set()  # a backlog: the rest comes out on the next round

    def _settle(self) -> None:
        """Account for the batches in flight that were answered, in the order sent."""
        while self._window and self._window[0].answer.done():
            sent = self._window.popleft()
            self._calls -= 1
            task = sent.answer
            error = (
                task.exception()
                if not task.cancelled()
                else StoreError(APPLY_UPDATES, "cancelled", transient=True)
            )
            if error is None:
                ahead = [f for f in self._failed if f[0] < sent.seq]
                if ahead:
                    # The store answers a socket's mutations in order: those that failed ahead
                    # of this one were answered first, so they were applied (or refused).
                    log.info(
                        "store write answered after earlier failures",
                        stream=self._stream_id,
                        batches=len(ahead),
                    )
                    self._failed = [f for f in self._failed if f[0] > sent.seq]
                self._recovering = False
                self._succeeded(sent.call, task.result(), sent.renewing)
                self._count(sent.batch, sent.sent_at)
            else:
                self._failed_call(sent.seq, sent.batch, error)
        if not self._calls:
            self._idle.set()

    def _failed_call(self, seq: int, batch: PendingBatch, error: BaseException) -> None:
        stream = self._stream_id
        if self.failing_since_ms is None:
            self.failing_since_ms = now_ms()
        self._stats.batch_errors += 1
        _metrics.BATCH_ERRORS.labels(stream=stream).inc()
        if isinstance(error, StoreError) and not error.transient:
            kept = _without_refused(batch)
            if kept is None:
                log.error("store refused a batch", stream=stream, error=str(error))
                return
            # Only some entries are bad (a value the feed's parser let through): the rest goes
            # back, merged beneath what is pending as a failed batch's content does.
            log.error(
                "store refused a batch; sending it again without its refused entries",
                stream=stream,
                error=str(error),
                kept=kept.books + kept.prices + kept.trades + kept.markets,
            )
            self._coalescer.requeue(kept)
            self._dirty.set()
            return
        log.warning("store write failed; retrying", stream=stream, error=str(error))
        self._failed.append((seq, batch))

    def _put_back(self) -> None:
        """Return the failed batches to the coalescer, newest first, beneath what is pending."""
        failed, self._failed = sorted(self._failed, key=lambda f: f[0]), []
        for _, batch in reversed(failed):
            self._coalescer.requeue(batch)
        if failed:
            self._dirty.set()

    async def _send_batch(self, batch: PendingBatch) -> None:
        """Send ``batch`` behind those in flight, on their socket."""
        pinned = self._window[0].call.connection if self._window else None
        args = self._args(batch.args["batch"])
        renewing = "leaseMs" in args["batch"]
        self._sent += 1
        seq = self._sent
        self._calls += 1
        self._idle.clear()
        sent_at = time.monotonic()
        try:
            call = await self._store.send_mutation(APPLY_UPDATES, args, connection=pinned)
        except StoreError as exc:
            self._calls -= 1
            self._failed_call(seq, batch, exc)
            if not self._calls:
                self._idle.set()
            return
        except asyncio.CancelledError:
            # Stopped mid-send: the batch goes back with those in flight (run's finally).
            self._calls -= 1
            self._failed.append((seq, batch))
            raise
        answer = asyncio.ensure_future(call.result())
        self._window.append(_Sent(seq, batch, call, answer, sent_at, renewing))
        self.max_seen_in_flight = max(self.max_seen_in_flight, len(self._window))

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
                try:
                    await self._send({})
                except StoreError:
                    # Retry after a growing pause (a store that refuses at once would otherwise
                    # be asked again and again), unless data comes first: its batch renews.
                    pause = self._renew_retry_s
                    self._renew_retry_s = min(pause * 2, _MAX_BACKOFF_S)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(pause):
                            await self._dirty.wait()
                            return True
                else:
                    self._renew_retry_s = _FIRST_BACKOFF_S
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
        """One ``applyUpdates`` call, awaited (a lease renewal: nothing else is in flight)."""
        args = self._args(batch)
        self._calls += 1
        self._idle.clear()
        try:
            sent = await self._store.send_mutation(APPLY_UPDATES, args)
            result = await sent.result()
        except StoreError:
            if self.failing_since_ms is None:
                self.failing_since_ms = now_ms()
            raise
        finally:
            self._calls -= 1
            if not self._calls:
                self._idle.set()
        self._succeeded(sent, result, "leaseMs" in args["batch"])

    def _succeeded(self, call: SentMutation, result: Any, renewing: bool) -> None:
        if renewing:
            self._renewed_at = time.monotonic()
        reason = self._lost_reason(call, result)
        if reason is not None:
            self.revivals += 1
            log.info("re-sending the full state", stream=self._stream_id, reason=reason)
            self._on_revived()
        self.failing_since_ms = None

    def _lost_reason(self, call: SentMutation, result: Any) -> str | None:
        """Why the store may have lost our last relaxed commits, after a successful call."""
        connections, self._connections = self._connections, call.connection
        if isinstance(result, dict) and result.get("revived"):
            return "lease revived"
        if self.failing_since_ms is not None:
            return "store calls failed"
        if connections is not None and connections != call.connection:
            return "new store connection"
        return None

    def _count(self, batch: PendingBatch, sent_at: float) -> None:
        stream = self._stream_id
        done = time.monotonic()
        self._stats.batches += 1
        self._stats.last_batch_ms = (done - batch.first_event_at) * 1000.0
        _metrics.BATCHES.labels(stream=stream).inc()
        _metrics.BATCH_LATENCY.labels(stream=stream).observe(done - batch.first_event_at)
        _metrics.STORE_WRITE.labels(stream=stream).observe(done - sent_at)
        _metrics.BATCH_SIZE.labels(stream=stream).observe(batch.events)

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


def _without_refused(batch: PendingBatch) -> PendingBatch | None:
    """``batch`` without the entries the store's check refuses on their own, or None when it
    names none (the whole batch is refused) or none is left."""
    # Here, not at the top: the store's batch checks import the engine, which the worker's
    # light store client does not load otherwise (and a refusal is rare).
    from marketpulse.marketdata._batch import refused_entries

    body = batch.args["batch"]
    refused = refused_entries(body)
    if not refused:
        return None
    kept_body = dict(body)
    counts: dict[str, int] = {}
    for key, bad in refused.items():
        kept_body[key] = [e for i, e in enumerate(body[key]) if i not in bad]
        counts[key] = len(kept_body[key])
        for i, reason in bad.items():
            log.error("update dropped: the store refuses it", entry=f"{key}[{i}]", reason=reason)
    books = counts.get("books", batch.books)
    prices = counts.get("prices", batch.prices)
    trades = counts.get("trades", batch.trades)
    markets = counts.get("markets", batch.markets)
    if not books + prices + trades + markets:
        return None
    return dataclasses.replace(
        batch,
        args={**batch.args, "batch": kept_body},
        books=books,
        prices=prices,
        trades=trades,
        markets=markets,
    )
