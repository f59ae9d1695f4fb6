"""The subscription index: point stabbing over per-index interval trees."""

from __future__ import annotations

import random

from marketpulse.reactive.engine._intervals import SubscriptionIndex
from marketpulse.reactive.engine._readset import ReadSet


def rs(*intervals: tuple[str, str, bytes, bytes]) -> ReadSet:
    r = ReadSet()
    for table, index, lo, hi in intervals:
        r.add(table, index, lo, hi)
    return r


def test_find_matches_brute_force() -> None:
    rnd = random.Random(7)
    idx: SubscriptionIndex[int] = SubscriptionIndex()
    sets: dict[int, ReadSet] = {}
    for token in range(300):
        items = []
        for _ in range(rnd.randint(1, 3)):
            lo = bytes([rnd.randint(0, 50)])
            hi = bytes([rnd.randint(0, 60)]) + b"\x00"
            items.append((rnd.choice("tu"), rnd.choice(["i", "j"]), lo, hi))
        sets[token] = rs(*items)
        idx.add(token, sets[token])
    for token in range(0, 300, 3):  # some unsubscribe, some re-register
        idx.remove(token)
        del sets[token]
    for token in range(1, 300, 5):
        sets[token] = rs(("t", "i", b"\x10", b"\x20"))
        idx.add(token, sets[token])
    assert len(idx) == len(sets)
    for _ in range(300):
        table, index, key = rnd.choice("tu"), rnd.choice("ij"), bytes([rnd.randint(0, 62)])
        expected = {t for t, r in sets.items() if r.contains(table, index, key)}
        assert idx.find([(table, index, key)]) == expected


def test_shared_interval_and_half_open_bounds() -> None:
    idx: SubscriptionIndex[str] = SubscriptionIndex()
    idx.add("a", rs(("t", "i", b"b", b"d")))
    idx.add("b", rs(("t", "i", b"b", b"d")))
    assert idx.find([("t", "i", b"b")]) == {"a", "b"}
    assert idx.find([("t", "i", b"d")]) == set()
    assert idx.find([("t", "j", b"c")]) == set()
    idx.remove("a")
    assert idx.find([("t", "i", b"c")]) == {"b"}
    idx.remove("b")
    idx.remove("b")
    assert idx.find([("t", "i", b"c")]) == set()
