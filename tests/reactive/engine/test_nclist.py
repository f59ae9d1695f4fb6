"""The nested containment list against a brute-force model, under random churn."""

from __future__ import annotations

import random

import pytest

from marketpulse.reactive.engine._nclist import IntervalSet


@pytest.mark.parametrize("seed", range(6))
def test_random_churn_matches_brute_force(seed: int) -> None:
    rnd = random.Random(seed)
    iset: IntervalSet[int] = IntervalSet()
    model: dict[int, set[tuple[bytes, bytes]]] = {}
    span = rnd.choice([8, 30, 200])  # small spans force nesting, overlaps and duplicates
    for step in range(1500):
        op = rnd.random()
        token = rnd.randrange(60)
        if op < 0.55:
            a, b = sorted(rnd.sample(range(span + 1), 2))
            lo, hi = bytes([a]), bytes([b])
            if rnd.random() < 0.2:
                hi = lo + b"\x00"  # a point interval
            iset.add(lo, hi, token)
            model.setdefault(token, set()).add((lo, hi))
        elif model.get(token):
            lo, hi = rnd.choice(sorted(model[token]))
            iset.remove(lo, hi, token)
            model[token].discard((lo, hi))
        if step % 25 == 0:
            iset.check()
            for k in range(span + 2):
                for key in (bytes([k]), bytes([k]) + b"\x00", bytes([k, 7])):
                    expected = {
                        t for t, ivs in model.items() if any(lo <= key < hi for lo, hi in ivs)
                    }
                    assert set(iset.stab(key)) == expected, (seed, step, key)
    for token, ivs in model.items():
        for lo, hi in ivs:
            iset.remove(lo, hi, token)
    iset.check()
    assert len(iset) == 0 and list(iset.stab(b"\x01")) == []


def test_nested_chain_and_empty_interval() -> None:
    iset: IntervalSet[str] = IntervalSet()
    for i in range(50):
        iset.add(bytes([i]), bytes([200 - i]), f"t{i}")
    iset.add(b"b", b"b", "empty")
    iset.check()
    assert set(iset.stab(bytes([10]))) == {f"t{i}" for i in range(11)}
    iset.remove(bytes([0]), bytes([200]), "t0")
    iset.check()
    assert "t0" not in set(iset.stab(bytes([100])))
    assert len(set(iset.stab(bytes([100])))) == 49
