"""The ``alerts`` functions module: each signed-in user's price alerts and their delivery.

``create``/``list``/``remove`` are the user's; an alert fires inside ``marketData:applyUpdates``
(``_alerts.fire_alerts``) and its delivery to the user's webhook (``settings:setAlertWebhook``)
is the internal action ``deliver``, retried with backoff through the scheduler by
``recordDelivery``. A user only ever sees or removes alerts keyed by their ``tokenIdentifier``;
another user's id gets the same ``NotFound`` as an id that does not exist.
"""

from __future__ import annotations

import math
import time
from typing import Annotated, Any

from pydantic import Field

from marketpulse.marketdata import _alerts, _webhook
from marketpulse.marketdata._results import current_price
from marketpulse.marketdata._users import not_found, require_user
from marketpulse.marketdata.limits import MAX_RESULTS, MAX_TEXT
from marketpulse.reactive import (
    ActionCtx,
    ConvexError,
    FunctionModule,
    MutationCtx,
    QueryCtx,
    Schema,
)

__all__ = ["alerts", "schema"]

schema = Schema(dict(_alerts.TABLES))
alerts = FunctionModule("alerts", schema=schema)

Ticker = Annotated[str, Field(min_length=1, max_length=MAX_TEXT)]
Id = Annotated[str, Field(min_length=1, max_length=64)]

MAX_ALERTS = MAX_RESULTS
"""Alerts (armed or fired) one user may hold; ``list`` returns them all."""


def _bad(message: str) -> ConvexError:
    return ConvexError({"code": "InvalidAlert", "message": message})


def _by_ticker(ctx: QueryCtx, table: str, ticker: str) -> dict[str, Any] | None:
    doc: dict[str, Any] | None = (
        ctx.db.query(table).with_index("by_ticker", lambda q: q.eq("ticker", ticker)).first()
    )
    return doc


def _alert_result(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": doc["_id"],
        "ticker": doc["ticker"],
        "above": doc["above"],
        "below": doc["below"],
        "createdAt": doc["_creationTime"],
        "triggeredAt": doc["triggeredAt"],
        "triggerPrice": doc["triggerPrice"],
        "delivery": doc["delivery"],
    }


def _own_alert(ctx: QueryCtx, user: str, id: str) -> dict[str, Any]:
    """The caller's alert ``id``; NotFound for anyone else's, or none at all."""
    norm = ctx.db.normalize_id("alerts", id)
    doc: dict[str, Any] | None = None if norm is None else ctx.db.get(norm)
    if doc is None or doc.get("user") != user:
        not_found("Alert")
    return doc


@alerts.mutation
def create(
    ctx: MutationCtx, ticker: Ticker, above: float | None = None, below: float | None = None
) -> str:
    """Alert the signed-in user when the market's price reaches ``above`` or ``below``.

    A level the price is already at or past is refused: an alert fires on a crossing. Levels
    are YES prices in dollars, from 0 to 1.
    Returns the alert's id.
    """
    user = require_user(ctx)
    if above is None and below is None:
        raise _bad("give a level: above, below or both")
    if any(v is not None and not math.isfinite(v) for v in (above, below)):
        raise _bad("levels must be finite numbers")
    # Prices are YES dollars: a level past them (55 meant as cents) could never fire.
    for name, v in (("above", above), ("below", below)):
        if v is not None and not 0 <= v <= 1:
            raise _bad(f"{name} must be a price in dollars, from 0 to 1 (got {v:g})")
    if above is not None and below is not None and below >= above:
        raise _bad("below must be under above")
    if _by_ticker(ctx, "markets", ticker) is None:
        raise ConvexError({"code": "UnknownMarket", "message": f"no market {ticker!r}"})
    price_doc = _by_ticker(ctx, "prices", ticker)
    price = None if price_doc is None else current_price(price_doc)
    if price is not None and _alerts.reached(price, above, below):
        raise _bad(f"the price ({price:g}) is already at or past that level")
    mine = ctx.db.query("alerts").with_index("by_user", lambda q: q.eq("user", user))
    if len(mine.take(MAX_ALERTS)) >= MAX_ALERTS:
        raise ConvexError(
            {"code": "LimitReached", "message": f"{MAX_ALERTS} alerts at most; remove some"}
        )
    _alerts.tighten_band(ctx.db, ticker, above, below)
    return ctx.db.insert(
        "alerts",
        {
            "user": user,
            "ticker": ticker,
            "above": above,
            "below": below,
            "triggeredAt": None,
            "triggerPrice": None,
            "delivery": None,
        },
    )


