"""The ``watchlists`` functions module: each signed-in user's starred markets.

Every function reads the caller's ``tokenIdentifier`` and touches only the documents keyed by
it, so no argument can reach another user's watchlist.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from pydantic import Field

from marketpulse.marketdata._results import market_result
from marketpulse.marketdata._users import require_user
from marketpulse.marketdata.limits import MAX_RESULTS, MAX_TEXT
from marketpulse.reactive import ConvexError, FunctionModule, MutationCtx, QueryCtx, Schema, Table
from marketpulse.reactive.engine import DatabaseReader

__all__ = ["schema", "watchlists"]

schema = Schema({"watchlists": Table(indexes={"by_user_ticker": ["user", "ticker"]})})
watchlists = FunctionModule("watchlists", schema=schema)

Ticker = Annotated[str, Field(min_length=1, max_length=MAX_TEXT)]

MAX_WATCHED = MAX_RESULTS
"""Markets one user may watch (list returns them all)."""


def _entry(db: DatabaseReader, user: str, ticker: str) -> dict[str, object] | None:
    doc: dict[str, object] | None = (
        db.query("watchlists")
        .with_index("by_user_ticker", lambda q: q.eq("user", user).eq("ticker", ticker))
        .first()
    )
    return doc


def _market(db: DatabaseReader, ticker: str) -> dict[str, Any] | None:
    doc: dict[str, Any] | None = (
        db.query("markets").with_index("by_ticker", lambda q: q.eq("ticker", ticker)).first()
    )
    return doc


@watchlists.query(name="list")  # type: ignore[untyped-decorator]  # the parametrised form is untyped
def list_watched(ctx: QueryCtx) -> list[str]:
    """The tickers the signed-in user watches, in ticker order."""
    user = require_user(ctx)
    docs = (
        ctx.db.query("watchlists")
        .with_index("by_user_ticker", lambda q: q.eq("user", user))
        .take(MAX_WATCHED)
    )
    return [str(d["ticker"]) for d in docs]


@watchlists.query
def markets(ctx: QueryCtx) -> list[dict[str, Any]]:
    """The markets the signed-in user watches, in ticker order, as ``listMarkets`` gives them
    without prices (``prices: false``).

    The dashboard's "Watchlist only" list: ``listMarkets`` answers at most ``limit`` markets, so
    filtering its answer would hide a watched market past the first page.
    """
    user = require_user(ctx)
    docs = (
        ctx.db.query("watchlists")
        .with_index("by_user_ticker", lambda q: q.eq("user", user))
        .take(MAX_WATCHED)
    )
    out = []
    for d in docs:
        market = _market(ctx.db, str(d["ticker"]))
        if market is not None:
            out.append(market_result(market, None))
    return out


@watchlists.mutation
def add(ctx: MutationCtx, ticker: Ticker) -> bool:
    """Watch a market; returns False if it was watched already."""
    user = require_user(ctx)
    if _entry(ctx.db, user, ticker) is not None:
        return False
    if _market(ctx.db, ticker) is None:
        raise ConvexError({"code": "UnknownMarket", "message": f"no market {ticker!r}"})
    count = len(
        ctx.db.query("watchlists")
        .with_index("by_user_ticker", lambda q: q.eq("user", user))
        .take(MAX_WATCHED)
    )
    if count >= MAX_WATCHED:
        raise ConvexError(
            {"code": "LimitReached", "message": f"a watchlist holds {MAX_WATCHED} markets at most"}
        )
    ctx.db.insert("watchlists", {"user": user, "ticker": ticker, "addedAt": time.time() * 1000})
    return True


@watchlists.mutation
def remove(ctx: MutationCtx, ticker: Ticker) -> bool:
    """Stop watching a market; returns False if it was not watched."""
    user = require_user(ctx)
    doc = _entry(ctx.db, user, ticker)
    if doc is None:
        return False
    ctx.db.delete(str(doc["_id"]))
    return True
