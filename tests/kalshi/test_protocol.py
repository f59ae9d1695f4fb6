"""The sans-I/O core: commands, seq tracking, recovery escalation, books, never raising."""

from __future__ import annotations

import json
from decimal import Decimal as D
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marketpulse.kalshi import (
    CommandBuilder,
    ErrorMessage,
    InvalidBook,
    KalshiProtocol,
    MalformedMessage,
    OkMessage,
    RecoveryStarted,
    SequenceGap,
    TickerMessage,
    TradeMessage,
)

A, B, C = "KXBTCD-25AUG0517-T114999.99", "KXETHD-25AUG0517-T3749.99", "INXD-23SEP14-B4487"


def cmds(p: KalshiProtocol) -> list[dict[str, Any]]:
    return [json.loads(s) for s in p.data_to_send()]


def recv(p: KalshiProtocol, data: str | bytes, now: float | None = None) -> list[Any]:
    """Feed one frame, then drain the events (the driver's duty)."""
    p.receive_data(data, now)
    return p.events_received()


def frame(**kw: Any) -> bytes:
    return orjson.dumps(kw)


def snap(
    sid: int, seq: int, ticker: str, yes: list[list[str]], no: list[list[str]], **kw: Any
) -> bytes:
    msg: dict[str, Any] = {"market_ticker": ticker, "market_id": "id"}
    if yes:
        msg["yes_dollars_fp"] = yes
    if no:
        msg["no_dollars_fp"] = no
    return frame(type="orderbook_snapshot", sid=sid, seq=seq, msg=msg, **kw)


def delta(sid: int, seq: int, ticker: str, price: str, d: str, side: str = "yes") -> bytes:
    return frame(
        type="orderbook_delta",
        sid=sid,
        seq=seq,
        msg={
            "market_ticker": ticker,
            "market_id": "id",
            "price_dollars": price,
            "delta_fp": d,
            "side": side,
            "ts_ms": 1,
        },
    )


def subscribed(p: KalshiProtocol, ids_to_sid: dict[str, int]) -> list[dict[str, Any]]:
    """Answer every pending subscribe with `subscribed`; returns the commands seen."""
    sent = cmds(p)
    for c in sent:
        if c["cmd"] == "subscribe":
            ch = c["params"]["channels"][0]
            recv(
                p, frame(id=c["id"], type="subscribed", msg={"channel": ch, "sid": ids_to_sid[ch]})
            )
    return sent


def started(
    markets: list[str], channels: tuple[str, ...] = ("orderbook_delta", "ticker", "trade")
) -> KalshiProtocol:
    p = KalshiProtocol(markets, channels)
    p.connection_made(0.0)
    subscribed(p, {"orderbook_delta": 1, "ticker": 2, "trade": 3})
    for i, t in enumerate(markets, start=1):
        recv(p, snap(1, i, t, [["0.4000", "10.00"]], [["0.5500", "5.00"]]))
    p.books_changed()
    assert all(p.books[t].valid for t in markets)
    return p


def test_command_builder_shapes_and_ids() -> None:
    b = CommandBuilder()
    s = b.subscribe(
        ["orderbook_delta"],
        [A, B],
        use_yes_price=True,
        send_initial_snapshot=True,
        skip_ticker_ack=True,
    )
    assert s == {
        "id": 1,
        "cmd": "subscribe",
        "params": {
            "channels": ["orderbook_delta"],
            "market_tickers": [A, B],
            "use_yes_price": True,
            "send_initial_snapshot": True,
            "skip_ticker_ack": True,
        },
    }
    assert b.subscribe(["ticker"], market_ticker=A)["params"] == {
        "channels": ["ticker"],
        "market_ticker": A,
    }
    assert b.unsubscribe([1, 2]) == {"id": 3, "cmd": "unsubscribe", "params": {"sids": [1, 2]}}
    for i, action in enumerate(("add_markets", "delete_markets", "get_snapshot"), start=4):
        assert b.update_subscription(456, action, [C]) == {
            "id": i,
            "cmd": "update_subscription",
            "params": {"sids": [456], "market_tickers": [C], "action": action},
        }
    assert b.list_subscriptions() == {"id": 7, "cmd": "list_subscriptions"}


