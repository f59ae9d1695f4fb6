"""The client core against the simulator's session core, frame for frame (both sans I/O).

Each of the exchange's control flows the client must handle: a ``subscribe`` merged into an
existing subscription (answered ``ok``), ``get_snapshot`` answered by the snapshots alone, and
books that cannot be right (crossed, off the tick, out of range, the other price convention).
"""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from marketpulse.kalshi import InvalidBook, KalshiProtocol, SequenceGap
from marketpulse.simulator import Simulator, SimulatorConfig
from marketpulse.simulator._model import Delta
from marketpulse.simulator._session import Session
from marketpulse.simulator._units import ONE


def pump(p: KalshiProtocol, s: Session, rounds: int = 10) -> list[object]:
    """Move commands and frames both ways until neither side has anything to say."""
    events: list[object] = []
    for _ in range(rounds):
        out = p.data_to_send()
        for cmd in out:
            s.receive_data(cmd)
        frames = s.data_to_send()
        for f in frames:
            p.receive_data(f, 0.0)
        events += p.events_received()
        if not out and not frames:
            break
    return events


@pytest.fixture
def sim() -> Simulator:
    return Simulator(SimulatorConfig(markets=6, seed=5))


def connected(
    sim: Simulator,
    use_yes_price: bool = False,
    tickers: list[str] | None = None,
    channels: tuple[str, ...] = ("orderbook_delta", "trade"),
) -> tuple[KalshiProtocol, Session]:
    tickers = tickers or list(sim.markets)[:4]
    p = KalshiProtocol(tickers, channels, use_yes_price=use_yes_price)
    s = Session(sim)
    p.connection_made(0.0)
    pump(p, s)
    assert all(p.books[t].valid for t in tickers)
    assert p.pending_commands == 0
    return p, s


def equal_to_sim(p: KalshiProtocol, sim: Simulator) -> bool:
    return all(p.books[t].valid and p.books[t].levels() == sim.book_levels(t) for t in p.markets)


def test_second_subscribe_is_merged_and_answered_ok(sim: Simulator) -> None:
    p, s = connected(sim)
    sid = p.sids["orderbook_delta"]
    # A subscribe re-sent on a live channel (e.g. its reply was lost): the exchange merges it.
    p._subscribe(p._subs["orderbook_delta"])
    events = pump(p, s)
    assert p.sids["orderbook_delta"] == sid
    assert p.pending_commands == 0
    assert not [e for e in events if isinstance(e, SequenceGap)]  # the ok took the next seq
    s.send_events(sim.model.generate(300, 1))
    pump(p, s)
    assert equal_to_sim(p, sim) and p.stats.gaps == 0


def test_get_snapshot_answered_by_snapshots_alone_clears_the_command(sim: Simulator) -> None:
    p, s = connected(sim)
    s.faults = sim.faults
    sim.faults.skip_seq(1)
    s.send_events(sim.model.generate(200, 1))
    s.faults = None
    events = pump(p, s)
    assert any(isinstance(e, SequenceGap) for e in events)
    assert p.stats.recoveries[1] == 1
    assert p.recovery_level is None and p.stats.recoveries_completed == 1
    assert p.pending_commands == 0  # no ok came, yet the get_snapshot is not left pending
    assert equal_to_sim(p, sim)


@pytest.mark.parametrize("use_yes_price", [False, True])
@pytest.mark.parametrize("kind", ["crossed", "out_of_range", "off_tick"])
def test_a_book_that_cannot_be_right_is_invalid_then_recovered(
    sim: Simulator, kind: str, use_yes_price: bool
) -> None:
    p, s = connected(sim, use_yes_price)
    t = p.markets[0]
    m = sim.catalog.markets[t]
    from marketpulse.simulator._catalog import STRUCTURES

    p.set_price_grid(
        t,
        tuple(
            (D(a).scaleb(-4), D(b).scaleb(-4), D(c).scaleb(-4))
            for a, b, c in STRUCTURES[m.structure]
        ),
    )
    yes = sim.model.book(t).levels("yes")
    best = yes[-1][0]
    side, price = {
        "crossed": ("no", ONE - best),
        "out_of_range": ("yes", ONE),
        "off_tick": ("yes", best - 1),
    }[kind]
    s.send_events([Delta(t, 1, side, price, 100)])
    p.receive_data(s.data_to_send()[0], 0.0)
    assert not p.books[t].valid
    assert [e.ticker for e in p.events_received() if isinstance(e, InvalidBook)] == [t]
    pump(p, s)  # get_snapshot, answered with the true book
    assert equal_to_sim(p, sim)
    assert p.stats.invalid_books == 1 and p.pending_commands == 0


