"""The ``marketData`` functions module: schema, public queries and internal mutations.

Read sets, by design (the rules of issue 4). A query records the index ranges it scans, and a
commit re-runs only the queries whose ranges hold a written key, so each table below is written
by one kind of feed event and each query reads only the tables its result depends on:

==================  ===========================================================================
query               reads
==================  ===========================================================================
getPrice            ``prices`` (ticker), ``priceHistory`` (ticker, ts <= updatedAt - 24 h),
                    ``markets`` (ticker) only while no history sample is old enough
getOrderbook        ``books`` (ticker)
getRecentTrades     ``trades`` (ticker, newest ``limit``); ``markets`` (ticker) only if none
getCandles          ``openCandles`` (ticker) unless ``before``, ``candles`` (ticker, interval,
                    newest ``limit`` [before ``before``]), ``candleHistory`` (ticker, interval
                    [before ``before``]); ``markets`` only if none
getMarket           ``markets`` (ticker), then what getPrice reads
listMarkets         ``markets`` (status or all, until ``limit`` matches), ``prices`` of those
                    (none with ``prices: false``)
getStreamStatus     ``streams``
getTradeHistory     ``trades`` (ticker, one page, newest first; ``paginate``)
==================  ===========================================================================

Liveness (``_leases``): each stream's batches renew its lease (``leases``, read by no query);
the ``expireLeases`` cron, every second, marks a lapsed stream's books and prices ``live:
false``, which re-runs the queries reading them: ``getOrderbook`` then answers null, the others
say ``live: false``. ``resetLeases`` does the same for every stream as the store starts.

So a book change on market A re-runs only getOrderbook(A); a trade on A re-runs
getRecentTrades(A), getCandles(A, *) (not those with ``before``), getPrice(A) (its last price
moved) and the market lists showing A with prices; nothing about A re-runs a query about B. ``applyUpdates`` writes a document only
when its content changes, so a replayed batch re-runs nothing. ``books`` keeps its levels packed
(``packed_levels``): a book is rewritten on nearly every batch and read by every getOrderbook re-run.
"""

from __future__ import annotations

import time
from typing import (
    Annotated,
    Any,  # pydantic needs these on 3.11
)

from pydantic import Field

from marketpulse.marketdata import _alerts, _apply, _leases, _results
from marketpulse.marketdata._batch import (
    parse_batch,
    parse_candles,
    parse_markets,
    parse_packed_candles,
    parse_stream_status,
)
from marketpulse.marketdata._candles import (
    CHUNK_CANDLES,
    INTERVALS,
    Interval,
    fill_gaps,
    history_candle,
    unpack_open,
)
from marketpulse.marketdata._pricing import DAY_MS
from marketpulse.marketdata.alerts import alerts
from marketpulse.marketdata.limits import BOOK_LEVELS, MAX_CANDLES, MAX_RESULTS, MAX_TEXT
from marketpulse.marketdata.packed_candles import ROW_BYTES, unpack_rows
from marketpulse.marketdata.user_settings import settings
from marketpulse.marketdata.watchlists import watchlists
from marketpulse.reactive import (
    Crons,
    FunctionModule,
    MutationCtx,
    PaginationOptions,
    QueryCtx,
    Schema,
    Table,
)
from marketpulse.reactive.engine import IndexRange

# The signed-in users' modules are the app's too: serving this module serves them.
__all__ = ["alerts", "crons", "marketData", "schema", "settings", "watchlists"]

schema = Schema(
    {
        "markets": Table(indexes={"by_ticker": ["ticker"], "by_status": ["status", "ticker"]}),
        # by_stream_live: the live documents of a stream whose lease died (_leases).
        "prices": Table(indexes={"by_ticker": ["ticker"], "by_stream_live": ["stream", "live"]}),
        "books": Table(indexes={"by_ticker": ["ticker"], "by_stream_live": ["stream", "live"]}),
        "trades": Table(
            indexes={
                "by_ticker_ts": ["ticker", "timestamp"],
                "by_trade_id": ["tradeId"],
                "by_timestamp": ["timestamp"],
            }
        ),
        # A market's newest candle of each interval, packed (_candles.py); older ones below.
        "openCandles": Table(indexes={"by_ticker": ["ticker"], "by_hour_start": ["hourStart"]}),
        "candles": Table(
            indexes={
                "by_ticker_interval_start": ["ticker", "interval", "start"],
                "by_interval_start": ["interval", "start"],
            }
        ),
        # The exchange's candles (history), CHUNK_CANDLES packed to a document (_candles.py).
        "candleHistory": Table(
            indexes={
                "by_ticker_interval_start": ["ticker", "interval", "start"],
                "by_interval_end": ["interval", "end"],
            }
        ),
        "priceHistory": Table(indexes={"by_ticker_ts": ["ticker", "ts"], "by_ts": ["ts"]}),
        "streams": Table(indexes={"by_stream": ["streamId"]}),
        **_alerts.TABLES,  # applyUpdates fires price alerts
        "leases": Table(indexes={"by_stream": ["streamId"]}),
    }
)