def test_connect_subscribes_one_channel_per_command() -> None:
    p = KalshiProtocol([A, B], ("orderbook_delta", "ticker", "trade", "market_lifecycle_v2"))
    p.connection_made()
    sent = cmds(p)
    assert [c["params"]["channels"] for c in sent] == [
        ["orderbook_delta"],
        ["ticker"],
        ["trade"],
        ["market_lifecycle_v2"],
    ]
    assert sent[0]["params"] == {
        "channels": ["orderbook_delta"],
        "market_tickers": [A, B],
        "use_yes_price": False,
    }
    assert sent[1]["params"]["send_initial_snapshot"] is True
    assert "market_tickers" not in sent[3]["params"]  # lifecycle takes no filter
    assert len({c["id"] for c in sent}) == 4


def test_snapshot_then_deltas_update_book_and_dirty_set() -> None:
    p = started([A, B])
    recv(p, delta(1, 3, A, "0.4000", "-4.00"))
    recv(p, delta(1, 4, A, "0.4200", "1.50"))
    recv(p, delta(1, 5, A, "0.5500", "-5.00", "no"))
    assert list(p.books_changed()) == [A]
    book = p.books[A]
    assert book.bids() == [(D("0.42"), D("1.5")), (D("0.40"), D("6"))]
    assert book.asks() == [] and book.best_ask is None
    assert p.stats.deltas == 3 and p.stats.gaps == 0


def test_gap_invalidates_every_book_on_sid_and_requests_snapshots() -> None:
    p = started([A, B, C])
    ev = recv(p, delta(1, 5, A, "0.4000", "1.00"))  # expected 4
    gaps = [e for e in ev if isinstance(e, SequenceGap)]
    assert gaps and gaps[0].expected == 4 and gaps[0].got == 5 and not gaps[0].duplicate
    assert not any(p.books[t].valid for t in (A, B, C))
    assert set(p.books_changed()) == {A, B, C}
    sent = cmds(p)
    assert sent[-1]["cmd"] == "update_subscription"
    assert sent[-1]["params"]["action"] == "get_snapshot"
    assert sent[-1]["params"]["sids"] == [1]
    assert sorted(sent[-1]["params"]["market_tickers"]) == sorted([A, B, C])
    assert p.recovery_level == 1
    # Deltas for invalid books are dropped, never applied.
    recv(p, delta(1, 6, B, "0.4000", "1.00"))
    assert not p.books[B].valid and p.stats.deltas_dropped >= 1
    # Snapshots (in-band, with the command id) revalidate one book at a time.
    gid = sent[-1]["id"]
    recv(p, snap(1, 7, A, [["0.3000", "2.00"]], [], id=gid))
    assert p.books[A].valid and not p.books[B].valid
    recv(p, snap(1, 8, B, [], [], id=gid))
    recv(p, snap(1, 9, C, [["0.1000", "1.00"]], [["0.8000", "1.00"]], id=gid))
    assert all(p.books[t].valid for t in (A, B, C))
    assert p.recovery_level is None and p.stats.recoveries_completed == 1
    assert p.books[A].bids() == [(D("0.3"), D(2))]


def test_duplicate_is_dropped_and_invalidates() -> None:
    p = started([A, B])
    recv(p, delta(1, 3, A, "0.4000", "1.00"))
    ev = recv(p, delta(1, 3, A, "0.4000", "1.00"))
    assert any(isinstance(e, SequenceGap) and e.duplicate for e in ev)
    assert p.stats.duplicates == 1
    assert not p.books[A].valid and not p.books[B].valid


def test_gap_on_other_sid_does_not_touch_books() -> None:
    p = started([A])
    trade = {"trade_id": "t", "market_ticker": A, "yes_price_dollars": "0.4", "count_fp": "1"}
    recv(p, frame(type="trade", sid=3, seq=1, msg=trade))
    ev = recv(p, frame(type="trade", sid=3, seq=3, msg=trade))
    assert any(isinstance(e, SequenceGap) and e.channel == "trade" for e in ev)
    assert any(isinstance(e, TradeMessage) for e in ev)  # the trade itself is still delivered
    assert p.books[A].valid and p.stats.gaps == 1


