"""The sans-I/O session: commands and model events in, Kalshi frames out (no sockets)."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from marketpulse.kalshi import ERROR_TEXTS
from marketpulse.simulator import FaultSettings, Simulator
from marketpulse.simulator._faults import Faults
from marketpulse.simulator._session import Session

from .conftest import make_config


def frames(session: Session) -> list[dict[str, Any]]:
    return [json.loads(f) for f in session.data_to_send()]


def cmd(session: Session, **body: Any) -> list[dict[str, Any]]:
    session.receive_data(json.dumps(body))
    return frames(session)


def test_lifecycle_channel_gets_status_changes_with_seq(key_dir: Path) -> None:
    sim = Simulator(make_config(key_dir))
    s = Session(sim)
    t = next(iter(sim.markets))
    # a market filter is ignored on market_lifecycle_v2: it always covers every market
    out = cmd(
        s, id=1, cmd="subscribe", params={"channels": ["market_lifecycle_v2"], "market_ticker": t}
    )
    assert out == [
        {"id": 1, "type": "subscribed", "msg": {"channel": "market_lifecycle_v2", "sid": 1}}
    ]
    other = list(sim.markets)[1]
    events = sim.model.set_status(other, "inactive", 1_795_000_000_000)
    events += sim.model.set_status(other, "active", 1_795_000_000_001)
    events += sim.model.set_status(t, "determined", 1_795_000_000_002)
    s.send_events(events)
    out = frames(s)
    assert [(f["type"], f["seq"], f["msg"]["event_type"]) for f in out] == [
        ("market_lifecycle_v2", 1, "deactivated"),
        ("market_lifecycle_v2", 2, "deactivated"),
        ("market_lifecycle_v2", 3, "determined"),
    ]
    assert out[0]["msg"]["is_deactivated"] is True and out[1]["msg"]["is_deactivated"] is False
    assert out[2]["msg"]["market_ticker"] == t and out[2]["msg"]["result"] in ("yes", "no")
    # a determined market no longer trades
    assert t not in sim.model._active


def test_legacy_mode_adds_integer_fields(key_dir: Path) -> None:
    sim = Simulator(make_config(key_dir, legacy=True))
    s = Session(sim, legacy=True)
    tickers = list(sim.markets)
    out = cmd(
        s,
        id=1,
        cmd="subscribe",
        params={"channels": ["orderbook_delta", "trade", "ticker"], "market_tickers": tickers},
    )
    snap = next(f for f in out if f["type"] == "orderbook_snapshot")["msg"]
    assert all(isinstance(p, int) and isinstance(n, int) for p, n in snap["yes"])
    assert snap["yes_dollars"][0][0] == snap["yes_dollars_fp"][0][0]
    s.send_events(sim.model.generate(3000, 1_795_000_000_000))
    got = {f["type"]: f["msg"] for f in frames(s)}
    assert isinstance(got["orderbook_delta"]["price"], int) and "delta" in got["orderbook_delta"]
    assert isinstance(got["trade"]["yes_price"], int) and isinstance(got["trade"]["count"], int)
    assert isinstance(got["ticker"]["yes_bid"], int) and isinstance(got["ticker"]["volume"], int)
    # the current shape has none of them
    plain = Session(sim)
    out = cmd(plain, id=1, cmd="subscribe", params={"channels": ["trade"]})
    plain.send_events(sim.model.generate(3000, 1_795_000_000_000))
    trade = next(f for f in frames(plain) if f["type"] == "trade")["msg"]
    assert "yes_price" not in trade and "count" not in trade


def test_ticker_channel_flags(key_dir: Path) -> None:
    sim = Simulator(make_config(key_dir))
    s = Session(sim)
    a, b, c = list(sim.markets)[:3]
    out = cmd(
        s,
        cmd="subscribe",
        id=0,
        params={"channels": ["ticker"], "market_tickers": [a], "skip_ticker_ack": True},
    )
    assert out == [{"type": "subscribed", "msg": {"channel": "ticker", "sid": 1}}]  # id 0 = no id
    out = cmd(
        s,
        id=2,
        cmd="update_subscription",
        params={
            "sid": 1,
            "action": "add_markets",
            "market_tickers": [b],
            "send_initial_snapshot": True,
        },
    )
    assert out[0] == {"id": 2, "sid": 1, "seq": 1, "type": "ok"}  # skip_ticker_ack: no list
    assert out[1]["type"] == "ticker" and out[1]["msg"]["market_ticker"] == b
    # market ids work on the ticker channel
    mid = sim.markets[c].market_id
    out = cmd(
        s,
        id=3,
        cmd="subscribe",
        params={"channels": ["ticker"], "market_ids": [mid], "send_initial_snapshot": True},
    )
    assert out[1]["msg"]["market_ticker"] == c and out[1]["msg"]["market_id"] == mid
    out = cmd(
        s, id=4, cmd="subscribe", params={"channels": ["orderbook_delta"], "market_ids": [mid]}
    )
    assert out[0]["msg"]["code"] == 11


def test_fault_hooks_skip_and_duplicate_sequenced_frames(key_dir: Path) -> None:
    sim = Simulator(make_config(key_dir))
    faults = Faults()
    s = Session(sim, faults=faults)
    cmd(
        s,
        id=1,
        cmd="subscribe",
        params={"channels": ["orderbook_delta"], "market_tickers": list(sim.markets)},
    )
    faults.skip_seq(2)
    faults.duplicate(1)
    s.send_events(sim.model.generate(200, 1_795_000_000_000))
    seqs = [f["seq"] for f in frames(s)]
    assert seqs[:3] == [len(sim.markets) + 3, len(sim.markets) + 3, len(sim.markets) + 4]
    assert faults.counters["skipped"] == 2 and faults.counters["duplicated"] == 1


def test_random_fault_rate_is_seeded_and_counted(key_dir: Path) -> None:
    import random

    def run() -> list[int]:
        sim = Simulator(make_config(key_dir))
        faults = Faults(FaultSettings(fault_rate=0.05), random.Random(9))
        s = Session(sim, faults=faults)
        cmd(
            s,
            id=1,
            cmd="subscribe",
            params={"channels": ["orderbook_delta"], "market_tickers": list(sim.markets)},
        )
        s.send_events(sim.model.generate(5000, 1_795_000_000_000))
        seqs = [f["seq"] for f in frames(s) if f["type"] == "orderbook_delta"]
        assert faults.counters["skipped"] > 10 and faults.counters["duplicated"] > 10
        return seqs

    assert run() == run()


def test_overflow_drops_the_subscription_with_error_25(key_dir: Path) -> None:
    sim = Simulator(make_config(key_dir))
    s = Session(sim)
    cmd(s, id=1, cmd="subscribe", params={"channels": ["trade"]})
    s.send_events(sim.model.generate(100, 1_795_000_000_000))
    last = [f for f in frames(s) if f["type"] == "trade"][-1]["seq"]
    s.buffer_overflowed()  # its one subscription, sid 1
    assert frames(s) == [
        {
            "type": "error",
            "sid": 1,
            "seq": last + 1,
            "msg": {"code": 25, "msg": "Subscription buffer overflow"},
        }
    ]
    assert s.subs == {}
    s.send_events(sim.model.generate(100, 1_795_000_000_000))
    assert frames(s) == []


def test_binary_garbage_and_unicode_are_clean_errors(key_dir: Path) -> None:
    sim = Simulator(make_config(key_dir))
    s = Session(sim)
    s.receive_data(b"\xff\xfe\x00")
    s.receive_data("{}")
    s.receive_data('{"id": true, "cmd": "list_subscriptions"}')
    s.receive_data(
        '{"id": 5, "cmd": "subscribe", "params": {"channels": ["ticker"], "market_tickers": "X"}}'
    )
    codes = [f["msg"]["code"] for f in frames(s)]
    assert codes == [1, 5, 1, 11]


def test_use_yes_price_deltas_are_on_the_yes_scale(key_dir: Path) -> None:
    from decimal import Decimal

    sim = Simulator(make_config(key_dir))
    native, yes = Session(sim), Session(sim)
    params = {"channels": ["orderbook_delta"], "market_tickers": list(sim.markets)}
    cmd(native, id=1, cmd="subscribe", params=params)
    cmd(yes, id=1, cmd="subscribe", params={**params, "use_yes_price": True})
    events = sim.model.generate(2000, 1_795_000_000_000)
    native.send_events(events)
    yes.send_events(events)
    pairs = list(zip(frames(native), frames(yes), strict=True))
    no_side = [(a["msg"], b["msg"]) for a, b in pairs if a["msg"]["side"] == "no"]
    assert no_side
    for a, b in no_side:
        assert Decimal(b["price_dollars"]) == 1 - Decimal(a["price_dollars"])
        assert a["delta_fp"] == b["delta_fp"] and b["side"] == "no"
    for a, b in pairs:
        if a["msg"]["side"] == "yes":
            assert a["msg"] == b["msg"]


def test_market_limit_per_subscription_is_error_26(key_dir: Path) -> None:
    sim = Simulator(make_config(key_dir))
    s = Session(sim, max_markets_per_subscription=2)
    a, b, c = list(sim.markets)[:3]
    out = cmd(
        s,
        id=1,
        cmd="subscribe",
        params={"channels": ["orderbook_delta"], "market_tickers": [a, b, c]},
    )
    assert out[0]["msg"]["code"] == 26
    out = cmd(
        s, id=2, cmd="subscribe", params={"channels": ["orderbook_delta"], "market_tickers": [a, b]}
    )
    assert out[0]["type"] == "subscribed"
    out = cmd(
        s,
        id=3,
        cmd="update_subscription",
        params={"sid": 1, "action": "add_markets", "market_tickers": [c]},
    )
    assert out == [
        {
            "id": 3,
            "type": "error",
            "sid": 1,
            "seq": 3,
            "msg": {"code": 26, "msg": "Subscription market limit exceeded"},
        }
    ]


def test_reorder_fault_swaps_two_frames(key_dir: Path) -> None:
    sim = Simulator(make_config(key_dir))
    faults = Faults()
    s = Session(sim, faults=faults)
    cmd(s, id=1, cmd="subscribe", params={"channels": ["trade"]})
    faults.reorder()
    s.send_events(sim.model.generate(2000, 1_795_000_000_000))
    seqs = [f["seq"] for f in frames(s)]
    assert seqs[:3] == [2, 1, 3]
    assert sorted(seqs) == list(range(1, len(seqs) + 1))
    assert faults.counters["reordered"] == 1


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.sampled_from(["", "x", "ticker", "sid"]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
_commands = st.fixed_dictionaries(
    {
        "cmd": st.sampled_from(
            ["subscribe", "unsubscribe", "update_subscription", "list_subscriptions", "nope"]
        )
    },
    optional={
        "id": st.integers(-1, 5) | st.text(max_size=2),
        "params": st.fixed_dictionaries(
            {},
            optional={
                "channels": st.lists(
                    st.sampled_from(
                        [
                            "orderbook_delta",
                            "ticker",
                            "trade",
                            "fill",
                            "market_lifecycle_v2",
                            "bogus",
                        ]
                    ),
                    max_size=3,
                )
                | _json,
                "market_tickers": st.lists(st.sampled_from(["A", "B", "NOPE"]), max_size=3) | _json,
                "market_ticker": st.sampled_from(["A", "NOPE"]) | _json,
                "sids": st.lists(st.integers(0, 4), max_size=3) | _json,
                "sid": st.integers(0, 4) | _json,
                "action": st.sampled_from(["add_markets", "delete_markets", "get_snapshot", "x"])
                | _json,
                "use_yes_price": _json,
                "send_initial_snapshot": _json,
            },
        )
        | _json,
    },
)


@settings(max_examples=300, deadline=None)
@given(cmds=st.lists(_commands, min_size=1, max_size=8))
@example(cmds=[{"cmd": "update_subscription", "params": {"action": [None], "sid": 0}}]).via(
    "found by hypothesis: a non-string action crashed the session"
)
@example(cmds=[{"cmd": "subscribe", "params": {"channels": ["ticker"], "market_ids": [[]]}}]).via(
    "an unhashable market id"
)
def test_any_command_sequence_gets_well_formed_answers(cmds: list[dict[str, Any]]) -> None:
    sim = _fuzz_sim()
    a, b = list(sim.markets)[:2]
    s = Session(sim)
    for c in cmds:
        text = json.dumps(c).replace('"A"', f'"{a}"').replace('"B"', f'"{b}"')
        s.receive_data(text)
        assert s.internal_errors == 0, c  # answered by design, not by the safety net
        out = frames(s)  # every frame is valid JSON
        assert out, c  # every command is answered
        for f in out:
            assert f["type"] in (
                "subscribed",
                "unsubscribed",
                "ok",
                "error",
                "orderbook_snapshot",
                "ticker",
            )
            if f["type"] == "error":
                # Worded as the exchange's: its code's published text, no detail added.
                assert f["msg"]["msg"] == ERROR_TEXTS[f["msg"]["code"]], f
                assert set(f["msg"]) <= {"code", "msg", "market_ticker", "market_tickers"}, f
        s.send_events(sim.model.generate(20, 1_795_000_000_000))
        for f in frames(s):
            if "seq" in f:
                assert f["seq"] >= 1
    sids = [sub.sid for sub in s.subs.values()]
    assert sids == sorted(set(sids))


@functools.cache
def _fuzz_sim() -> Simulator:
    # Only the model is used (no keys, no socket), so one instance serves every example.
    return Simulator(make_config(Path("/nonexistent-unused"), markets=4))