@alerts.query(name="list")  # type: ignore[untyped-decorator]  # the parametrised form is untyped
def list_alerts(ctx: QueryCtx) -> list[dict[str, Any]]:
    """The signed-in user's alerts, newest first; fired ones carry ``triggeredAt``."""
    user = require_user(ctx)
    docs = (
        ctx.db.query("alerts")
        .with_index("by_user", lambda q: q.eq("user", user))
        .order("desc")
        .take(MAX_ALERTS)
    )
    return [_alert_result(d) for d in docs]


@alerts.mutation
def remove(ctx: MutationCtx, id: Id) -> None:
    """Delete one of the signed-in user's alerts (a pending delivery is dropped)."""
    doc = _own_alert(ctx, require_user(ctx), id)
    ctx.db.delete(doc["_id"])
    if doc["triggeredAt"] is None:
        _alerts.refresh_band(ctx.db, doc["ticker"])


@alerts.internal_mutation
def fireBacklog(ctx: MutationCtx, ticker: Ticker) -> int:
    """Fire what one ``applyUpdates`` left armed past its per-ticker limit, at today's price."""
    price_doc = _by_ticker(ctx, "prices", ticker)
    price = None if price_doc is None else current_price(price_doc)
    return 0 if price is None else _alerts.fire_alerts(ctx, {ticker: price})


@alerts.internal_query
def deliveryTarget(ctx: QueryCtx, alertId: Id) -> dict[str, Any] | None:
    """Where and what to post for a fired alert; null once it is gone or the webhook unset."""
    norm = ctx.db.normalize_id("alerts", alertId)
    doc = None if norm is None else ctx.db.get(norm)
    if doc is None or doc.get("triggeredAt") is None:
        return None
    url = _alerts.webhook_of(ctx.db, doc["user"])
    if url is None:
        return None
    return {"url": url, "payload": {"type": "priceAlert", **_alert_result(doc)}}


@alerts.internal_mutation
def recordDelivery(ctx: MutationCtx, alertId: Id, attempt: int, error: str | None) -> str:
    """Record one delivery attempt; after a failure, schedule the next one with backoff."""
    norm = ctx.db.normalize_id("alerts", alertId)
    if norm is None or ctx.db.get(norm) is None:
        return "gone"
    state = "delivered"
    if error is not None:
        state = "failed"
        if attempt < _alerts.MAX_ATTEMPTS:
            state = "retrying"
            ctx.scheduler.run_after(
                _alerts.backoff_s(attempt),
                _alerts.DELIVER,
                {"alertId": norm, "attempt": attempt + 1},
            )
    delivered_at = time.time() * 1000.0 if error is None else None
    delivery = {
        "state": state,
        "attempts": float(attempt),
        "error": error,
        "deliveredAt": delivered_at,
    }
    ctx.db.patch(norm, {"delivery": delivery})
    return state


@alerts.internal_action
async def deliver(ctx: ActionCtx, alertId: Id, attempt: int) -> str:
    """POST a fired alert to its user's webhook (attempt ``attempt``); never raises for a
    failing webhook: the failure is recorded and retried later."""
    target = await ctx.run_query("alerts:deliveryTarget", {"alertId": alertId})
    if target is None:
        return "skipped"
    error = await _webhook.post_json(target["url"], target["payload"])
    state: str = await ctx.run_mutation(
        "alerts:recordDelivery", {"alertId": alertId, "attempt": attempt, "error": error}
    )
    return state