marketData = FunctionModule("marketData", schema=schema)

Limit = Annotated[int, Field(ge=1, le=MAX_RESULTS)]
HOUR_CANDLES_KEPT_MS = 31 * DAY_MS

Depth = Annotated[int, Field(ge=1, le=BOOK_LEVELS)]
CandleLimit = Annotated[int, Field(ge=1, le=MAX_CANDLES)]
Ticker = Annotated[str, Field(max_length=MAX_TEXT)]
EpochMs = Annotated[float, Field(ge=0, allow_inf_nan=False)]


def _by_ticker(ctx: QueryCtx, table: str, ticker: str) -> dict[str, Any] | None:
    doc: dict[str, Any] | None = (
        ctx.db.query(table).with_index("by_ticker", lambda q: q.eq("ticker", ticker)).first()
    )
    return doc


def _reference_price(
    ctx: QueryCtx, price_doc: dict[str, Any], market: dict[str, Any] | None
) -> float | None:
    """The price 24 h before the doc's last update; the exchange's previous price until we have it."""
    ticker = price_doc["ticker"]
    cutoff = _results.updated_at(price_doc) - DAY_MS
    sample = (
        ctx.db.query("priceHistory")
        .with_index("by_ticker_ts", lambda q: q.eq("ticker", ticker).lte("ts", cutoff))
        .order("desc")
        .first()
    )
    if sample is not None:
        return float(sample["price"])
    if market is None:
        market = _by_ticker(ctx, "markets", ticker)
    previous = None if market is None else market.get("previousPrice")
    return None if previous is None else float(previous)


@marketData.query
def getPrice(ctx: QueryCtx, ticker: Ticker) -> dict[str, Any] | None:
    """Latest price of a market, its 24 h change, best bid/ask, volume and open interest."""
    doc = _by_ticker(ctx, "prices", ticker)
    if doc is None:
        return None
    return _results.price_result(doc, _reference_price(ctx, doc, None))


@marketData.query
def getOrderbook(ctx: QueryCtx, ticker: Ticker, depth: Depth = 10) -> dict[str, Any] | None:
    """Top ``depth`` levels of a market's book, best first; null while it has no valid, live
    book (its stream's lease lapsed, or the store restarted and its writer has not renewed)."""
    doc = _by_ticker(ctx, "books", ticker)
    if doc is None or not doc.get("valid") or not _results.is_live(doc):
        return None
    return _results.orderbook_result(doc, depth)


def _known(ctx: QueryCtx, ticker: str) -> bool:
    return _by_ticker(ctx, "markets", ticker) is not None


@marketData.query
def getRecentTrades(
    ctx: QueryCtx, ticker: Ticker, limit: Limit = 20
) -> list[dict[str, Any]] | None:
    """A market's newest trades, newest first; null for an unknown ticker."""
    docs = (
        ctx.db.query("trades")
        .with_index("by_ticker_ts", lambda q: q.eq("ticker", ticker))
        .order("desc")
        .take(limit)
    )
    if not docs and not _known(ctx, ticker):
        return None
    return [_results.trade_result(d) for d in docs]


