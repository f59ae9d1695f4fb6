"""Slow one-shot queries run off the event loop, with results exact at one timestamp.

A function run cannot be interrupted part-way and resumed, so a query that computes for 0.3 s
inline holds the event loop (every other client's pushes, requests and handshakes) for 0.3 s.
One-shot queries (HTTP, ``query_batch``, an action's ``ctx.run_query``) and subscriptions'
first runs (``Engine.subscribe_async``) of a function known to be slow therefore run on one
worker thread while the loop keeps serving everyone else; CPython
hands the GIL between them every switch interval (lowered to 0.5 ms when the worker starts, so
the loop waits at most that long for it). Fast functions stay inline, at no cost: a function
is fast once a run of it took at most ``slice_s``, slow (for good) once one took longer, and
a one-shot run of a function not seen yet runs off the loop (so even its first slow run holds
nobody up).

Consistency, without locking out commits for a whole run (optimistic validation). The loop
is the only writer of the committed state, and it writes it only inside :meth:`OffLoop.apply`,
under :attr:`OffLoop.lock`. A worker run takes the same lock for each read of the committed
state (a document lookup, a bisection, a chunk of a scan that re-seeks after its last key), so
every read sees the state between two commits. While a run is in flight every applied commit's
written index keys are logged; when the run ends the loop checks them against the run's read
set. No logged key in the read set means every read the run made has the same answer now: the
result is exact at the current timestamp, and it is stamped with it. Otherwise the run is
repeated (``attempts`` times in all), then run inline, which is exact by construction.

The run's time limit still holds: the deadline watchdog interrupts runs on any thread.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ._readset import ReadSet
from ._results import FunctionResult
from ._store import MemoryStore, Write

__all__ = ["OffLoop", "QueryCall"]

Points = list[tuple[str, str, bytes]]
_SWITCH_INTERVAL_S = 0.0005
_LOG_MAX = 8192


@dataclass
class QueryCall:
    """One query of a one-shot run: its resolved spec (``Any``: the engine's ``FunctionSpec``),
    arguments, and the index of its result."""

    index: int
    spec: Any
    args: Any


Execute = Callable[[QueryCall, "threading.Lock | None"], tuple[FunctionResult, ReadSet]]


class OffLoop:
    """The worker thread, the fast/slow verdict per function, and the commit log that
    validates a worker run.

    Args:
        slice_s: a run longer than this marks its function slow.
        attempts: worker runs of one set of calls before the last, inline one.
    """

    def __init__(self, slice_s: float = 0.005, attempts: int = 3) -> None:
        self.lock = threading.Lock()
        self.slice_s = slice_s
        self.attempts = attempts
        self._fast: set[str] = set()
        self._slow: set[str] = set()
        self._seq = 0
        self._active = 0
        self._log: list[tuple[int, Points]] = []
        self._pool: ThreadPoolExecutor | None = None
        self.runs = 0
        """Worker runs started (for tests and metrics)."""
        self.retries = 0
        """Worker runs repeated because a commit wrote into what they read."""
        self.inline = 0
        """Sets of calls finally run inline after ``attempts`` conflicting worker runs."""

    # -- the loop's side of the commit path ------------------------------------------------
    def apply(self, store: MemoryStore, writes: list[Write]) -> Points:
        """Apply committed ``writes`` to ``store`` (under the lock worker reads take) and log
        their index keys for the runs in flight."""
        with self.lock:
            points = store.apply(writes)
            self._seq += 1
            if self._active:
                self._log.append((self._seq, points))
                if len(self._log) > _LOG_MAX:
                    # Bounded while the worker stays busy: a run older than what is kept
                    # cannot be validated, and just runs again.
                    del self._log[: _LOG_MAX // 2]
        return points

    # -- the verdict -----------------------------------------------------------------------
    def inline_ok(self, path: str) -> bool:
        """Whether ``path`` is known to run within the slice (run it on the loop)."""
        return path in self._fast

    def known_slow(self, path: str) -> bool:
        """Whether a run of ``path`` has taken longer than the slice."""
        return path in self._slow

    def observe(self, path: str, seconds: float) -> None:
        """A run of ``path`` took ``seconds``: a slow one marks the function slow for good."""
        if seconds > self.slice_s:
            self._slow.add(path)
            self._fast.discard(path)
        elif path not in self._slow:
            self._fast.add(path)

    # -- worker runs -----------------------------------------------------------------------
    async def run(
        self, calls: Sequence[QueryCall], execute: Execute
    ) -> tuple[list[tuple[FunctionResult, ReadSet]], float]:
        """Run ``calls`` on the worker until one pass validates (else inline, last); return
        their results and read sets, exact at the engine's current ts when this returns (the
        caller stamps it), and the CPU seconds spent.

        Each call is its own job on the worker, so other clients' slow queries take turns with
        a batch's; the batch is validated as a whole, from its first call's start."""
        loop = asyncio.get_running_loop()
        spent = 0.0
        self._active += 1
        try:
            for _ in range(self.attempts):
                start: int | None = None
                outcomes: list[tuple[FunctionResult, ReadSet, float]] = []
                for call in calls:
                    cancelled = threading.Event()
                    context = contextvars.copy_context()
                    self.runs += 1
                    try:
                        seq, result, read_set, cpu = await loop.run_in_executor(
                            self._worker(), context.run, self._work, call, execute, cancelled
                        )
                    except asyncio.CancelledError:
                        cancelled.set()  # the caller left: a queued run is skipped
                        raise
                    start = seq if start is None else start
                    assert result is not None  # only a cancelled job has none
                    outcomes.append((result, read_set, cpu))
                spent += sum(cpu for _, _, cpu in outcomes)
                if start is not None and not self._conflicts(start, outcomes):
                    for call, (_, _, cpu) in zip(calls, outcomes, strict=True):
                        self.observe(call.spec.path, cpu)
                    return [(result, read_set) for result, read_set, _ in outcomes], spent
                self.retries += 1
        finally:
            self._active -= 1
            if not self._active:
                self._log.clear()
        self.inline += 1
        started = time.perf_counter()
        results = [execute(call, None) for call in calls]
        return results, spent + time.perf_counter() - started

    def _worker(self) -> ThreadPoolExecutor:
        if self._pool is None:
            # The loop waits at most this long for the GIL while the worker computes.
            sys.setswitchinterval(min(sys.getswitchinterval(), _SWITCH_INTERVAL_S))
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="slow-queries")
        return self._pool

    def _work(
        self, call: QueryCall, execute: Execute, cancelled: threading.Event
    ) -> tuple[int, FunctionResult | None, ReadSet, float]:
        with self.lock:
            start = self._seq
        if cancelled.is_set():
            return start, None, ReadSet(), 0.0
        began = time.thread_time()  # this thread's CPU: not the time the loop had the GIL
        result, read_set = execute(call, self.lock)
        return start, result, read_set, time.thread_time() - began

    def _conflicts(self, start: int, outcomes: list[tuple[Any, ReadSet, float]]) -> bool:
        """Whether a commit applied since ``start`` wrote a key one of ``outcomes`` read."""
        log = self._log
        if log and log[0][0] > start + 1:
            return True  # the log was trimmed past this run's start: cannot tell
        written: Points = [p for seq, points in log if seq > start for p in points]
        return bool(written) and any(rs.touches(written) for _, rs, _ in outcomes)

    def close(self) -> None:
        """Stop the worker (runs in progress finish)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