@pytest.mark.parametrize("subscribed_yes", [False, True])
def test_frames_in_the_other_price_convention_are_caught(
    sim: Simulator, subscribed_yes: bool
) -> None:
    # The fixture's last markets trade below $0.50.
    p, s = connected(sim, subscribed_yes, list(sim.markets)[2:], ("orderbook_delta", "ticker"))
    # The exchange flips the convention under the client: every NO price on the other scale.
    for sub in s.subs.values():
        sub.use_yes_price = not subscribed_yes
    for t in p.markets:
        # a fresh snapshot per market in the other convention; a book whose mid is at or over
        # $0.50 read on the wrong scale is crossed (bid + (1 - ask) >= 1)
        yes = sim.model.book(t).levels("yes")
        no = sim.model.book(t).levels("no")
        mid2 = yes[-1][0] + (ONE - no[-1][0])
        sub = s.subs[p.sids["orderbook_delta"]]
        s._snapshots(sub, [t])
        for f in s.data_to_send():
            p.receive_data(f, 0.0)
        if mid2 >= ONE:
            assert not p.books[t].valid, t
    # Read on the wrong scale, a book whose mid is at or over $0.50 is crossed (and so may be
    # a deeper one). The rest pass for uncrossed books, but the exchange's ticker (best bid and
    # ask on the YES scale, the same in both conventions) gives them away at once.
    invalid = {e.ticker: e.reason for e in p.events_received() if isinstance(e, InvalidBook)}
    assert set(invalid) == set(p.markets)
    assert not any(p.books[t].valid for t in p.markets)
    crossed = {t for t, why in invalid.items() if why.startswith("crossed")}
    other = {t for t, why in invalid.items() if "other price convention" in why}
    assert crossed and other and crossed | other == set(p.markets)
    assert all(sim.model.book(t).levels("yes")[-1][0] < ONE // 2 for t in other)
    # Back to the subscribed convention: every book recovers and matches the exchange's.
    for sub in s.subs.values():
        sub.use_yes_price = subscribed_yes
    for _ in range(5):
        pump(p, s)
    assert equal_to_sim(p, sim)


def test_the_lifecycle_channel_takes_no_market_commands(sim: Simulator) -> None:
    from marketpulse.kalshi import ErrorMessage

    tickers = list(sim.markets)
    p = KalshiProtocol(tickers[:2], ("orderbook_delta", "market_lifecycle_v2"))
    s = Session(sim)
    p.connection_made(0.0)
    events = pump(p, s)
    p.add_markets(tickers[2:4])
    p.remove_markets(tickers[:1])
    events += pump(p, s)
    # The exchange refuses add_markets/delete_markets on it; sending them would loop
    # (refused -> resubscribe -> add again).
    assert not [e for e in events if isinstance(e, ErrorMessage)]
    assert p.pending_commands == 0 and not p.data_to_send()
    assert set(p.sids) == {"orderbook_delta", "market_lifecycle_v2"}
    assert all(p.books[t].valid for t in tickers[1:4])


def test_a_paused_then_resumed_market_reads_active(sim: Simulator) -> None:
    from marketpulse.kalshi import MarketLifecycle

    t = next(iter(sim.markets))
    p, s = connected(sim, tickers=[t], channels=("orderbook_delta", "market_lifecycle_v2"))
    for status in ("inactive", "active"):
        s.send_events(sim.model.set_status(t, status, 1_795_000_000_000))
    events = [e for e in pump(p, s) if isinstance(e, MarketLifecycle)]
    # The resume came as the exchange's pause flag turned off: the market trades again.
    assert [e.status for e in events] == ["inactive", "active"]
