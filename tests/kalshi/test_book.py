"""OrderBook: YES asks from NO bids, use_yes_price, zero/negative sizes, and a property test."""

from __future__ import annotations

import contextlib
from decimal import Decimal as D

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marketpulse.kalshi import BookError, OrderBook


def test_snapshot_bids_asks_spread_mid_depth() -> None:
    b = OrderBook("FED-23DEC-T3.00")
    assert not b.valid and b.best_bid is None and b.mid is None
    b.apply_snapshot(
        [(D("0.0800"), D("300.00")), (D("0.2200"), D("333.00"))],
        [(D("0.5400"), D("20.00")), (D("0.5600"), D("146.00"))],
    )
    assert b.valid
    assert b.bids() == [(D("0.2200"), D("333.00")), (D("0.0800"), D("300.00"))]
    # NO bid 0.56 is a YES ask at 0.44: the best ask comes from the best NO bid.
    assert b.asks() == [(D("0.4400"), D("146.00")), (D("0.4600"), D("20.00"))]
    assert b.best_bid == D("0.22") and b.best_ask == D("0.44")
    assert b.spread == D("0.22") and b.mid == D("0.33")
    assert b.best_bid_size == D("333") and b.best_ask_size == D("146")
    assert b.depth(1) == ([(D("0.2200"), D("333.00"))], [(D("0.4400"), D("146.00"))])
    assert b.levels() == {
        "yes": [(D("0.0800"), D("300.00")), (D("0.2200"), D("333.00"))],
        "no": [(D("0.5400"), D("20.00")), (D("0.5600"), D("146.00"))],
    }


def test_subpenny_and_normalised_keys() -> None:
    b = OrderBook("KXGREENLAND-29")
    b.apply_snapshot([(D("0.0050"), D("10"))], [(D("0.0075"), D("4.50"))])
    b.apply_delta("yes", D("0.005"), D("1.25"))  # same price, other spelling
    assert b.bids() == [(D("0.0050"), D("11.25"))]
    assert b.best_ask == D("0.9925")
    b.apply_delta("no", D("0.9925"), D("2"))  # NO bid 0.9925 = YES ask 0.0075, now the best
    assert b.asks() == [(D("0.0075"), D("2")), (D("0.9925"), D("4.50"))]


def test_use_yes_price_keeps_native_levels() -> None:
    native, yes_scale = OrderBook("A"), OrderBook("A")
    native.apply_snapshot([(D("0.40"), D("1"))], [(D("0.55"), D("7"))])
    yes_scale.apply_snapshot([(D("0.40"), D("1"))], [(D("0.45"), D("7"))], yes_price=True)
    native.apply_delta("no", D("0.58"), D("3"))
    yes_scale.apply_delta("no", D("0.42"), D("3"), yes_price=True)
    assert native.levels() == yes_scale.levels()
    assert yes_scale.best_ask == D("0.42")


def test_zero_removes_level_negative_invalidates() -> None:
    b = OrderBook("A")
    b.apply_snapshot([(D("0.40"), D("5")), (D("0.30"), D("0"))], [])
    assert b.bids() == [(D("0.40"), D("5"))]  # zero-size snapshot levels are not kept
    b.apply_delta("yes", D("0.40"), D("-5"))
    assert b.bids() == [] and b.valid
    with pytest.raises(BookError):
        b.apply_delta("yes", D("0.40"), D("-1"))
    assert not b.valid and b.invalid_reason == "negative size" and len(b) == 0
    with pytest.raises(BookError):
        b.apply_snapshot([(D("0.1"), D("-1"))], [])
    assert not b.valid
    with pytest.raises(BookError):
        b.apply_delta("maybe", D("0.1"), D("1"))


# -- property test -------------------------------------------------------------------------------

PRICES = st.integers(min_value=1, max_value=9999).map(lambda i: D(i).scaleb(-4))
SIZES = st.integers(min_value=0, max_value=500_00).map(lambda i: D(i).scaleb(-2))
DELTAS = st.integers(min_value=-300_00, max_value=300_00).map(lambda i: D(i).scaleb(-2))
SIDES = st.sampled_from(["yes", "no"])
LEVELS = st.lists(st.tuples(PRICES, SIZES), max_size=8)
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("snap"), LEVELS, LEVELS),
        st.tuples(st.just("delta"), SIDES, PRICES, DELTAS),
        # Concentrate deltas on few prices so levels grow, shrink to zero and go negative.
        st.tuples(st.just("delta"), SIDES, st.sampled_from([D("0.5"), D("0.0050")]), DELTAS),
    ),
    max_size=60,
)


