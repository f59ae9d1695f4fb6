"""Interrupting a function that overruns its time limit, even inside a pure-CPU loop.

The cooperative deadline (checked on every database operation) cannot stop ``while True:
pass``. This watchdog can: one daemon thread sleeps until the deadline of the function
currently running and, if it is still running then, raises :class:`Interrupted` inside the
thread running it with ``PyThreadState_SetAsyncExc`` (delivered at the next bytecode
boundary; a long single C call finishes first). It re-raises every 0.1 s in case the function
swallows it. ``Interrupted`` derives from ``BaseException`` so ``except Exception`` in user
code does not catch it.

Leaving a guarded run clears any exception still pending under the same lock the watchdog
injects under, so an interrupt can never land outside the run it was meant for. Callers wrap
the run as ``try: enter(); try: ... finally: leave() except Interrupted: ...`` so that one
delivered while leaving is still caught.

Safety: during a run the engine's shared state is only read, except the lazily synced index
views of the pending-commit overlay, which notice an interrupted sync and rebuild themselves
(``_overlay``); the run's own transaction is discarded when it fails. So interrupting a run at
any bytecode leaves the engine consistent.
"""

from __future__ import annotations

import ctypes
import math
import threading
import time

__all__ = ["DEADLINE_WATCHDOG", "DeadlineWatchdog", "Interrupted"]

_set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
_set_async_exc.argtypes = (ctypes.c_ulong, ctypes.py_object)
_set_async_exc.restype = ctypes.c_int
_REPEAT_S = 0.1


class Interrupted(BaseException):
    """Raised inside a function run that overran its deadline."""


class _Run:
    __slots__ = ("deadline", "injected")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.injected = False


class DeadlineWatchdog:
    """Enforces the deadline of the function run in progress on each thread (runs on one
    thread are synchronous, so there is at most one per thread). One per process: see
    :data:`DEADLINE_WATCHDOG`."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._runs: dict[int, _Run] = {}
        self._worker: threading.Thread | None = None
        self._wake_at = math.inf  # when the watcher will look next (inf: asleep, no runs)
        self._entries = 0  # runs entered so far: tells the watcher whether runs still come

    def enter(self, deadline: float) -> None:
        """Start guarding the current thread's run until ``deadline`` (``time.monotonic``)."""
        with self._cond:
            if self._worker is None:
                self._worker = threading.Thread(
                    target=self._watch, name="function-watchdog", daemon=True
                )
                self._worker.start()
                self._wake_at = -math.inf  # it looks as soon as it starts: no need to wake it
            self._runs[threading.get_ident()] = _Run(deadline)
            self._entries += 1
            # A watcher that will look before this deadline anyway need not be woken: waking
            # it on every run would cost a GIL hand-off each.
            if deadline < self._wake_at:
                self._cond.notify()

    def leave(self) -> None:
        """Stop guarding; clear an interrupt that has not been delivered yet."""
        thread_id = threading.get_ident()
        with self._cond:
            run = self._runs.pop(thread_id, None)
            if run is not None and run.injected:
                _set_async_exc(thread_id, ctypes.py_object())  # NULL: cancels a pending one

    def _watch(self) -> None:
        seen = -1
        with self._cond:
            while True:
                now = time.monotonic()
                if not self._runs:
                    if seen == self._entries:
                        # A whole period without a run: sleep until the next one wakes us.
                        self._wake_at = math.inf
                        self._cond.wait()
                    else:
                        # Runs are coming (typically short ones, back to back): keep looking
                        # every period rather than going to sleep for good, or nearly every
                        # run would find the watcher asleep and have to wake it.
                        seen = self._entries
                        self._wake_at = now + _REPEAT_S
                        self._cond.wait(_REPEAT_S)
                    continue
                seen = self._entries
                wake = now + _REPEAT_S
                for thread_id, run in self._runs.items():
                    if run.deadline <= now:
                        _set_async_exc(thread_id, ctypes.py_object(Interrupted))
                        run.injected = True
                    else:
                        wake = min(wake, run.deadline)
                self._wake_at = wake
                self._cond.wait(max(wake - now, 0.001))


DEADLINE_WATCHDOG = DeadlineWatchdog()
"""The process-wide deadline watchdog (one thread, started on first use)."""
