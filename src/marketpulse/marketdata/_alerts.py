"""Price alerts: their tables, the check ``applyUpdates`` runs, and the delivery schedule.

An alert is armed (``triggeredAt`` null) with a level ``above`` and/or ``below``. It is created
only while the market's price is on the near side of its levels (``alerts:create`` refuses one
already reached), and every committed price change of its ticker is checked in the same
transaction, so "the committed price reached the level" is exactly "the price crossed it".

The check costs one lookup per ticker whose price moved: ``alertBands`` keeps, per ticker, the
lowest armed ``above`` and the highest armed ``below``, so a price inside the band reaches no
level, whatever the number of alerts. Only a price outside it reads the alerts themselves:
``by_ticker_above`` holds ``(ticker, triggeredAt, above)``, so the armed alerts with
``above <= price`` are one contiguous range, and likewise ``below >= price``. Creating an alert
widens nothing and may tighten the band; firing or removing one recomputes it from the two
indexes (two ``first()`` reads).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

from marketpulse.reactive import MutationCtx, Table
from marketpulse.reactive.engine import DatabaseReader, DatabaseWriter

__all__ = [
    "DELIVER",
    "FIRE_LIMIT",
    "MAX_ATTEMPTS",
    "TABLES",
    "backoff_s",
    "fire_alerts",
    "reached",
    "refresh_band",
    "tighten_band",
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
    "alertBands": Table(indexes={"by_ticker": ["ticker"]}),
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


def _band(db: DatabaseReader, ticker: str) -> dict[str, Any] | None:
    doc: dict[str, Any] | None = (
        db.query("alertBands").with_index("by_ticker", lambda q: q.eq("ticker", ticker)).first()
    )
    return doc


def tighten_band(db: DatabaseWriter, ticker: str, above: float | None, below: float | None) -> None:
    """Account for a new armed alert in its ticker's band."""
    band = _band(db, ticker)
    if band is None:
        db.insert("alertBands", {"ticker": ticker, "above": above, "below": below})
        return
    changes: dict[str, Any] = {}
    if above is not None and (band["above"] is None or above < band["above"]):
        changes["above"] = above
    if below is not None and (band["below"] is None or below > band["below"]):
        changes["below"] = below
    if changes:
        db.patch(band["_id"], changes)


def refresh_band(db: DatabaseWriter, ticker: str) -> None:
    """Recompute a ticker's band from its armed alerts (after some fired or were removed)."""
    lowest = (
        db.query("alerts")
        .with_index(
            "by_ticker_above",
            lambda q: q.eq("ticker", ticker).eq("triggeredAt", None).gte("above", -math.inf),
        )
        .first()
    )
    highest = (
        db.query("alerts")
        .with_index(
            "by_ticker_below",
            lambda q: q.eq("ticker", ticker).eq("triggeredAt", None).lte("below", math.inf),
        )
        .order("desc")
        .first()
    )
    band = _band(db, ticker)
    new = {
        "above": None if lowest is None else lowest["above"],
        "below": None if highest is None else highest["below"],
    }
    if band is None:
        if new["above"] is not None or new["below"] is not None:
            db.insert("alertBands", {"ticker": ticker, **new})
    elif new["above"] is None and new["below"] is None:
        db.delete(band["_id"])
    elif new != {"above": band["above"], "below": band["below"]}:
        db.patch(band["_id"], new)


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
        band = _band(ctx.db, ticker)
        if band is None or not reached(price, band["above"], band["below"]):
            continue
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
        refresh_band(ctx.db, ticker)
    return fired
