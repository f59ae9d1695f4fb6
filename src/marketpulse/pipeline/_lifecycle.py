"""Market lifecycle messages as store updates: the status they imply and the settlement."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from marketpulse.kalshi import MarketLifecycle

__all__ = ["FINISHED", "lifecycle_status", "settlement_of"]

FINISHED = frozenset({"closed", "determined", "finalized", "settled"})
"""Statuses after which a market trades no more (no data is expected for it)."""


def lifecycle_status(ev: MarketLifecycle, at_ms: float) -> str | None:
    """The status a lifecycle message implies; a close date moved to the past closes it."""
    status = ev.status
    if status is None and ev.event_type == "close_date_updated":
        close_ts = ev.fields.get("close_ts")
        if isinstance(close_ts, int | float) and close_ts * 1000 <= at_ms:
            return "closed"
    return status


def _dollars(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        # Strings are dollars (the current shape); integers are the legacy cents.
        d = Decimal(value) if isinstance(value, str) else Decimal(value) / 100
    except (InvalidOperation, ValueError):
        return None
    return float(d) if d.is_finite() else None


def settlement_of(ev: MarketLifecycle) -> dict[str, Any]:
    """``result``, ``settlementValue`` (dollars) and ``settledAt`` (epoch ms) when it carries them."""
    f = ev.fields
    out: dict[str, Any] = {}
    if isinstance(f.get("result"), str) and f["result"]:
        out["result"] = f["result"]
    value = _dollars(f.get("settlement_value_dollars", f.get("settlement_value")))
    if value is not None:
        out["settlementValue"] = value
    settled = f.get("settled_ts")
    if isinstance(settled, int | float) and not isinstance(settled, bool):
        out["settledAt"] = float(settled) * 1000.0
    return out
