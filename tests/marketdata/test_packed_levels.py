"""Packed order book levels."""

from __future__ import annotations

import math
import struct
from decimal import Decimal

from marketpulse.marketdata.packed_levels import (
    check_packed,
    level_count,
    pack_decimal_levels,
    pack_levels,
    unpack_levels,
)


def test_round_trip_and_depth() -> None:
    levels = [[0.55, 10.0], [0.54, 3], (0.5, 1.5)]
    packed = pack_levels(levels)
    assert packed is not None and level_count(packed) == 3
    assert unpack_levels(packed) == [[0.55, 10.0], [0.54, 3.0], [0.5, 1.5]]
    assert unpack_levels(packed, 2) == [[0.55, 10.0], [0.54, 3.0]]
    assert unpack_levels(packed, 200) == unpack_levels(packed)
    assert pack_levels([]) == b"" and unpack_levels(b"", 10) == []


def test_refuses_anything_but_pairs_of_finite_numbers() -> None:
    for bad in (
        [[0.5]],
        [[0.5, 1, 2]],
        [[0.5, "1"]],
        [[0.5, True]],
        [[float("inf"), 1]],
        [{"p": 1}],
        ["ab"],
    ):
        assert pack_levels(bad) is None, bad


def test_the_worker_packs_its_exact_book_as_the_store_would() -> None:
    """``pack_decimal_levels`` (the worker's Decimal levels) gives the bytes ``pack_levels`` gives for
    the same levels as floats, and the store's check accepts them."""
    exact = [(Decimal("0.4567"), Decimal("12.34")), (Decimal("0.01"), Decimal("100"))]
    packed = pack_decimal_levels(exact)
    assert packed == pack_levels([[0.4567, 12.34], [0.01, 100.0]])
    assert check_packed(packed) is None and pack_decimal_levels([]) == b""


def test_check_packed_names_what_is_wrong() -> None:
    assert check_packed(b"\x00" * 8) == "8 bytes is not a whole number of 16-byte levels"
    for bad in (math.inf, -math.inf, math.nan):
        assert (
            check_packed(struct.pack("<2d", 0.5, bad)) == "a price or size is not a finite number"
        )
