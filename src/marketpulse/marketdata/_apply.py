"""The write path: one ``applyUpdates`` batch applied inside one mutation.

Each document touched by the batch is read once, changed in memory by every update in the batch
that concerns it, and written once at the end, only if its content changed. A replayed batch
therefore writes nothing and re-runs no subscription.

Layout for the read sets (see ``functions``): per-market data lives in one document per table and
ticker (``prices``, ``books``, ``openCandles``) or in per-ticker index ranges (``trades``,
``candles``, ``priceHistory``), so a write for market A only touches index keys that queries
about A read, and only in the table that changed.

Candles (``_candles``): a market's newest candle of each interval is in its ``openCandles``
document, where its trades merge; a trade in a later interval moves the one held there to
``candles`` (closed) and starts the next. A late trade, for an interval older than the held one,
merges into that interval's ``candles`` document. The first trade of a market with no
``openCandles`` document takes its newest ``candles`` of each interval in (a store written
before the open candles moved, or a market cleanup had closed).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from marketpulse.marketdata._batch import (
    BookUpdate,
    CandleRows,
    MarketInfo,
    MarketStatusUpdate,
    ParsedBatch,
    PriceUpdate,
    StreamStatus,
    TradeUpdate,
)
from marketpulse.marketdata._candles import (
    CHUNK_CANDLES,
    INTERVALS,
    bucket_start,
    chunk_start,
    merge_history,
    merge_trade,
    new_candle,
    pack_open,
    unpack_open,
)
from marketpulse.marketdata._leases import lease_live, renew_lease
from marketpulse.marketdata._pricing import DAY_MS, history_bucket
from marketpulse.marketdata._results import current_price, updated_at
from marketpulse.reactive.engine import DatabaseWriter, IndexRange

__all__ = [
    "HISTORY_EXTRA_MS",
    "apply_batch",
    "cleanup",
    "report_stream_status",
    "upsert_markets",
]

HISTORY_EXTRA_MS = DAY_MS + 3_600_000
"""Price history is kept this much longer than trades, so the 24 h change survives cleanup."""

_MARKET_DEFAULTS: dict[str, Any] = {
    "eventTicker": None,
    "seriesTicker": None,
    "title": None,
    "subtitle": None,
    "status": "unknown",
    "closeTime": None,
    "previousPrice": None,
    "result": None,
    "settlementValue": None,
    "settledAt": None,
}
_MARKET_KEYS = frozenset(_MARKET_DEFAULTS)
_PRICE_SEED_KEYS = ("yesBid", "yesAsk", "volume", "openInterest")


def _first(db: DatabaseWriter, table: str, index: str, **eq: Any) -> dict[str, Any] | None:
    """The first document of ``index`` whose leading fields equal ``eq`` (in index order)."""

    def rng(q: IndexRange) -> IndexRange:
        for name, value in eq.items():
            q = q.eq(name, value)
        return q

    return db.query(table).with_index(index, rng).first()


def _strip(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if not k.startswith("_")}


def _diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in new.items() if old.get(k, _MISSING) != v}


_MISSING = object()


@dataclass
class _Doc:
    """A document loaded once per batch: its id (None until inserted) and original content."""

    id: str | None
    original: dict[str, Any]
    current: dict[str, Any]


@dataclass
class _OpenCandles:
    """A market's open candles, loaded once per batch: ``interval -> candle`` as merged so far,
    and the document's id, bytes and ``hourStart`` as stored (``None`` until inserted)."""

    id: str | None
    stored: bytes | None
    hour_start: float | None
    candles: dict[str, dict[str, Any]]


@dataclass
class _Counts:
    prices: int = 0
    books: int = 0
    trades: int = 0
    skipped: int = 0


