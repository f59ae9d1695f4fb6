"""Checking of write batches: typed results and errors naming the bad field."""

from __future__ import annotations

import math
import struct
from decimal import Decimal

import pytest

from marketpulse.marketdata._batch import (
    BatchError,
    parse_batch,
    parse_markets,
    parse_stream_status,
    refused_entries,
)
from marketpulse.marketdata.packed_levels import pack_decimal_levels, pack_levels, unpack_levels
from marketpulse.reactive import Int64


def test_parse_full_batch() -> None:
    parsed = parse_batch(
        {
            "prices": [{"ticker": "A", "price": 0.5, "yesBid": 1, "ts": 10}],
            "books": [
                {"ticker": "A", "bids": [[0.4, 10]], "asks": [(0.6, 5.5)], "ts": 11, "valid": True},
                {"ticker": "B", "ts": 12, "valid": False},
            ],
            "trades": [
                {
                    "id": "t1",
                    "ticker": "A",
                    "side": "sell",
                    "price": 0.45,
                    "size": 3,
                    "timestamp": 9,
                }
            ],
            "markets": [{"ticker": "A", "status": "closed"}],
        }
    )
    assert parsed.prices[0].yes_bid == 1.0 and parsed.prices[0].yes_ask is None
    assert unpack_levels(parsed.books[0].asks) == [[0.6, 5.5]]
    assert unpack_levels(parsed.books[0].bids) == [[0.4, 10.0]]
    assert parsed.books[1].valid is False and parsed.books[1].bids == b""
    assert parsed.trades[0].side == "sell" and parsed.trades[0].size == 3.0
    assert parsed.markets[0].status == "closed"


def test_int64_levels_are_converted() -> None:
    [book] = parse_batch({"books": [{"ticker": "A", "ts": 1, "bids": [[0.5, Int64(7)]]}]}).books
    assert unpack_levels(book.bids) == [[0.5, 7.0]]


def test_packed_levels_are_taken_as_they_come() -> None:
    """The worker sends each side packed (bytes); the store keeps them as they are."""
    bids = pack_decimal_levels(
        [(Decimal("0.45"), Decimal("10")), (Decimal("0.44"), Decimal("2.5"))]
    )
    [book] = parse_batch({"books": [{"ticker": "A", "ts": 1, "bids": bids, "asks": b""}]}).books
    assert book.bids is bids and book.asks == b""
    assert unpack_levels(book.bids) == [[0.45, 10.0], [0.44, 2.5]]


def test_empty_batch_is_fine() -> None:
    parsed = parse_batch({})
    assert (parsed.prices, parsed.books, parsed.trades, parsed.markets) == ([], [], [], [])


@pytest.mark.parametrize(
    ("batch", "message"),
    [
        ([], "batch: expected an object"),
        ({"ticks": []}, "unknown keys ['ticks']"),
        ({"prices": [{"ticker": "A"}]}, "prices[0].ts: expected a number, got NoneType"),
        ({"prices": [{"ticker": "A", "ts": "10"}]}, "prices[0].ts: expected a number, got str"),
        ({"prices": [{"ticker": "A", "ts": True}]}, "prices[0].ts: expected a number, got bool"),
        ({"prices": [{"ticker": "", "ts": 1}]}, "prices[0].ticker"),
        (
            {"books": [{"ticker": "A", "ts": 1, "bids": [[0.5]]}]},
            "books[0].bids[0]: expected [price, size]",
        ),
        ({"books": [{"ticker": "A", "ts": 1, "bids": [[0.5, "x"]]}]}, "books[0].bids[0][1]"),
        ({"books": [{"ticker": "A", "ts": 1, "bids": [[0.5, 1]] * 201}]}, "at most 200 levels"),
        (
            {"books": [{"ticker": "A", "ts": 1, "bids": pack_levels([[0.5, 1]] * 201)}]},
            "books[0].bids: at most 200 levels, got 201",
        ),
        (
            {"books": [{"ticker": "A", "ts": 1, "bids": b"\x00" * 24}]},
            "books[0].bids: 24 bytes is not a whole number of 16-byte levels",
        ),
        (
            {"books": [{"ticker": "A", "ts": 1, "asks": struct.pack("<2d", 0.5, math.nan)}]},
            "books[0].asks: a price or size is not a finite number",
        ),
        ({"books": [{"ticker": "A", "ts": 1, "valid": "yes"}]}, "books[0].valid"),
        (
            {
                "trades": [
                    {"id": "t", "ticker": "A", "side": "yes", "price": 1, "size": 1, "timestamp": 1}
                ]
            },
            "side",
        ),
        (
            {
                "trades": [
                    {
                        "id": "t",
                        "ticker": "A",
                        "side": "buy",
                        "price": 1,
                        "size": -1,
                        "timestamp": 1,
                    }
                ]
            },
            "size",
        ),
        (
            {
                "trades": [
                    {
                        "id": "t",
                        "ticker": "A",
                        "side": "buy",
                        "price": float("nan"),
                        "size": 1,
                        "timestamp": 1,
                    }
                ]
            },
            "finite",
        ),
        ({"markets": [{"ticker": "A"}]}, "markets[0].status"),
    ],
)
def test_bad_batches_name_the_field(batch: object, message: str) -> None:
    with pytest.raises(BatchError) as info:
        parse_batch(batch)
    assert message in str(info.value)


def test_parse_markets_keeps_only_sent_keys() -> None:
    [info] = parse_markets([{"ticker": "A", "title": "Will A?", "previousPrice": 0.4}])
    assert info.fields == {"title": "Will A?", "previousPrice": 0.4}
    with pytest.raises(BatchError, match=r"markets\[0\].closeTime"):
        parse_markets([{"ticker": "A", "closeTime": "tomorrow"}])


def test_parse_stream_status() -> None:
    status = parse_stream_status(
        {
            "streamId": "s1",
            "state": "connected",
            "markets": ["A", "B"],
            "messagesPerSecond": 12.5,
            "updatedAt": 5,
        }
    )
    assert status.stream_id == "s1" and status.updated_at == 5.0
    assert status.fields["markets"] == ["A", "B"] and status.fields["gaps"] is None
    with pytest.raises(BatchError, match=r"status\.state"):
        parse_stream_status({"streamId": "s1", "updatedAt": 5})


def test_refused_entries_names_each_bad_entry_and_only_those() -> None:
    trade = {"id": "t", "ticker": "A", "side": "buy", "price": 0.5, "size": 1.0, "timestamp": 1.0}
    batch = {
        "prices": [{"ticker": "A", "ts": 1.0, "yesBid": 0.4}, {"ticker": "", "ts": 1.0}],
        "trades": [trade, {**trade, "size": -1.0}, {**trade, "id": ""}],
        "streamId": "s",
    }
    refused = refused_entries(batch)
    assert set(refused) == {"prices", "trades"}
    assert set(refused["prices"]) == {1} and set(refused["trades"]) == {1, 2}
    assert "size" in refused["trades"][1]
    # What is left passes the whole batch's check.
    parse_batch({"prices": batch["prices"][:1], "trades": [trade], "streamId": "s"})
    # A batch refused for its own fields names no entry: the writer then drops it whole.
    assert refused_entries({"prices": [], "leaseMs": 1.0}) == {}
    assert refused_entries("nope") == {}
