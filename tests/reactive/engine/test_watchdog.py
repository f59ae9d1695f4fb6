"""The deadline watchdog: overrunning runs are stopped, short runs do not wake its thread."""

from __future__ import annotations

import time

import pytest

from marketpulse.reactive.engine._watchdog import DeadlineWatchdog, Interrupted


def _spin(watchdog: DeadlineWatchdog, limit: float, seconds: float) -> bool:
    """Run a pure-CPU loop of ``seconds`` under a ``limit``; True if it was interrupted."""
    try:
        watchdog.enter(time.monotonic() + limit)
        try:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                pass
        finally:
            watchdog.leave()
    except Interrupted:
        watchdog.leave()
        return True
    return False


def _short_runs(watchdog: DeadlineWatchdog, n: int) -> None:
    for _ in range(n):
        watchdog.enter(time.monotonic() + 1.0)
        sum(range(200))
        watchdog.leave()
        sum(range(400))  # the loop's own work between two function runs


def test_overrun_is_stopped_while_short_runs_stream() -> None:
    watchdog = DeadlineWatchdog()
    _short_runs(watchdog, 2_000)
    # The watcher now looks every period instead of sleeping; a run over its limit (shorter
    # than that period, so it must be woken for it) is still stopped, and so is a longer one.
    assert _spin(watchdog, 0.02, 2.0)
    assert _spin(watchdog, 0.15, 3.0)
    assert not _spin(watchdog, 1.0, 0.0)


def test_overrun_is_stopped_after_the_watcher_went_idle() -> None:
    watchdog = DeadlineWatchdog()
    _short_runs(watchdog, 10)
    time.sleep(0.35)  # more than a whole period without runs: the watcher sleeps for good
    assert _spin(watchdog, 0.2, 3.0)


def test_short_runs_rarely_wake_the_watcher(monkeypatch: pytest.MonkeyPatch) -> None:
    watchdog = DeadlineWatchdog()
    notifies = 0
    notify = watchdog._cond.notify

    def counting(n: int = 1) -> None:
        nonlocal notifies
        notifies += 1
        notify(n)

    monkeypatch.setattr(watchdog._cond, "notify", counting)
    _short_runs(watchdog, 5_000)
    # Waking it on each run costs a GIL hand-off each (about a tenth of a small mutation):
    # only the first run, and one after a stall longer than a period, may wake it.
    assert notifies < 50, notifies