@dataclass
class _BatchWriter:
    db: DatabaseWriter
    counts: _Counts = field(default_factory=_Counts)
    prices: dict[str, _Doc] = field(default_factory=dict)
    books: dict[str, _Doc] = field(default_factory=dict)
    candles: dict[tuple[str, str, float], _Doc] = field(default_factory=dict)
    """Closed candles (``candles`` documents) by ``(ticker, interval, start)``."""
    open_candles: dict[str, _OpenCandles] = field(default_factory=dict)
    adopted: list[str] = field(default_factory=list)
    """Ids of ``candles`` documents taken into a new ``openCandles`` document (to delete)."""
    markets: dict[str, _Doc] = field(default_factory=dict)
    new_trades: dict[str, dict[str, Any]] = field(default_factory=dict)
    stream: str | None = None
    """The writing stream: the books and prices it writes are live only while its lease is."""
    live: bool = True

    def _own(self, doc: dict[str, Any]) -> None:
        if self.stream is not None:
            doc["stream"] = self.stream
            doc["live"] = self.live

    def _unique(self, table: str, index: str, **eq: Any) -> dict[str, Any] | None:
        return _first(self.db, table, index, **eq)

    def _load(
        self, cache: dict[Any, _Doc], key: Any, table: str, index: str, **eq: Any
    ) -> _Doc | None:
        if key in cache:
            return cache[key]
        doc = self._unique(table, index, **eq)
        if doc is None:
            return None
        original = _strip(doc)
        # Shallow: the batch replaces a document's fields, never changes a value in place.
        loaded = _Doc(id=doc["_id"], original=original, current=dict(original))
        cache[key] = loaded
        return loaded

    def _ticker_doc(
        self, cache: dict[str, _Doc], table: str, ticker: str, empty: dict[str, Any]
    ) -> _Doc:
        """The ticker's doc of a one-doc-per-ticker table, or a new one holding ``empty``."""
        doc = self._load(cache, ticker, table, "by_ticker", ticker=ticker)
        if doc is None:
            doc = cache[ticker] = _Doc(id=None, original={}, current=empty)
            if table != "markets":
                # A ticker first seen in the feed gets a minimal markets doc, so queries know it.
                self.market_doc(ticker)
        return doc

    def market_doc(self, ticker: str) -> _Doc:
        return self._ticker_doc(
            self.markets, "markets", ticker, {"ticker": ticker, **_MARKET_DEFAULTS}
        )

    def price_doc(self, ticker: str) -> _Doc:
        return self._ticker_doc(self.prices, "prices", ticker, _empty_price(ticker))

    def book_doc(self, ticker: str) -> _Doc:
        empty = {"ticker": ticker, "ts": float("-inf"), "valid": False, "bids": b"", "asks": b""}
        return self._ticker_doc(self.books, "books", ticker, empty)

    def status(self, update: MarketStatusUpdate) -> None:
        doc = self.market_doc(update.ticker).current
        doc["status"] = update.status
        doc.update(update.settlement)

    def price(self, update: PriceUpdate) -> None:
        doc = self.price_doc(update.ticker).current
        if update.ts < doc["ts"]:
            self.counts.skipped += 1
            return
        self.counts.prices += 1
        self._own(doc)
        doc["ts"] = update.ts
        for key, value in (
            ("yesBid", update.yes_bid),
            ("yesAsk", update.yes_ask),
            ("volume", update.volume),
            ("openInterest", update.open_interest),
        ):
            if value is not None:
                doc[key] = value
        if update.price is not None and update.ts >= doc["lastPriceTs"]:
            doc["lastPrice"] = update.price
            doc["lastPriceTs"] = update.ts

    def book(self, update: BookUpdate) -> None:
        doc = self.book_doc(update.ticker).current
        if update.ts < doc["ts"]:
            self.counts.skipped += 1
            return
        self.counts.books += 1
        self._own(doc)
        doc.update(ts=update.ts, valid=update.valid, bids=update.bids, asks=update.asks)

    def trade(self, update: TradeUpdate) -> None:
        if update.trade_id in self.new_trades or self._unique(
            "trades", "by_trade_id", tradeId=update.trade_id
        ):
            self.counts.skipped += 1
            return
        self.counts.trades += 1
        self.new_trades[update.trade_id] = {
            "tradeId": update.trade_id,
            "ticker": update.ticker,
            "side": update.side,
            "price": update.price,
            "size": update.size,
            "timestamp": update.timestamp,
        }
        price = self.price_doc(update.ticker).current
        if update.timestamp >= price["lastPriceTs"]:
            self._own(price)
            price["lastPrice"] = update.price
            price["lastPriceTs"] = update.timestamp
        held = self._open_candles(update.ticker).candles
        for interval, length in INTERVALS.items():
            start = bucket_start(update.timestamp, length)
            candle = held.get(interval)
            if candle is not None and start == candle["start"]:
                merge_trade(candle, update.price, update.size, update.timestamp)
            elif candle is None or start > candle["start"]:
                if candle is not None:  # its interval is over: it joins the closed ones
                    key = (update.ticker, interval, candle["start"])
                    self.candles[key] = _Doc(id=None, original={}, current=candle)
                held[interval] = new_candle(
                    update.ticker, interval, start, update.price, update.size, update.timestamp
                )
            else:
                self._closed_candle(update, interval, start)

    def _open_candles(self, ticker: str) -> _OpenCandles:
        """The ticker's open candles; a market without any takes in its newest closed ones."""
        held = self.open_candles.get(ticker)
        if held is not None:
            return held
        doc = self._unique("openCandles", "by_ticker", ticker=ticker)
        if doc is not None:
            blob = doc["candles"]
            held = _OpenCandles(doc["_id"], blob, doc["hourStart"], unpack_open(ticker, blob))
        else:
            held = _OpenCandles(None, None, None, {})
            for interval in INTERVALS:
                newest = _newest_candle(self.db, ticker, interval)
                # An exchange candle (from before history moved to ``candleHistory``) holds
                # its whole interval: no trade merges into it, so it stays closed.
                if newest is not None and not newest.get("exchange"):
                    held.candles[interval] = _strip(newest)
                    self.adopted.append(newest["_id"])
        self.open_candles[ticker] = held
        return held

    def _closed_candle(self, update: TradeUpdate, interval: str, start: float) -> None:
        """A late trade: merge it into its (closed) interval's candle."""
        key = (update.ticker, interval, start)
        doc = self._load(
            self.candles,
            key,
            "candles",
            "by_ticker_interval_start",
            ticker=update.ticker,
            interval=interval,
            start=start,
        )
        if doc is None:
            self.candles[key] = _Doc(
                id=None,
                original={},
                current=new_candle(
                    update.ticker, interval, start, update.price, update.size, update.timestamp
                ),
            )
        elif not doc.current.get("exchange"):
            # An exchange candle (history) covers a whole past interval, this trade included.
            merge_trade(doc.current, update.price, update.size, update.timestamp)

    def _write(self, table: str, doc: _Doc) -> None:
        if doc.id is None:
            doc.id = self.db.insert(table, doc.current)
        else:
            changed = _diff(doc.original, doc.current)
            if changed:
                self.db.patch(doc.id, changed)
        doc.original = dict(doc.current)

    def flush(self) -> None:
        """Write every changed document. All reads of the batch are done by now: a read after
        a write in the same table would have to merge the transaction's pending writes."""
        for trade in self.new_trades.values():
            self.db.insert("trades", trade)
        for doc in self.prices.values():
            if doc.id is not None:
                self._record_history(doc.original, doc.current)
        for table, docs in (
            ("markets", self.markets),
            ("prices", self.prices),
            ("books", self.books),
            ("candles", self.candles),
        ):
            for doc in docs.values():
                if doc.id is None or doc.current != doc.original:
                    self._write(table, doc)
        for doc_id in self.adopted:
            self.db.delete(doc_id)
        for ticker, held in self.open_candles.items():
            blob = pack_open(held.candles)
            hour = held.candles["1h"]["start"]
            if held.id is None:
                held.id = self.db.insert(
                    "openCandles", {"ticker": ticker, "hourStart": hour, "candles": blob}
                )
            elif blob != held.stored:
                changed: dict[str, Any] = {"candles": blob}
                if hour != held.hour_start:
                    # Only then: an unchanged indexed field leaves the index alone.
                    changed["hourStart"] = hour
                self.db.patch(held.id, changed)
            held.stored, held.hour_start = blob, hour

    def moved_prices(self) -> dict[str, float]:
        """``ticker -> display price`` of the markets whose display price this batch changes
        (call before ``flush``, which makes each doc's original its new content)."""
        moved: dict[str, float] = {}
        for ticker, doc in self.prices.items():
            price = current_price(doc.current)
            if price is not None and (not doc.original or price != current_price(doc.original)):
                moved[ticker] = price
        return moved

    def _record_history(self, before: dict[str, Any], after: dict[str, Any]) -> None:
        """When a market's updates cross into a new history bucket, keep the price it had
        before: ``(time of its last change, price)``. That price held from then until this
        update, so the sample at or before any instant gives the price at that instant, up to
        the changes inside one bucket. One insert per ticker and bucket at most, never a patch.

        A market quiet for over a day gets its sample at 24 h before this update instead of
        at its last change: the price held then too, it is the instant the 24 h change reads
        (no later read reaches further back), and cleanup, which goes by a sample's time,
        would otherwise delete a sample this old while the change still needs it.
        """
        then = updated_at(before)
        price = current_price(before)
        if price is None or then <= 0:
            return
        now = updated_at(after)
        if history_bucket(now) > history_bucket(then):
            ts = max(then, now - DAY_MS)
            self.db.insert("priceHistory", {"ticker": before["ticker"], "ts": ts, "price": price})