def test_escalation_get_snapshot_then_resubscribe_then_reconnect() -> None:
    p = started([A, B])
    recv(p, delta(1, 9, A, "0.4000", "1.00"))
    assert p.recovery_level == 1
    cmds(p)
    p.tick(100.0)  # no snapshots in time: resubscribe
    assert p.recovery_level == 2
    sent = cmds(p)
    assert [c["cmd"] for c in sent] == ["unsubscribe", "subscribe"]
    assert sent[0]["params"]["sids"] == [1]
    # Old sid frames are ignored from now on.
    recv(p, delta(1, 10, A, "0.4000", "1.00"))
    assert not p.books[A].valid
    recv(
        p, frame(id=sent[1]["id"], type="subscribed", msg={"channel": "orderbook_delta", "sid": 7})
    )
    p.tick(1000.0)  # still nothing: reconnect
    assert p.recovery_level == 3 and p.close_expected()
    # A reconnect resets everything; sids renumber.
    p.connection_lost()
    p.connection_made(2000.0)
    assert not p.close_expected() and p.sids == {}
    subscribed(p, {"orderbook_delta": 4, "ticker": 5, "trade": 6})
    recv(p, snap(4, 1, A, [], [["0.1000", "1.00"]]))
    recv(p, snap(4, 2, B, [], []))
    assert p.books[A].valid and p.books[B].valid and p.recovery_level is None
    assert p.sids == {"orderbook_delta": 4, "ticker": 5, "trade": 6}
    assert p.stats.recoveries[1] == 1 and p.stats.recoveries[2] == 1 and p.stats.recoveries[3] == 1


def test_get_snapshot_error_escalates_to_resubscribe() -> None:
    p = started([A])
    recv(p, delta(1, 5, A, "0.4000", "1.00"))
    gs = cmds(p)[-1]
    ev = recv(p, frame(id=gs["id"], type="error", msg={"code": 13, "msg": "Unsupported action"}))
    assert any(isinstance(e, ErrorMessage) and e.code == 13 for e in ev)
    assert p.recovery_level == 2
    assert [c["cmd"] for c in cmds(p)] == ["unsubscribe", "subscribe"]


def test_terminal_error_resubscribes_channel() -> None:
    p = started([A])
    recv(
        p,
        frame(type="error", sid=1, seq=2, msg={"code": 25, "msg": "Subscription buffer overflow"}),
    )
    assert not p.books[A].valid
    assert [c["cmd"] for c in cmds(p)] == ["unsubscribe", "subscribe"]
    p2 = started([A])
    recv(p2, frame(type="error", sid=3, msg={"code": 10, "msg": "Channel error"}))
    sent = cmds(p2)
    assert [c["cmd"] for c in sent] == ["unsubscribe", "subscribe"]
    assert sent[1]["params"]["channels"] == ["trade"] and p2.books[A].valid


def test_negative_size_is_a_protocol_error_for_that_book() -> None:
    p = started([A, B])
    recv(p, delta(1, 3, A, "0.4000", "-11.00"))
    assert p.stats.negative_sizes == 1
    assert not p.books[A].valid and p.books[B].valid
    gs = cmds(p)[-1]
    assert gs["params"]["action"] == "get_snapshot" and gs["params"]["market_tickers"] == [A]


def test_control_frame_seq_tolerant_both_readings() -> None:
    for consumes in (False, True):
        p = started([A, B])
        p.add_markets([C])
        upd = cmds(p)[0]
        assert upd["params"]["action"] == "add_markets" and upd["params"]["market_tickers"] == [C]
        # ok carries seq 3 (= last + 1). If it consumed it the next data frame is 4, else 3.
        recv(p, frame(id=upd["id"], sid=1, seq=3, type="ok", msg={"market_tickers": [A, B, C]}))
        nxt = 4 if consumes else 3
        recv(p, snap(1, nxt, C, [["0.2000", "1.00"]], []))
        recv(p, delta(1, nxt + 1, A, "0.4000", "1.00"))
        assert p.stats.gaps == 0 and p.stats.duplicates == 0, consumes
        assert all(p.books[t].valid for t in (A, B, C))