@marketData.query
def getCandles(
    ctx: QueryCtx,
    ticker: Ticker,
    interval: Interval,
    limit: CandleLimit = 100,
    before: EpochMs | None = None,
) -> list[dict[str, Any]] | None:
    """OHLCV candles from trades, oldest first; a quiet interval repeats the last close.

    With ``before`` (epoch ms), the closed candles that started before it, quiet intervals
    filled up to it: the history under a live window of the newest candles. It leaves out the
    candle still open and reads nothing a trade in the current interval writes, so it is not
    re-run with every trade, only when its range changes (a backfill).
    """

    def same(q: IndexRange) -> IndexRange:
        q = q.eq("ticker", ticker).eq("interval", interval)
        return q if before is None else q.lt("start", before)

    # Newest first: the open candle, then the closed ones.
    built: dict[float, dict[str, Any]] = {}
    if before is None and (opened := _by_ticker(ctx, "openCandles", ticker)) is not None:
        candle = unpack_open(ticker, opened["candles"])[interval]
        built[candle["start"]] = candle
    closed = ctx.db.query("candles").with_index("by_ticker_interval_start", same).order("desc")
    for doc in closed.take(limit - len(built)):
        built.setdefault(float(doc["start"]), doc)
    # The newest history documents until they hold ``limit`` candles (or there are no more).
    # A document is keyed by the start of the span it covers, so the one ``before`` falls in
    # is read whole and its later candles are dropped below.
    chunks: list[dict[str, Any]] = []
    want = limit // CHUNK_CANDLES + 2
    while True:
        history = ctx.db.query("candleHistory").with_index("by_ticker_interval_start", same)
        chunks = history.order("desc").take(want)
        held = sum(len(c["candles"]) for c in chunks) // ROW_BYTES
        if len(chunks) < want or held >= limit:
            break
        want *= 2
    if not built and not chunks and not _known(ctx, ticker):
        return None
    if not chunks:  # no history: the built candles, newest first already
        return fill_gaps(list(built.values()), INTERVALS[interval], limit, before)
    # The exchange's candle of an interval holds all its trades: it wins over the one built.
    for chunk in chunks:
        built.update(
            (row[0], history_candle(row))
            for row in unpack_rows(chunk["candles"])
            if before is None or row[0] < before
        )
    newest = sorted(built.values(), key=lambda c: -float(c["start"]))[:limit]
    return fill_gaps(newest, INTERVALS[interval], limit, before)


@marketData.query
def getMarket(ctx: QueryCtx, ticker: Ticker) -> dict[str, Any] | None:
    """A market's metadata with its latest price and 24 h change; null if unknown."""
    market = _by_ticker(ctx, "markets", ticker)
    if market is None:
        return None
    price_doc = _by_ticker(ctx, "prices", ticker)
    reference = None if price_doc is None else _reference_price(ctx, price_doc, market)
    return _results.market_detail(market, price_doc, reference)


@marketData.query
def listMarkets(
    ctx: QueryCtx,
    status: Annotated[str, Field(max_length=64)] | None = None,
    search: Annotated[str, Field(max_length=200)] | None = None,
    limit: Limit = 50,
    prices: bool = True,
) -> list[dict[str, Any]]:
    """Markets by ticker, optionally of one status and matching ``search`` (ticker, event, title).

    With ``prices`` false the entries carry no price (its fields null, ``live`` false) and no
    ``prices`` document is read: the list then re-runs when a listed market's metadata changes,
    not with every price of every market in it (for a list whose rows subscribe to their own).
    """
    query = (
        ctx.db.query("markets").with_index("by_status", lambda q: q.eq("status", status))
        if status is not None
        else ctx.db.query("markets").with_index("by_ticker")
    )
    if search:
        needle = search.casefold()
        query = query.filter(
            lambda m: any(
                needle in (m.get(k) or "").casefold()
                for k in ("ticker", "eventTicker", "title", "subtitle")
            )
        )
    markets = query.take(limit)
    if not prices:
        return [_results.market_result(m, None) for m in markets]
    return [_results.market_result(m, _by_ticker(ctx, "prices", m["ticker"])) for m in markets]


@marketData.query
def getTradeHistory(
    ctx: QueryCtx, ticker: Ticker, paginationOpts: PaginationOptions
) -> dict[str, Any]:
    """A market's trades, newest first, a page at a time (``usePaginatedQuery``)."""
    result: dict[str, Any] = (
        ctx.db.query("trades")
        .with_index("by_ticker_ts", lambda q: q.eq("ticker", ticker))
        .order("desc")
        .paginate(dict(paginationOpts))
    )
    return {**result, "page": [_results.trade_result(d) for d in result["page"]]}