def _newest_candle(db: DatabaseWriter, ticker: str, interval: str) -> dict[str, Any] | None:
    def rng(q: IndexRange) -> IndexRange:
        return q.eq("ticker", ticker).eq("interval", interval)

    query = db.query("candles").with_index("by_ticker_interval_start", rng)
    doc: dict[str, Any] | None = query.order("desc").first()
    return doc


def _empty_price(ticker: str) -> dict[str, Any]:
    return {
        "ticker": ticker,
        "lastPrice": None,
        "lastPriceTs": 0.0,
        "yesBid": None,
        "yesAsk": None,
        "volume": None,
        "openInterest": None,
        "ts": 0.0,
    }


def apply_batch(
    db: DatabaseWriter,
    batch: ParsedBatch,
    now_ms: float,
    on_prices: Callable[[Mapping[str, float]], object] | None = None,
) -> dict[str, int]:
    """Apply one batch through ``db`` (a mutation's ``ctx.db``) at the store's ``now_ms``.

    ``on_prices``, if given, is called once after every write with ``ticker -> display price``
    of the markets whose display price changed (the price alerts check, same transaction).

    Returns:
        ``{"prices", "books", "trades", "skipped", "revived"}``: updates applied, trades
        inserted, updates skipped as older than the stored state or as an already stored trade
        id, and 1 when the batch renewed its stream's dead lease (the writer must then re-send
        its markets' full state: what the lease's death marked stale stays stale until written).
    """
    writer = _BatchWriter(db, stream=batch.stream_id)
    revived = 0
    if batch.stream_id is not None:
        if batch.lease_ms is not None:
            revived = int(renew_lease(db, batch.stream_id, batch.lease_ms, now_ms))
        else:
            writer.live = lease_live(db, batch.stream_id)
    for status in batch.markets:
        writer.status(status)
    for price in batch.prices:
        writer.price(price)
    for book in batch.books:
        writer.book(book)
    for trade in batch.trades:
        writer.trade(trade)
    moved = writer.moved_prices() if on_prices is not None else None
    writer.flush()
    if on_prices is not None and moved:
        on_prices(moved)
    c = writer.counts
    return {
        "prices": c.prices,
        "books": c.books,
        "trades": c.trades,
        "skipped": c.skipped,
        "revived": revived,
    }