def test_add_and_remove_markets_live() -> None:
    p = started([A, B])
    p.add_markets([C, A])
    sent = cmds(p)
    # One add_markets per subscription (sid), with only the new market.
    assert [
        (c["params"]["action"], c["params"]["sids"], c["params"]["market_tickers"]) for c in sent
    ] == [("add_markets", [1], [C]), ("add_markets", [2], [C]), ("add_markets", [3], [C])]
    assert sent[1]["params"]["send_initial_snapshot"] is True  # ticker channel
    assert not p.books[C].valid and p.books[A].valid and p.books[B].valid
    recv(p, frame(id=sent[0]["id"], sid=1, seq=3, type="ok", msg={"market_tickers": [A, B, C]}))
    p.remove_markets([A])
    p.add_markets([A])  # while the delete is in flight the re-add waits its turn
    sent = cmds(p)
    assert [(c["params"]["action"], c["params"]["sids"]) for c in sent] == [("delete_markets", [1])]
    recv(p, frame(id=sent[0]["id"], sid=1, seq=4, type="ok", msg={"market_tickers": [B, C]}))
    sent = cmds(p)
    assert [(c["params"]["action"], c["params"]["market_tickers"]) for c in sent] == [
        ("add_markets", [A])
    ]
    recv(p, frame(id=sent[0]["id"], sid=1, seq=5, type="ok", msg={"market_tickers": [A, B, C]}))
    recv(p, snap(1, 6, A, [["0.1000", "1.00"]], []))
    recv(p, snap(1, 7, C, [], []))
    p.remove_markets([B])
    assert B not in p.books and B in p.books_changed()
    ignored = p.stats.ignored
    recv(p, delta(1, 8, B, "0.4000", "1.00"))  # late delta for a removed market: ignored
    assert p.stats.ignored == ignored + 1 and p.books[A].valid and p.books[C].valid
    assert p.stats.gaps == 0
    # Removing every market unsubscribes rather than sending an empty filter.
    q = started([A])
    q.remove_markets([A])
    assert [c["cmd"] for c in cmds(q)] == ["unsubscribe"] * 3


def test_add_markets_before_subscribed_is_reconciled_after() -> None:
    p = KalshiProtocol([A], ("orderbook_delta",))
    p.connection_made()
    sub = cmds(p)[0]
    p.add_markets([B])
    assert cmds(p) == []  # nothing to update yet: no sid
    recv(p, frame(id=sub["id"], type="subscribed", msg={"channel": "orderbook_delta", "sid": 1}))
    # The subscribe already covered only A; B goes in with add_markets now.
    upd = cmds(p)
    assert (
        upd
        and upd[0]["params"]["action"] == "add_markets"
        and upd[0]["params"]["market_tickers"] == [B]
    )


def test_use_yes_price_subscription_converts_no_side() -> None:
    p = KalshiProtocol([A], ("orderbook_delta",), use_yes_price=True)
    p.connection_made()
    s = cmds(p)[0]
    assert s["params"]["use_yes_price"] is True
    recv(p, frame(id=s["id"], type="subscribed", msg={"channel": "orderbook_delta", "sid": 1}))
    recv(p, snap(1, 1, A, [["0.4000", "1.00"]], [["0.4500", "2.00"]]))  # YES-scale ask 0.45
    assert p.books[A].levels()["no"] == [(D("0.5500"), D("2.00"))]
    assert p.books[A].best_ask == D("0.45")


def test_a_tick_change_the_exchange_announces_moves_the_grid() -> None:
    p = KalshiProtocol([A], ("orderbook_delta", "market_lifecycle_v2"))
    p.connection_made(0.0)
    subscribed(p, {"orderbook_delta": 1, "market_lifecycle_v2": 2})
    p.set_price_grid(A, ((D("0"), D("1"), D("0.01")),))  # whole cents, as REST said at start
    recv(p, snap(1, 1, A, [["0.4000", "10.00"]], [["0.5500", "5.00"]]))
    recv(
        p,
        frame(
            type="market_lifecycle_v2",
            sid=2,
            seq=1,
            msg={
                "market_ticker": A,
                "event_type": "price_level_structure_updated",
                "price_level_structure": "deci_cent",
                "price_ranges": [{"start": "0.0000", "end": "1.0000", "step": "0.0010"}],
            },
        ),
    )
    recv(p, delta(1, 2, A, "0.4150", "1.00"))
    assert p.books[A].valid, p.books[A].invalid_reason
    # A price off the new tick is still refused.
    recv(p, delta(1, 3, A, "0.41505", "1.00"))
    assert not p.books[A].valid


