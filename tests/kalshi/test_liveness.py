"""The connection's liveness rules, driven through the sans-I/O core with explicit ``now``."""

from __future__ import annotations

import orjson

from marketpulse.kalshi import KalshiProtocol
from marketpulse.kalshi._liveness import Liveness


def _connected(liveness: Liveness) -> KalshiProtocol:
    p = KalshiProtocol(["KX-A"], ["ticker"], liveness=liveness)
    p.connection_made(0.0)
    p.data_to_send()
    return p


def _ticker(p: KalshiProtocol, now: float) -> None:
    frame = {"type": "ticker", "sid": 1, "msg": {"market_ticker": "KX-A", "price": 50}}
    p.receive_data(orjson.dumps(frame), now)


def test_a_late_pong_closes_the_connection() -> None:
    p = _connected(Liveness(ping_interval=1.0, pong_timeout=2.0))
    assert not p.ping_due(0.5)
    assert p.ping_due(1.0)
    assert not p.ping_due(1.5)  # one ping in flight at a time
    p.pong_received(1.01)
    p.tick(1.5)
    assert not p.close_expected()
    assert p.ping_due(2.0)
    p.tick(3.9)
    assert not p.close_expected()
    p.tick(4.01)
    assert p.close_expected()
    assert p.close_reason == "no pong within 2s"


def test_a_new_connection_forgets_the_missing_pong() -> None:
    p = _connected(Liveness(ping_interval=1.0, pong_timeout=2.0))
    assert p.ping_due(1.0)
    p.connection_lost()
    p.connection_made(2.0)
    p.tick(3.5)
    assert not p.close_expected()


def test_a_busy_subscription_gone_silent_is_noticed_in_seconds() -> None:
    p = _connected(Liveness(ping_interval=None, min_silence=3.0, silence_factor=10.0))
    for i in range(50):  # ten messages a second
        _ticker(p, i * 0.1)
    p.tick(4.8 + 2.9)  # within min_silence of the last message
    assert not p.close_expected()
    p.tick(4.9 + 3.01)
    assert p.close_expected()
    assert p.close_reason is not None and p.close_reason.startswith("ticker silent for")


def test_a_quiet_subscription_is_held_to_its_own_rate() -> None:
    p = _connected(Liveness(ping_interval=None, min_silence=3.0, silence_factor=10.0))
    for i in range(30):  # one message every 2 s
        _ticker(p, i * 2.0)
    p.tick(58.0 + 19.0)  # under ten usual gaps
    assert not p.close_expected()
    p.tick(58.0 + 20.5)
    assert p.close_expected()


def test_silence_needs_enough_samples() -> None:
    p = _connected(Liveness(ping_interval=None, min_samples=20))
    for i in range(5):
        _ticker(p, i * 0.1)
    p.tick(100.0)
    assert not p.close_expected()


def test_a_burst_of_snapshots_is_not_a_stream_that_stops() -> None:
    # Snapshots arrive once per market at subscribe time; the quiet after them is normal.
    liveness = Liveness(ping_interval=None, min_silence=3.0, min_samples=20)
    liveness.reset(0.0)
    for i in range(200):
        liveness.frame("orderbook_snapshot", i * 0.0001)
    assert liveness.dead(60.0) is None