def upsert_candles(db: DatabaseWriter, candles: list[CandleRows]) -> dict[str, int]:
    """Write the exchange's candles of complete past intervals (history at a market's start).

    They go to ``candleHistory``, packed :data:`CHUNK_CANDLES` to a document; the exchange's
    candle of a past interval holds every trade of it, so ``getCandles`` shows it instead of
    the one the store built there from the trades it saw (live or backfilled). Returns
    ``{"inserted", "updated"}`` counts of candles.
    """
    inserted = updated = 0
    chunks: dict[tuple[str, str, float], list[tuple[float, ...]]] = {}
    for ticker, interval, rows in candles:
        length = INTERVALS[interval]
        for row in rows:
            chunks.setdefault((ticker, interval, chunk_start(row[0], length)), []).append(row)
    # One range read per market and interval, not one lookup per document.
    held: dict[tuple[str, str, float], dict[str, Any]] = {}
    for ticker, interval in {(t, i) for t, i, _ in chunks}:
        starts = [s for t, i, s in chunks if t == ticker and i == interval]
        for doc in _history_between(db, ticker, interval, min(starts), max(starts)):
            held[(ticker, interval, float(doc["start"]))] = doc
    for key, rows in chunks.items():
        ticker, interval, start = key
        existing = held.get(key)
        blob, added, changed = merge_history(b"" if existing is None else existing["candles"], rows)
        inserted += added
        updated += changed
        if existing is None:
            end = start + INTERVALS[interval] * CHUNK_CANDLES
            doc = {"ticker": ticker, "interval": interval, "start": start, "end": end}
            db.insert("candleHistory", {**doc, "candles": blob})
        elif blob != existing["candles"]:
            db.patch(existing["_id"], {"candles": blob})
    return {"inserted": inserted, "updated": updated}


