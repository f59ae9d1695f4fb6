"""The bound the continuity tests hold the served books to, and how they print their figures."""

from __future__ import annotations

from typing import Any

LEASE_BOUND_S = 5.0
"""No book that differs from the truth is served as live for longer: the worker's 3 s lease, the
store's 1 s expiry cron, and the sampling interval."""


def report(fault: str, **figures: Any) -> None:
    """One line of the note's table (shown with ``pytest -s``)."""
    parts = " ".join(
        f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items()
    )
    print(f"\nCONTINUITY {fault}: {parts}")