def test_a_repeated_subscribed_leaves_the_live_subscription_alone() -> None:
    p = started([A])
    recv(p, frame(id=1, type="subscribed", msg={"channel": "orderbook_delta", "sid": 1}))
    assert cmds(p) == [], "no unsubscribe of our own sid"
    recv(p, delta(1, 2, A, "0.4000", "-10.00"))
    assert p.books[A].valid and p.books[A].levels()["yes"] == []


@pytest.mark.parametrize(("channel", "sid"), [("orderbook_delta", 1), ("trade", 3)])
def test_a_subscription_the_exchange_ends_is_taken_again(channel: str, sid: int) -> None:
    p = started([A])
    recv(p, frame(type="unsubscribed", sid=sid, seq=9))
    sent = cmds(p)
    assert [c["params"]["channels"] for c in sent if c["cmd"] == "subscribe"] == [[channel]]
    assert not any(c["cmd"] == "unsubscribe" for c in sent)
    if channel == "orderbook_delta":
        assert not p.books[A].valid, "its books cannot be trusted until snapshotted again"
    else:
        assert p.books[A].valid


def test_a_feed_of_new_type_and_field_names_cannot_grow_the_stats() -> None:
    p = started([A])
    for i in range(1000):
        name = f"kind-{i}-" + "x" * 500
        recv(p, frame(type=name, sid=9, msg={}))
        recv(p, frame(type="ticker", sid=2, msg={"market_ticker": A, name: 1}))
    for counter in (p.stats.unknown_types, p.stats.unknown_fields):
        assert len(counter) == 256
        assert max(len(k) for k in counter) == 64


def test_ticker_list_ok_unknown_and_malformed_never_raise() -> None:
    p = started([A])
    ev = recv(
        p, frame(type="ticker", sid=2, msg={"market_ticker": A, "price_dollars": "0.5", "Clock": 3})
    )
    assert any(isinstance(e, TickerMessage) for e in ev)
    assert p.stats.unknown_fields["ticker.Clock"] == 1
    recv(p, frame(type="ticker", sid=2, msg={"market_ticker": "OTHER", "price_dollars": "0.5"}))
    assert p.stats.ignored == 1
    lid = p.list_subscriptions()
    assert cmds(p) == [{"id": lid, "cmd": "list_subscriptions"}]
    ev = recv(p, frame(id=lid, type="ok", msg=[{"channel": "orderbook_delta", "sid": 1}]))
    assert any(isinstance(e, OkMessage) and e.subscriptions == [("orderbook_delta", 1)] for e in ev)
    recv(p, frame(type="mystery", sid=9, msg={}))
    assert p.stats.unknown_types["mystery"] == 1
    recv(p, delta(1, 3, A, "0.4000", "1.00")[:-1] + b',"extra":1}')  # unknown envelope key ok
    for bad in (b"garbage", b"[]", b"{}", b'{"type":"orderbook_delta","sid":"x"}', "\u0000"):
        ev = recv(p, bad)
        assert all(not isinstance(e, Exception) for e in ev)
    assert p.stats.malformed >= 2
    # A sequenced book frame we cannot read is a lost message: the sid's books go invalid.
    ev = recv(
        p,
        b'{"type":"orderbook_delta","sid":1,"seq":5,"msg":{"market_ticker":"'
        + A.encode()
        + b'","price_dollars":"zz","delta_fp":"1","side":"yes"}}',
    )
    assert any(isinstance(e, MalformedMessage) for e in ev)
    assert any(isinstance(e, RecoveryStarted) for e in ev)
    assert not p.books[A].valid


# -- property: the core, fed a frame stream with correct seqs, equals a reference -------------

TICKERS = [A, B, C]
PRICE = st.integers(min_value=1, max_value=99).map(lambda i: D(i).scaleb(-2))
OPS = st.lists(
    st.one_of(
        st.tuples(
            st.just("snap"),
            st.sampled_from(TICKERS),
            st.lists(st.tuples(PRICE, st.integers(1, 50)), max_size=4),
            st.lists(st.tuples(PRICE, st.integers(1, 50)), max_size=4),
        ),
        st.tuples(
            st.just("delta"),
            st.sampled_from(TICKERS),
            st.sampled_from(["yes", "no"]),
            PRICE,
            st.integers(-30, 30),
        ),
    ),
    max_size=80,
)


