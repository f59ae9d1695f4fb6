"""The sans-I/O coalescer: many events in, one batch with the latest state out."""

from __future__ import annotations

from decimal import Decimal

from marketpulse.kalshi import OrderBook
from marketpulse.marketdata.packed_levels import level_count, unpack_levels
from marketpulse.pipeline._coalesce import (
    MAX_ENTRIES_PER_BATCH,
    Coalescer,
    PendingBatch,
    fair_shares,
)

D = Decimal


def next_batch(c: Coalescer) -> PendingBatch | None:
    """One drain, as the batch writer does it (a drain hands out at most one batch)."""
    batches = c.batches_to_send()
    assert len(batches) <= 1
    return batches[0] if batches else None


def book(ticker: str, yes: list[tuple[str, str]], no: list[tuple[str, str]]) -> OrderBook:
    b = OrderBook(ticker)
    b.apply_snapshot([(D(p), D(s)) for p, s in yes], [(D(p), D(s)) for p, s in no])
    return b


def test_many_book_changes_make_one_entry_with_the_latest_state() -> None:
    c = Coalescer()
    b = book("KX-A", [("0.40", "10")], [("0.55", "5")])
    for i in range(1000):
        b.apply_snapshot([(D("0.40"), D(10 + i))], [(D("0.55"), D(5))])
        c.book("KX-A", b, 1000.0 + i, now=float(i))
    batch = next_batch(c)
    assert batch is not None
    assert batch.events == 1000
    assert batch.first_event_at == 0.0
    books = batch.args["batch"]["books"]
    assert len(books) == 1
    # Packed as the store keeps them (bytes on the wire).
    assert unpack_levels(books[0]["bids"]) == [[0.40, 1009.0]]
    # YES asks derive from NO bids: 1 - 0.55.
    assert unpack_levels(books[0]["asks"]) == [[0.45, 5.0]]
    assert books[0]["valid"] is True and books[0]["ts"] == 1999.0
    assert next_batch(c) is None


def test_invalid_mark_wins_until_a_fresh_book_follows() -> None:
    c = Coalescer()
    b = book("KX-A", [("0.40", "10")], [])
    c.book("KX-A", b, 1.0, now=0.0)
    c.book_invalid("KX-A", 2.0, now=0.0)
    batch = next_batch(c)
    assert batch is not None
    assert batch.args["batch"]["books"] == [{"ticker": "KX-A", "valid": False, "ts": 2.0}]
    c.book_invalid("KX-A", 3.0, now=0.0)
    c.book("KX-A", b, 4.0, now=0.0)
    batch = next_batch(c)
    assert batch is not None
    assert batch.args["batch"]["books"][0]["valid"] is True


def test_a_book_that_went_invalid_in_place_is_written_as_invalid() -> None:
    c = Coalescer()
    b = book("KX-A", [("0.40", "10")], [])
    c.book("KX-A", b, 1.0, now=0.0)
    b.invalidate("seq gap")
    batch = next_batch(c)
    assert batch is not None
    assert batch.args["batch"]["books"] == [{"ticker": "KX-A", "valid": False, "ts": 1.0}]


def test_prices_merge_fields_and_trades_are_kept_individually() -> None:
    c = Coalescer()
    c.price("KX-A", {"price": 0.5, "yesBid": 0.49, "yesAsk": None}, 10.0, now=0.0)
    c.price("KX-A", {"price": 0.52, "yesBid": None, "yesAsk": 0.53}, 11.0, now=0.0)
    for i in range(3):
        c.trade(
            {
                "id": f"t{i}",
                "ticker": "KX-A",
                "side": "buy",
                "price": 0.5,
                "size": 1.0,
                "timestamp": 1.0,
            },
            now=0.0,
        )
    c.market_status("KX-A", "closed", now=0.0)
    batch = next_batch(c)
    assert batch is not None
    args = batch.args["batch"]
    assert args["prices"] == [
        {"ticker": "KX-A", "price": 0.52, "yesBid": 0.49, "yesAsk": 0.53, "ts": 11.0}
    ]
    assert [t["id"] for t in args["trades"]] == ["t0", "t1", "t2"]
    assert args["markets"] == [{"ticker": "KX-A", "status": "closed"}]
    assert "books" not in args


def test_forget_drops_pending_updates_of_removed_markets() -> None:
    c = Coalescer()
    c.book("KX-A", book("KX-A", [("0.4", "1")], []), 1.0, now=0.0)
    c.price("KX-A", {"price": 0.4}, 1.0, now=0.0)
    c.trade({"id": "t", "ticker": "KX-A"}, now=0.0)
    c.price("KX-B", {"price": 0.6}, 1.0, now=0.0)
    c.forget({"KX-A"})
    batch = next_batch(c)
    assert batch is not None
    assert batch.args["batch"] == {"prices": [{"ticker": "KX-B", "price": 0.6, "ts": 1.0}]}