class ReferenceBook:
    """The plainest possible model: lists of (native price, size), recomputed from scratch."""

    def __init__(self) -> None:
        self.valid = False
        self.yes: list[tuple[D, D]] = []
        self.no: list[tuple[D, D]] = []

    @staticmethod
    def _native(side: str, price: D, yes_price: bool) -> D:
        return 1 - price if side == "no" and yes_price else price

    def snap(self, yes: list[tuple[D, D]], no: list[tuple[D, D]], yes_price: bool) -> None:
        if any(s < 0 for _, s in yes + no):
            self.valid, self.yes, self.no = False, [], []
            return
        self.yes = self._merge([(p, s) for p, s in yes])
        self.no = self._merge([(self._native("no", p, yes_price), s) for p, s in no])
        self.valid = True

    @staticmethod
    def _merge(levels: list[tuple[D, D]]) -> list[tuple[D, D]]:
        out: list[tuple[D, D]] = []
        for p in sorted({p for p, _ in levels}):
            total = sum((s for q, s in levels if q == p), D(0))
            if total != 0:
                out.append((p, total))
        return out

    def delta(self, side: str, price: D, delta: D, yes_price: bool) -> None:
        if not self.valid:
            return  # the core drops deltas for an invalid book
        p = self._native(side, price, yes_price)
        levels = self.yes if side == "yes" else self.no
        current = sum((s for q, s in levels if q == p), D(0))
        new = current + delta
        if new < 0:
            self.valid, self.yes, self.no = False, [], []
            return
        rest = [(q, s) for q, s in levels if q != p]
        if new > 0:
            rest.append((p, new))
        rest.sort()
        if side == "yes":
            self.yes = rest
        else:
            self.no = rest


@settings(max_examples=300, deadline=None)
@given(ops=OPS, yes_price=st.booleans())
def test_book_equals_reference_model(ops: list[tuple], yes_price: bool) -> None:  # type: ignore[type-arg]
    book, ref = OrderBook("T"), ReferenceBook()
    for op in ops:
        if op[0] == "snap":
            _, yes, no = op
            with contextlib.suppress(BookError):
                book.apply_snapshot(yes, no, yes_price=yes_price)
            ref.snap(yes, no, yes_price)
        else:
            _, side, price, delta = op
            if book.valid:
                with contextlib.suppress(BookError):
                    book.apply_delta(side, price, delta, yes_price=yes_price)
            ref.delta(side, price, delta, yes_price)
        assert book.valid == ref.valid
        assert book.levels() == {"yes": ref.yes, "no": ref.no}
        assert book.bids() == sorted(ref.yes, reverse=True)
        assert book.asks() == [(1 - p, s) for p, s in sorted(ref.no, reverse=True)]
        best_bid = max((p for p, _ in ref.yes), default=None)
        best_ask = 1 - max(p for p, _ in ref.no) if ref.no else None
        assert book.best_bid == best_bid and book.best_ask == best_ask
        if best_bid is not None and best_ask is not None:
            assert book.spread == best_ask - best_bid
            assert book.mid == (best_bid + best_ask) / 2
        else:
            assert book.spread is None and book.mid is None


def test_apply_delta_says_when_it_opens_a_level_and_the_cached_bests_follow_removals() -> None:
    book = OrderBook("T")
    book.apply_snapshot([(D("0.40"), D(5)), (D("0.45"), D(1))], [(D("0.50"), D(2))])
    assert book.best_bid == D("0.45") and book.best_ask == D("0.50")
    assert book.apply_delta("yes", D("0.45"), D(3)) is False  # a level that grows
    assert book.apply_delta("yes", D("0.47"), D(1)) is True  # a new best
    assert book.best_bid == D("0.47") and book.best_bid_size == D(1)
    assert book.apply_delta("yes", D("0.47"), D(-1)) is False  # the best leaves
    assert book.best_bid == D("0.45") and book.best_bid_size == D(4)
    assert not book.crossed_by("no", D("0.54"))  # against 0.45 now, not the 0.47 that left
    assert book.crossed_by("no", D("0.55"))  # locked: YES bid 0.45 = YES ask 0.45
    assert book.apply_delta("no", D("0.50"), D(-2)) is False  # the NO side empties
    assert book.best_ask is None and not book.crossed_by("yes", D("0.99"))
    assert book.apply_delta("no", D("0.30"), D(1), yes_price=True) is True  # NO bid 0.70
    assert book.best_ask == D("0.30") and book.problem() == "crossed book: bid 0.45 >= ask 0.30"