def _history_between(
    db: DatabaseWriter, ticker: str, interval: str, first: float, last: float
) -> list[dict[str, Any]]:
    def rng(q: IndexRange) -> IndexRange:
        return (
            q.eq("ticker", ticker).eq("interval", interval).gte("start", first).lte("start", last)
        )

    return db.query("candleHistory").with_index("by_ticker_interval_start", rng).collect()


def upsert_markets(db: DatabaseWriter, markets: list[MarketInfo]) -> dict[str, int]:
    """Insert or update market metadata; seed a prices doc from the REST snapshot if none yet.

    A REST snapshot has no feed timestamp, so it only fills a prices doc the feed has not written
    (``ts == 0``); the feed's own updates always win over it. Likewise it never moves a market's
    status back to an earlier stage of its life (a close or settlement the feed wrote stays).

    Returns:
        ``{"inserted", "updated"}`` counts of ``markets`` docs.
    """
    inserted = updated = 0
    for info in markets:
        meta = {k: v for k, v in info.fields.items() if k in _MARKET_KEYS}
        existing = _first(db, "markets", "by_ticker", ticker=info.ticker)
        if existing is None:
            db.insert("markets", {"ticker": info.ticker, **_MARKET_DEFAULTS, **meta})
            inserted += 1
        else:
            if _STAGE.get(str(meta.get("status")), 0) < _STAGE.get(str(existing["status"]), 0):
                # The REST snapshot was taken before a lifecycle event the feed already wrote
                # (the market closed or settled meanwhile): it must not undo it.
                for key in _LIFECYCLE_KEYS:
                    meta.pop(key, None)
            changed = _diff(existing, meta)
            if changed:
                db.patch(existing["_id"], changed)
                updated += 1
        _seed_price(db, info)
    return {"inserted": inserted, "updated": updated}


_STAGE = {
    "initialized": 1,
    "inactive": 2,
    "active": 2,
    "closed": 3,
    "determined": 4,
    "disputed": 4,
    "amended": 4,
    "finalized": 5,
    "settled": 5,
}
"""How far along its life a market status is: a later stage is never undone by an earlier one."""
_LIFECYCLE_KEYS = ("status", "result", "settlementValue", "settledAt")


def _seed_price(db: DatabaseWriter, info: MarketInfo) -> None:
    seed = {k: info.fields[k] for k in _PRICE_SEED_KEYS if info.fields.get(k) is not None}
    if info.fields.get("lastPrice") is not None:
        seed["lastPrice"] = info.fields["lastPrice"]
    existing = _first(db, "prices", "by_ticker", ticker=info.ticker)
    if existing is None:
        db.insert("prices", {**_empty_price(info.ticker), **seed})
    elif updated_at(existing) <= 0:
        changed = _diff(existing, seed)
        if changed:
            db.patch(existing["_id"], changed)


