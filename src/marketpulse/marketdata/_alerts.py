"""Price alerts: their tables, the check ``applyUpdates`` runs, and the delivery schedule.

An alert is armed (``triggeredAt`` null) with a level ``above`` and/or ``below``. It is created
only while the market's price is on the near side of its levels (``alerts:create`` refuses one
already reached), and every committed price change of its ticker is checked in the same
transaction, so "the committed price reached the level" is exactly "the price crossed it".

The check is two index ranges per ticker whose price moved, over armed alerts only:
``by_ticker_above`` holds ``(ticker, triggeredAt, above)``, so the armed alerts of a ticker with
``above <= price`` are one contiguous range, and likewise ``below >= price``. A move that reaches
no level costs two empty bisections, whatever the number of alerts.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

from marketpulse.reactive import MutationCtx, Table
from marketpulse.reactive.engine import DatabaseReader

__all__ = [
    "DELIVER",
    "FIRE_LIMIT",
    "MAX_ATTEMPTS",
    "TABLES",
    "backoff_s",
    "fire_alerts",
    "reached",
    "webhook_of",
]

TABLES: Mapping[str, Table] = {
    "alerts": Table(
        indexes={
            "by_user": ["user"],
            "by_ticker_above": ["ticker", "triggeredAt", "above"],
            "by_ticker_below": ["ticker", "triggeredAt", "below"],
        }
    ),
    "userSettings": Table(indexes={"by_user": ["user"]}),
}
"""Declared identically by every module that reads them (``marketData`` fires alerts)."""

DELIVER = "alerts:deliver"
"""The internal action that posts a fired alert to its user's webhook."""

FIRE_LIMIT = 500
"""Alerts one transaction fires per ticker; the rest fire in a follow-up job right after, so
a crowded level cannot push ``applyUpdates`` past its time limit."""

CHECK_TICKER = "alerts:fireBacklog"

MAX_ATTEMPTS = 6
"""Webhook deliveries tried per alert (the first and five retries)."""

_BACKOFF_BASE_S = 1.0
_BACKOFF_MAX_S = 300.0


def backoff_s(attempt: int) -> float:
    """Seconds before retry ``attempt + 1`` after attempt ``attempt`` (1-based) failed: 1, 2, 4..."""
    return float(min(_BACKOFF_BASE_S * 2 ** max(attempt - 1, 0), _BACKOFF_MAX_S))


def reached(price: float, above: float | None, below: float | None) -> bool:
    """Whether ``price`` is at or past one of the levels."""
    return (above is not None and price >= above) or (below is not None and price <= below)


def webhook_of(db: DatabaseReader, user: str) -> str | None:
    """The user's alert webhook URL, if they set one."""
    doc = db.query("userSettings").with_index("by_user", lambda q: q.eq("user", user)).first()
    url = None if doc is None else doc.get("alertWebhook")
    return url if isinstance(url, str) else None


def _armed_reached(
    db: DatabaseReader, ticker: str, price: float, limit: int
) -> list[dict[str, Any]]:
    above = (
        db.query("alerts")
        .with_index(
            "by_ticker_above",
            lambda q: (
                q.eq("ticker", ticker)
                .eq("triggeredAt", None)
                .gte("above", -math.inf)
                .lte("above", price)
            ),
        )
        .take(limit)
    )
    below = (
        db.query("alerts")
        .with_index(
            "by_ticker_below",
            lambda q: (
                q.eq("ticker", ticker)
                .eq("triggeredAt", None)
                .gte("below", price)
                .lte("below", math.inf)
            ),
        )
        .take(limit)
    )
    if not below:
        return above
    # An alert with both levels reached can only be in one range (above <= price <= below
    # means below >= above, which create refuses), but dedupe by id regardless.
    seen = {a["_id"] for a in above}
    return [*above, *(b for b in below if b["_id"] not in seen)][:limit]


def fire_alerts(ctx: MutationCtx, prices: Mapping[str, float], now_ms: float | None = None) -> int:
    """Fire the armed alerts of each ``ticker -> price`` that the price reached.

    Each fired alert gets ``triggeredAt``/``triggerPrice``; if its user has a webhook, its
    delivery is scheduled in this same transaction (so it exists only if the price commits).

    Returns:
        How many alerts fired.
    """
    now = time.time() * 1000.0 if now_ms is None else now_ms
    fired = 0
    for ticker, price in prices.items():
        due = _armed_reached(ctx.db, ticker, price, FIRE_LIMIT + 1)
        if len(due) > FIRE_LIMIT:
            due = due[:FIRE_LIMIT]
            ctx.scheduler.run_after(0, CHECK_TICKER, {"ticker": ticker})
        for alert in due:
            delivery: dict[str, Any] = {
                "state": "none",
                "attempts": 0.0,
                "error": None,
                "deliveredAt": None,
            }
            if webhook_of(ctx.db, alert["user"]) is not None:
                delivery["state"] = "pending"
                ctx.scheduler.run_after(0, DELIVER, {"alertId": alert["_id"], "attempt": 1})
            ctx.db.patch(
                alert["_id"], {"triggeredAt": now, "triggerPrice": price, "delivery": delivery}
            )
            fired += 1
    return fired