def _crossed(levels: dict[str, dict[D, D]]) -> bool:
    return bool(levels["yes"] and levels["no"]) and max(levels["yes"]) + max(levels["no"]) >= 1


@settings(max_examples=150, deadline=None)
@given(ops=OPS)
def test_core_books_equal_reference(ops: list[tuple[Any, ...]]) -> None:
    # Repeated protocol errors would escalate to a resubscribe (all books invalid), which this
    # reference does not model: keep recovery at get_snapshot.
    p = KalshiProtocol(TICKERS, ("orderbook_delta",), max_attempts=10**9)
    p.connection_made()
    s = cmds(p)[0]
    recv(p, frame(id=s["id"], type="subscribed", msg={"channel": "orderbook_delta", "sid": 1}))
    ref: dict[str, dict[str, dict[D, D]] | None] = {t: None for t in TICKERS}
    for seq, op in enumerate(ops, start=1):
        if op[0] == "snap":
            _, t, yes, no = op
            recv(
                p,
                snap(
                    1, seq, t, [[str(x), str(n)] for x, n in yes], [[str(x), str(n)] for x, n in no]
                ),
            )
            levels: dict[str, dict[D, D]] = {"yes": {}, "no": {}}
            for side, lv in (("yes", yes), ("no", no)):
                for x, n in lv:
                    levels[side][x] = levels[side].get(x, D(0)) + n
            ref[t] = None if _crossed(levels) else levels
        else:
            _, t, side, x, d = op
            recv(p, delta(1, seq, t, str(x), str(d), side))
            r = ref[t]
            if r is not None:
                new = r[side].get(x, D(0)) + d
                if new < 0:
                    ref[t] = None
                elif new == 0:
                    r[side].pop(x, None)
                else:
                    r[side][x] = new
                    if d > 0 and _crossed(r):
                        ref[t] = None  # a crossed or locked book is never served
    for t in TICKERS:
        r = ref[t]
        book = p.books[t]
        assert book.valid == (r is not None)
        if r is not None:
            assert book.levels() == {k: sorted(v.items()) for k, v in r.items()}


def test_rejected_markets_are_dropped_and_the_rest_resubscribed() -> None:
    p = KalshiProtocol([A, "NOPE-1", B], ("orderbook_delta", "ticker"))
    p.connection_made()
    first = cmds(p)
    for c in first:  # the exchange refuses every subscribe naming the unknown market
        recv(
            p,
            frame(
                id=c["id"],
                type="error",
                msg={"code": 11, "msg": "Invalid parameter", "market_tickers": ["NOPE-1"]},
            ),
        )
    again = cmds(p)
    assert [c["params"]["market_tickers"] for c in again] == [[A, B], [A, B]]
    assert p.rejected == {"NOPE-1": "rejected by the exchange: 11 Invalid parameter"}
    assert p.markets == [A, B] and not p.books["NOPE-1"].valid
    assert "rejected" in p.books["NOPE-1"].invalid_reason
    recv(
        p, frame(id=again[0]["id"], type="subscribed", msg={"channel": "orderbook_delta", "sid": 1})
    )
    recv(p, snap(1, 1, A, [], []))
    recv(p, snap(1, 2, B, [], []))
    assert p.recovery_level is None and p.books[A].valid and p.books[B].valid
    # A rejected add_markets is dropped the same way; the others keep going.
    p.add_markets(["NOPE-2", C])
    upd = cmds(p)
    assert upd[0]["params"]["market_tickers"] == ["NOPE-2", C]
    recv(
        p,
        frame(
            id=upd[0]["id"],
            type="error",
            msg={"code": 11, "msg": "x", "market_tickers": ["NOPE-2"]},
        ),
    )
    retry = cmds(p)
    assert [c["params"]["market_tickers"] for c in retry] == [[C]]
    assert "NOPE-2" in p.rejected and p.markets == [A, B, C]
    p.remove_markets(["NOPE-1"])
    assert "NOPE-1" not in p.books and "NOPE-1" not in p.rejected


