"""The bound the continuity tests hold the served books to, and how they print their figures."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from marketpulse.testing import BookWatch, LocalSystem, wait_for_trades

LEASE_BOUND_S = 5.0
"""No book that differs from the truth is served as live for longer: the worker's 3 s lease, the
store's 1 s expiry cron, and the sampling interval."""


def report(fault: str, **figures: Any) -> None:
    """One line of the note's table (shown with ``pytest -s``)."""
    parts = " ".join(
        f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items()
    )
    print(f"\nCONTINUITY {fault}: {parts}")


def check_fault(
    watch: BookWatch,
    system: LocalSystem,
    tickers: Sequence[str],
    fault: str,
    at: float,
    **more: float,
) -> None:
    """Report a fault's figures, then assert them: no wrong book served as live longer than
    :data:`LEASE_BOUND_S` since ``at``, and every trade the simulator made stored once."""
    lost, twice, compared = wait_for_trades(system, tickers)
    wrong = watch.longest_wrong_live(since=at)  # over the wait for the trades too
    detect = watch.first_none_served(at)
    report(
        fault,
        detect_s=-1.0 if detect is None else detect,
        served_stale_as_live_s=wrong,
        trades_lost=lost,
        trades_twice=twice,
        trades_compared=compared,
        **more,
    )
    assert wrong <= LEASE_BOUND_S, f"a wrong book was served as live for {wrong:.1f}s"
    assert compared > 0
    assert (lost, twice) == (0, 0)