def report_stream_status(db: DatabaseWriter, status: StreamStatus) -> bool:
    """Store one stream's status unless a newer report is stored already. Returns whether it was."""
    doc = {"streamId": status.stream_id, "updatedAt": status.updated_at, **status.fields}
    existing = _first(db, "streams", "by_stream", streamId=status.stream_id)
    if existing is None:
        lease = _first(db, "leases", "by_stream", streamId=status.stream_id)
        if lease is not None:
            doc["live"] = bool(lease.get("live"))
        db.insert("streams", doc)
        return True
    if status.updated_at < existing["updatedAt"]:
        return False
    changed = _diff(existing, doc)
    if changed:
        db.patch(existing["_id"], changed)
    return True


def cleanup(
    db: DatabaseWriter, cutoff_ms: float, limit: int, hour_cutoff_ms: float | None = None
) -> dict[str, Any]:
    """Delete at most ``limit`` documents past retention, oldest first.

    Trades with ``timestamp < cutoff_ms``, candles whose interval ended by ``cutoff_ms`` (history
    documents once their last interval has), and price history samples older than
    ``cutoff_ms - HISTORY_EXTRA_MS``. Hourly candles count from ``hour_cutoff_ms`` if given.

    A market whose open candles all ended by ``cutoff_ms`` has been quiet since: its
    ``openCandles`` document goes, each candle counted as deleted if past its cutoff and
    otherwise kept as a closed candle.

    Returns:
        ``{"deleted": n, "more": bool}``; call again while ``more``.
    """
    cutoffs = {i: cutoff_ms for i in INTERVALS}
    if hour_cutoff_ms is not None:
        cutoffs["1h"] = hour_cutoff_ms
    deleted, more = _close_quiet_markets(db, cutoffs, limit)
    if more:
        return {"deleted": deleted, "more": True}
    ranges: list[tuple[str, str, Any]] = [
        ("trades", "by_timestamp", lambda q: q.lt("timestamp", cutoff_ms)),
        *[
            ("candles", "by_interval_start", _candle_range(i, cutoffs[i] - length))
            for i, length in INTERVALS.items()
        ],
        *[("candleHistory", "by_interval_end", _history_range(i, cutoffs[i])) for i in INTERVALS],
        ("priceHistory", "by_ts", lambda q: q.lt("ts", cutoff_ms - HISTORY_EXTRA_MS)),
    ]
    for table, index, rng in ranges:
        budget = max(limit - deleted, 0)
        docs = db.query(table).with_index(index, rng).take(budget + 1)
        for doc in docs[:budget]:
            db.delete(doc["_id"])
        deleted += min(len(docs), budget)
        if len(docs) > budget:
            more = True
            break
    return {"deleted": deleted, "more": more}


def _close_quiet_markets(
    db: DatabaseWriter, cutoffs: dict[str, float], limit: int
) -> tuple[int, bool]:
    """Delete the ``openCandles`` documents whose candles all ended by their cutoff (at least
    one, and more while ``limit`` candles allow); returns the candles deleted and whether more
    markets are due."""
    hour = INTERVALS["1h"]
    # The hourly candle ends last of the three (one trade made all three): once it has ended
    # by the latest cutoff, so have the others; each then goes or stays by its own cutoff.
    last_start = max(cutoffs.values()) - hour
    quiet = (
        db.query("openCandles")
        .with_index("by_hour_start", lambda q: q.lte("hourStart", last_start))
        .take(limit // len(INTERVALS) + 1)
    )
    deleted = 0
    for doc in quiet:
        if deleted and deleted + len(INTERVALS) > limit:
            return deleted, True
        for interval, candle in unpack_open(doc["ticker"], doc["candles"]).items():
            if candle["start"] + INTERVALS[interval] <= cutoffs[interval]:
                deleted += 1
            else:  # kept longer (hourly candles): now an older market's closed candle
                db.insert("candles", candle)
        db.delete(doc["_id"])
    return deleted, len(quiet) > limit // len(INTERVALS)


def _candle_range(interval: str, before: float) -> Any:
    return lambda q: q.eq("interval", interval).lte("start", before)


def _history_range(interval: str, before: float) -> Any:
    # A history document goes once its last interval has ended by the cutoff.
    return lambda q: q.eq("interval", interval).lte("end", before)