def test_book_without_snapshot_twice_is_given_up_not_reconnected_forever() -> None:
    from marketpulse.kalshi import RecoveryFailed

    p = KalshiProtocol([A, B], ("orderbook_delta",), snapshot_timeout=1.0)
    now = 0.0
    for cycle in range(2):
        p.connection_made(now)
        sub = cmds(p)[0]
        recv(
            p, frame(id=sub["id"], type="subscribed", msg={"channel": "orderbook_delta", "sid": 1})
        )
        recv(p, snap(1, 1, A, [["0.1000", "1.00"]], []))  # B's snapshot never comes
        events: list[object] = []
        for _ in range(3):  # get_snapshot, resubscribe, then reconnect (or give up)
            now += 5.0
            p.tick(now)
            events += p.events_received()
            for c in cmds(p):
                if c["cmd"] == "subscribe":
                    events += recv(
                        p,
                        frame(
                            id=c["id"],
                            type="subscribed",
                            msg={"channel": "orderbook_delta", "sid": 2},
                        ),
                    )
                    recv(p, snap(2, 1, A, [["0.1000", "1.00"]], []))
            events += recv(p, b"{}")  # a frame between ticks, as on a live link
        if cycle == 0:
            assert p.close_expected() and p.stats.recoveries[3] == 1
            p.connection_lost()
        else:
            assert not p.close_expected() and p.stats.recoveries_failed == 1
            assert any(isinstance(e, RecoveryFailed) and e.tickers == [B] for e in events)
            assert p.books[A].valid and not p.books[B].valid
            assert p.books[B].invalid_reason == "no snapshot from the exchange"
            assert p.recovery_level is None
    # A snapshot that arrives later still revives it.
    recv(p, snap(2, 2, B, [], [["0.3000", "2.00"]]))
    assert p.books[B].valid


def test_non_finite_or_odd_delta_values() -> None:
    p = started([A])
    ev = recv(p, delta(1, 3, A, "0.4000", "Infinity"))
    assert any(isinstance(e, MalformedMessage) for e in ev) and not p.books[A].valid
    # Finite as a Decimal, infinite as the float the store keeps: refused the same way.
    huge = started([A])
    ev = recv(huge, delta(1, 3, A, "0.4000", "1e400"))
    assert any(isinstance(e, MalformedMessage) for e in ev) and not huge.books[A].valid
    q = started([A])
    # JSON numbers and legacy cents take the general parser and still apply exactly.
    recv(
        q,
        frame(
            type="orderbook_delta",
            sid=1,
            seq=2,
            msg={"market_ticker": A, "price_dollars": 0.4, "delta_fp": 74.77, "side": "yes"},
        ),
    )
    recv(
        q,
        frame(
            type="orderbook_delta",
            sid=1,
            seq=3,
            msg={
                "market_ticker": A,
                "price": 55,
                "delta": -5,
                "side": "no",
                "ts": "2026-04-19T18:43:37Z",
            },
        ),
    )
    assert q.books[A].levels() == {"yes": [(D("0.4000"), D("84.77"))], "no": []}
    assert q.books[A].ts_ms == 1776624217000


JSON_LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 10**13),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
    st.sampled_from(["yes", "no", "0.5000", "-1.00", "NaN", "1e999", A]),
)
JSON = st.recursive(
    JSON_LEAF,
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids, max_size=4)
    ),
    max_leaves=12,
)
FRAME = st.fixed_dictionaries(
    {"type": st.sampled_from(
        ["orderbook_delta", "orderbook_snapshot", "ticker", "trade", "ok", "error",
         "subscribed", "unsubscribed", "market_lifecycle_v2", "event_lifecycle", "fill", "zzz"])},
    optional={
        "sid": st.one_of(st.integers(0, 4), JSON),
        "seq": st.one_of(st.integers(0, 50), JSON),
        "id": st.one_of(st.integers(0, 9), JSON),
        "msg": st.one_of(
            st.fixed_dictionaries(
                {},
                optional={
                    "market_ticker": st.one_of(st.just(A), JSON),
                    "price_dollars": JSON, "delta_fp": JSON, "side": JSON,
                    "yes_dollars_fp": JSON, "no_dollars_fp": JSON, "channel": JSON, "sid": JSON,
                    "code": JSON, "market_tickers": JSON, "event_type": JSON,
                },
            ),
            JSON,
        ),
    },
)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(frames=st.lists(FRAME, max_size=12))
def test_receive_never_raises_on_arbitrary_frames(frames: list[dict[str, Any]]) -> None:
    p = started([A, B])
    for f in frames:
        recv(p, orjson.dumps(f))
    p.tick(10**6)
    # Whatever happened, a valid book is a consistent one (no negative or zero sizes).
    for book in p.books.values():
        levels = book.levels()
        assert all(s > 0 for side in levels.values() for _, s in side) or not book.valid