def test_a_backlog_is_split_into_bounded_batches_oldest_first() -> None:
    c = Coalescer()
    for i in range(250):
        c.price(f"KX-{i}", {"price": 0.5}, 1.0, now=0.0)
    sent: list[str] = []
    while (batch := next_batch(c)) is not None:
        assert batch.prices <= MAX_ENTRIES_PER_BATCH
        sent += [p["ticker"] for p in batch.args["batch"]["prices"]]
    assert sent == [f"KX-{i}" for i in range(250)]


def test_kinds_share_a_full_batch_fairly() -> None:
    c = Coalescer(max_entries=40)
    for i in range(100):
        c.book(f"KX-{i}", book(f"KX-{i}", [("0.4", "1")], []), 1.0, now=0.0)
        c.price(f"KX-{i}", {"price": 0.4}, 1.0, now=0.0)
    c.market_status("KX-0", "closed", now=0.0)
    batch = next_batch(c)
    assert batch is not None
    assert (batch.books, batch.prices, batch.markets) == (20, 19, 1)


def test_a_market_state_waits_for_its_trades() -> None:
    """Trades go first; a book, price or status never goes ahead of its market's trades, and
    the states wait while trades fill the batches."""
    c = Coalescer(max_entries=40)
    for i in range(90):
        c.trade({"id": f"a-{i}", "ticker": "KX-A"}, now=0.0)
    c.price("KX-A", {"price": 0.4, "volume": 90}, 1.0, now=0.0)
    c.book("KX-A", book("KX-A", [("0.4", "1")], []), 1.0, now=0.0)
    c.price("KX-B", {"price": 0.6}, 1.0, now=0.0)
    shapes = []
    while (batch := next_batch(c)) is not None:
        body = batch.args["batch"]
        shapes.append((batch.trades, [p["ticker"] for p in body.get("prices", [])], batch.books))
    assert shapes == [(40, [], 0), (40, [], 0), (10, ["KX-A", "KX-B"], 1)]


def test_states_fill_what_the_trades_leave() -> None:
    c = Coalescer(max_entries=40)
    for i in range(45):
        c.trade({"id": f"t-{i}", "ticker": "KX-A" if i < 30 else "KX-C"}, now=0.0)
    for t in ("KX-A", "KX-B", "KX-C"):
        c.price(t, {"price": 0.4}, 1.0, now=0.0)
    first = next_batch(c)
    assert first is not None
    assert (first.trades, first.prices) == (40, 0)
    second = next_batch(c)
    assert second is not None
    body = second.args["batch"]
    assert [t["id"] for t in body["trades"]] == [f"t-{i}" for i in range(40, 45)]
    assert [p["ticker"] for p in body["prices"]] == ["KX-A", "KX-B", "KX-C"]


def test_deep_books_are_spread_over_batches_by_levels() -> None:
    c = Coalescer(max_entries=1000)
    deep = [(f"0.{i:04d}", "1") for i in range(1, 201)]  # 200 bids + 200 asks per book
    for i in range(120):
        c.book(f"KX-{i}", book(f"KX-{i}", deep, deep), 1.0, now=0.0)
    counts = []
    while (batch := next_batch(c)) is not None:
        books = batch.args["batch"]["books"]
        levels = sum(level_count(b["bids"]) + level_count(b["asks"]) for b in books)
        assert levels <= 20_000
        counts.append(len(batch.args["batch"]["books"]))
    assert counts == [50, 50, 20]


def test_ts_never_goes_back_per_ticker_whatever_the_clocks() -> None:
    # The exchange's clock is behind ours: an invalid mark (our clock) is followed by a fresh
    # snapshot stamped earlier. Written as is, the store would skip the snapshot as older.
    c = Coalescer()
    c.book_invalid("KX-A", 5000.0, now=0.0)
    c.price("KX-A", {"price": 0.5}, 5000.0, now=0.0)
    next_batch(c)
    c.book("KX-A", book("KX-A", [("0.4", "1")], []), 4200.0, now=0.0)
    c.price("KX-A", {"price": 0.6}, 4300.0, now=0.0)
    batch = next_batch(c)
    assert batch is not None
    assert batch.args["batch"]["books"][0]["ts"] == 5000.0
    assert batch.args["batch"]["prices"][0]["ts"] == 5000.0
    c.book("KX-A", book("KX-A", [("0.4", "2")], []), 6000.0, now=0.0)
    batch = next_batch(c)
    assert batch is not None
    assert batch.args["batch"]["books"][0]["ts"] == 6000.0