@marketData.query
def getStreamStatus(ctx: QueryCtx) -> list[dict[str, Any]]:
    """Health of every feed stream, by stream id."""
    docs = ctx.db.query("streams").with_index("by_stream").take(MAX_RESULTS)
    return [_results.stream_result(d) for d in docs]


def _now_ms() -> float:
    # The server's clock at the mutation, as ``Date.now()`` in a Convex mutation.
    return time.time() * 1000.0


@marketData.internal_mutation(durability="relaxed")
def applyUpdates(ctx: MutationCtx, batch: dict[str, Any]) -> dict[str, int]:
    """Apply one batch from the worker (docs/interfaces.md §5); idempotent. Fires the price
    alerts the new prices reach, in the same transaction.

    A batch with ``streamId`` and ``leaseMs`` renews that stream's lease; ``revived: 1`` in the
    result says the lease had lapsed (or the store restarted): re-send the full state.
    """
    return _apply.apply_batch(
        ctx.db, parse_batch(batch), _now_ms(), lambda moved: _alerts.fire_alerts(ctx, moved)
    )


@marketData.internal_mutation(durability="relaxed")
def expireLeases(ctx: MutationCtx, continued: bool = False) -> dict[str, int | bool]:
    """Mark lapsed stream leases dead, and their books and prices stale (a cron, every second).

    A stream with more than one run's worth of documents is marked by a chain of runs, the
    next scheduled at once by the last (``continued``); one chain per lapse, the cron's own
    runs going on beside it."""
    result = _leases.expire_leases(ctx.db, _now_ms())
    if result["more"] and (continued or result["expired"]):
        ctx.scheduler.run_after(0, "marketData:expireLeases", {"continued": True})
    return result


@marketData.internal_mutation
def resetLeases(ctx: MutationCtx) -> dict[str, int | bool]:
    """Mark every lease dead: run as the store starts, so nothing is live until renewed
    (again while it answers ``more``: the at-start runner does so)."""
    return _leases.reset_leases(ctx.db)


@marketData.internal_mutation(durability="relaxed")
def upsertMarkets(ctx: MutationCtx, markets: list[dict[str, Any]]) -> dict[str, int]:
    """Insert or update market metadata from the exchange's REST API."""
    return _apply.upsert_markets(ctx.db, parse_markets(markets))


@marketData.internal_mutation(durability="relaxed")
def upsertCandles(
    ctx: MutationCtx,
    candles: list[dict[str, Any]] | None = None,
    packed: list[dict[str, Any]] | None = None,
) -> dict[str, int]:
    """Write the exchange's candles of complete past intervals (a market's history): one
    object per candle in ``candles``, or rows of bytes per market and interval in ``packed``
    (what the pipeline sends: see :func:`~marketpulse.marketdata._batch.parse_packed_candles`)."""
    rows = parse_candles(candles or []) + parse_packed_candles(packed or [])
    return _apply.upsert_candles(ctx.db, rows)


@marketData.internal_mutation(durability="relaxed")
def reportStreamStatus(ctx: MutationCtx, status: dict[str, Any]) -> bool:
    """Store a stream's health report; an older report than the stored one is ignored."""
    return _apply.report_stream_status(ctx.db, parse_stream_status(status))


@marketData.internal_mutation
def cleanup(
    ctx: MutationCtx,
    olderThanMs: Annotated[float, Field(ge=0)],
    limit: Annotated[int, Field(ge=1, le=5000)] = 1000,
    nowMs: float | None = None,
) -> dict[str, Any]:
    """Delete trades and candles older than ``olderThanMs`` (an age), ``limit`` at most per call.

    The age counts back from ``nowMs``, by default the server's clock at the mutation (as
    ``Date.now()`` in a Convex mutation); returns ``{"deleted", "more"}``.
    """
    now = _now_ms() if nowMs is None else nowMs
    # Hourly candles are a month of history (fetched when a market is added): kept that long.
    return _apply.cleanup(
        ctx.db, now - olderThanMs, limit, now - max(olderThanMs, HOUR_CANDLES_KEPT_MS)
    )


crons = Crons()
crons.at_start("reset stream leases", resetLeases)
crons.interval("expire stream leases", {"seconds": 1}, expireLeases)