def test_lost_first_snapshot_of_a_fresh_sid_is_a_gap() -> None:
    # The exchange withheld seq 1 (A's snapshot): B's snapshot at seq 2 must not be taken as
    # the start of the sequence, or A would wait for the snapshot timeout.
    p = KalshiProtocol([A, B], ("orderbook_delta", "ticker", "trade"))
    p.connection_made(0.0)
    subscribed(p, {"orderbook_delta": 1, "ticker": 2, "trade": 3})
    ev = recv(p, snap(1, 2, B, [["0.3000", "2.00"]], []))
    gaps = [e for e in ev if isinstance(e, SequenceGap)]
    assert gaps and gaps[0].expected == 1 and gaps[0].got == 2
    sent = cmds(p)
    assert sent[-1]["params"]["action"] == "get_snapshot"
    assert sorted(sent[-1]["params"]["market_tickers"]) == sorted([A, B])
    # The trade channel's first frame may carry any seq (captures start mid-sequence).
    trade = {"trade_id": "t", "market_ticker": A, "yes_price_dollars": "0.4", "count_fp": "1"}
    recv(p, frame(type="trade", sid=3, seq=10, msg=trade))
    assert p.stats.gaps == 1


def test_fresh_sid_starting_at_seq_1_is_no_gap() -> None:
    p = KalshiProtocol([A, B], ("orderbook_delta",))
    p.connection_made(0.0)
    subscribed(p, {"orderbook_delta": 1})
    recv(p, snap(1, 1, A, [], []))
    recv(p, snap(1, 2, B, [], []))
    assert p.stats.gaps == 0 and p.books[A].valid and p.books[B].valid


def _ticker_fixture_quotes() -> list[dict[str, Any]]:
    """Real ticker frames (tests/fixtures/kalshi/README.md) with both a bid and an ask."""
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "fixtures" / "kalshi" / "ws"
    lines = (path / "kalshi_ticker.jsonl").read_text().splitlines()
    out = [json.loads(ln) for ln in lines if ln.strip()]
    return [
        f for f in out if 0 < D(f["msg"]["yes_bid_dollars"]) < D(f["msg"]["yes_ask_dollars"]) < 1
    ]


def test_a_book_in_the_other_price_convention_is_refused_even_below_50_cents() -> None:
    # A book consistent with each real ticker, sent as subscribed and in the other convention
    # (NO bid prices vs YES-scale asks). Below $0.50 the misread book is not crossed: only the
    # exchange's own best bid and ask (its ticker) can tell.
    quotes = _ticker_fixture_quotes()
    below = 0
    for f in quotes:
        m = f["msg"]
        ticker, bid, ask = m["market_ticker"], D(m["yes_bid_dollars"]), D(m["yes_ask_dollars"])
        no = [1 - ask] + ([1 - ask - D("0.01")] if 1 - ask - D("0.01") > bid else [])
        for subscribed_yes in (False, True):
            for other in (False, True):
                yes_scale = subscribed_yes != other  # how the exchange sent the NO side
                levels = [[f"{1 - n if yes_scale else n:.4f}", "10.00"] for n in no]
                p = KalshiProtocol(
                    [ticker], ("orderbook_delta", "ticker"), use_yes_price=subscribed_yes
                )
                p.connection_made(0.0)
                subscribed(p, {"orderbook_delta": 1, "ticker": 2})
                events = recv(p, snap(1, 1, ticker, [[f"{bid:.4f}", "10.00"]], levels))
                events += recv(p, orjson.dumps({**f, "sid": 2}))
                invalid = [e for e in events if isinstance(e, InvalidBook)]
                if not other:
                    assert not invalid and p.books[ticker].valid
                    assert p.books[ticker].best_ask == ask
                    continue
                assert [e.ticker for e in invalid] == [ticker] and not p.books[ticker].valid
                if bid < D("0.5"):
                    below += 1
                    assert "other price convention" in invalid[0].reason, invalid[0].reason
    assert below >= 4  # fixtures with a YES price under 50 cents, both subscriptions