def test_a_requeued_batch_goes_beneath_newer_pending_state() -> None:
    """A batch that may not have been written comes back under what is pending: the newer
    state wins, what only the batch had is kept, and its trades go first."""
    c = Coalescer()
    a = book("KX-A", [("0.40", "10")], [])
    c.book("KX-A", a, 1.0, now=5.0)
    c.book("KX-B", book("KX-B", [("0.30", "1")], []), 1.0, now=5.0)
    c.book_invalid("KX-C", 1.0, now=5.0)
    c.price("KX-A", {"lastPrice": 0.41, "yesBid": 0.40}, 1.0, now=5.0)
    c.market_status("KX-A", "open", now=5.0)
    c.trade({"tradeId": "t1", "ticker": "KX-A"}, now=5.0)
    old = next_batch(c)
    assert old is not None
    # Newer events arrive while the batch is in flight.
    a.apply_snapshot([(D("0.45"), D("3"))], [])
    c.book("KX-A", a, 2.0, now=6.0)
    c.price("KX-A", {"lastPrice": 0.45}, 2.0, now=6.0)
    c.market_status("KX-A", "closed", now=6.0)
    c.trade({"tradeId": "t2", "ticker": "KX-A"}, now=6.0)

    c.requeue(old)
    batch = next_batch(c)
    assert batch is not None
    body = batch.args["batch"]
    books = {b["ticker"]: b for b in body["books"]}
    assert unpack_levels(books["KX-A"]["bids"]) == [[0.45, 3.0]] and books["KX-A"]["ts"] == 2.0
    kx_b = books["KX-B"]
    assert unpack_levels(kx_b.pop("bids")) == [[0.3, 1.0]]
    assert kx_b == {"ticker": "KX-B", "asks": b"", "ts": 1.0, "valid": True}
    assert books["KX-C"] == {"ticker": "KX-C", "valid": False, "ts": 1.0}
    # Field by field: the newer lastPrice, the older yesBid nobody has replaced.
    assert body["prices"] == [{"ticker": "KX-A", "lastPrice": 0.45, "yesBid": 0.40, "ts": 2.0}]
    assert body["markets"] == [{"ticker": "KX-A", "status": "closed"}]
    assert [t["tradeId"] for t in body["trades"]] == ["t1", "t2"]
    assert batch.first_event_at == 5.0 and batch.events >= 2
    assert next_batch(c) is None


def test_requeued_batches_newest_first_keep_the_newest_of_each() -> None:
    c = Coalescer()
    c.price("KX-A", {"lastPrice": 0.41}, 1.0, now=0.0)
    c.trade({"tradeId": "t1", "ticker": "KX-A"}, now=0.0)
    first = next_batch(c)
    c.price("KX-A", {"lastPrice": 0.42}, 2.0, now=0.0)
    c.trade({"tradeId": "t2", "ticker": "KX-A"}, now=0.0)
    second = next_batch(c)
    assert first is not None and second is not None
    c.requeue(second)
    c.requeue(first)
    batch = next_batch(c)
    assert batch is not None
    assert batch.args["batch"]["prices"] == [{"ticker": "KX-A", "lastPrice": 0.42, "ts": 2.0}]
    assert [t["tradeId"] for t in batch.args["batch"]["trades"]] == ["t1", "t2"]


def test_a_requeued_batch_does_not_bring_back_a_market_forgotten_meanwhile() -> None:
    """A market removed while its batch was in flight stays removed when the batch comes back:
    only its invalid mark returns; a market re-added later gets what later batches carry."""
    c = Coalescer()
    c.book("KX-A", book("KX-A", [("0.40", "10")], []), 1.0, now=0.0)
    c.book("KX-B", book("KX-B", [("0.30", "1")], []), 1.0, now=0.0)
    c.book_invalid("KX-C", 1.0, now=0.0)
    c.price("KX-A", {"lastPrice": 0.41}, 1.0, now=0.0)
    c.trade({"tradeId": "t1", "ticker": "KX-A"}, now=0.0)
    c.trade({"tradeId": "t2", "ticker": "KX-B"}, now=0.0)
    in_flight = next_batch(c)
    assert in_flight is not None
    c.forget({"KX-A", "KX-C"})
    c.requeue(in_flight)
    batch = next_batch(c)
    assert batch is not None
    body = batch.args["batch"]
    assert sorted(b["ticker"] for b in body["books"]) == ["KX-B", "KX-C"]
    assert "prices" not in body
    assert [t["tradeId"] for t in body["trades"]] == ["t2"]

    # Taken after the forget: KX-A is streamed again and its batch comes back whole.
    c.price("KX-A", {"lastPrice": 0.5}, 2.0, now=1.0)
    later = next_batch(c)
    assert later is not None
    c.requeue(later)
    again = next_batch(c)
    assert again is not None
    assert again.args["batch"]["prices"] == [{"ticker": "KX-A", "lastPrice": 0.5, "ts": 2.0}]


def test_fair_shares_give_what_one_leaves_to_the_others() -> None:
    assert fair_shares(40, (100, 3, 100)) == (19, 3, 18)
    assert fair_shares(40, (5, 5, 5)) == (5, 5, 5)
    assert fair_shares(2, (5, 5, 5)) == (1, 1, 0)
    assert fair_shares(0, (5, 5)) == (0, 0)
    assert fair_shares(40, (0, 0)) == (0, 0)
