"""Packed order book levels."""

from __future__ import annotations

from marketpulse.marketdata._levels import level_count, pack_levels, unpack_levels


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
