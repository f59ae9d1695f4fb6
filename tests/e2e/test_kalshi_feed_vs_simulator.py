"""KalshiFeed against the simulator over real sockets: exact books through gaps, duplicates,
malformed frames and disconnects; signed handshakes required."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest

from marketpulse.kalshi import (
    FeedState,
    KalshiCredentials,
    KalshiFeed,
    OrderBook,
    OrderbookSnapshot,
    generate_private_key_pem,
    parse_message,
)
from polling import until

simulator = pytest.importorskip("marketpulse.simulator")
if not hasattr(simulator, "Simulator"):  # the package exists before the simulator lands
    pytest.skip("marketpulse.simulator.Simulator is not available", allow_module_level=True)
Simulator = simulator.Simulator
SimulatorConfig = simulator.SimulatorConfig

pytestmark = pytest.mark.e2e


def book_from(msg: dict[str, object]) -> OrderBook:
    """A native book from a use_yes_price snapshot message."""
    parsed = parse_message({"type": "orderbook_snapshot", "sid": 1, "seq": 1, "msg": msg})
    assert isinstance(parsed, OrderbookSnapshot)
    book = OrderBook(parsed.ticker)
    book.apply_snapshot(parsed.yes, parsed.no, yes_price=True)
    return book


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[object]:
    s = Simulator(
        SimulatorConfig(
            host="127.0.0.1", port=0, markets=50, rate=4000.0, seed=11, key_dir=str(tmp_path)
        )
    )
    await s.start()
    yield s
    await s.stop()


def creds_of(sim: object) -> KalshiCredentials:
    return KalshiCredentials.from_file(sim.key_id, sim.private_key_path)  # type: ignore[attr-defined]


def mismatches(feed: KalshiFeed, sim: object, tickers: list[str]) -> list[str]:
    return [
        t
        for t in tickers
        if not feed.books[t].valid or feed.books[t].levels() != sim.book_levels(t)  # type: ignore[attr-defined]
    ]


async def test_50_markets_10000_messages_with_faults_books_exact(sim: object) -> None:
    tickers = sorted(sim.markets)[:50]  # type: ignore[attr-defined]
    assert len(tickers) == 50
    feed = KalshiFeed(
        sim.ws_url,  # type: ignore[attr-defined]
        creds_of(sim),
        tickers,
        reconnect_delay=0.05,
        max_reconnect_delay=0.5,
        snapshot_timeout=2.0,
        stale_after=5.0,
    )
    faults = sim.faults  # type: ignore[attr-defined]
    rnd = random.Random(20261124)
    async with feed:
        await until(lambda: feed.stats.books_valid == 50, 30, "the first 50 snapshots")
        start = feed.stats.messages
        drops = 0
        while feed.stats.messages - start < 10_000:
            await asyncio.sleep(rnd.uniform(0.02, 0.12))
            feed.drain()  # a consumer that keeps up (books are read at the end)
            roll = rnd.random()
            if roll < 0.35:
                faults.skip_seq(rnd.randint(1, 3))
            elif roll < 0.65:
                faults.duplicate(rnd.randint(1, 2))
            elif roll < 0.72:
                faults.malformed(1)
            elif roll < 0.78 and hasattr(faults, "reorder"):
                faults.reorder(1)
            elif roll < 0.83 and drops < 4:
                drops += faults.drop_connection() and 1
        sim.pause()  # type: ignore[attr-defined]
        # Quiesce: every book must come back valid and equal to the simulator's, level by level.
        await until(lambda: not mismatches(feed, sim, tickers), 60, "books to converge")
        bad = mismatches(feed, sim, tickers)
        assert bad == []
        for t in tickers:
            assert feed.books[t].levels() == sim.book_levels(t)  # type: ignore[attr-defined]
        stats = feed.stats
    # The faults really happened, and the client saw them.
    assert faults.counters["skipped"] > 0 and faults.counters["duplicated"] > 0
    assert faults.counters.get("reordered", 1) > 0
    assert faults.counters["dropped"] >= 1 and stats.reconnects >= 1
    assert stats.gaps > 0 and stats.duplicates > 0 and stats.malformed > 0
    assert stats.messages - start >= 10_000
    assert sum(1 for t in tickers if sim.book_levels(t)["yes"] or sim.book_levels(t)["no"]) > 40  # type: ignore[attr-defined]


@pytest.mark.parametrize("how", ["unsigned", "wrong key", "refused once"])
async def test_handshake_must_be_signed(sim: object, how: str) -> None:
    tickers = sorted(sim.markets)[:2]  # type: ignore[attr-defined]
    if how == "unsigned":
        creds = None
    elif how == "wrong key":
        creds = KalshiCredentials.from_pem(sim.key_id, generate_private_key_pem())  # type: ignore[attr-defined]
    else:
        creds = creds_of(sim)
        sim.faults.refuse_auth(1)  # type: ignore[attr-defined]
    feed = KalshiFeed(sim.ws_url, creds, tickers, reconnect_delay=0.05, max_reconnect_delay=0.2)  # type: ignore[attr-defined]
    reasons: list[str] = []
    connected_valid = False
    async with feed:
        async with asyncio.timeout(20):
            async for ev in feed:
                if isinstance(ev, FeedState) and ev.reason:
                    reasons.append(ev.reason)
                if how == "refused once" and feed.stats.books_valid == 2:
                    connected_valid = True
                    break
                if how != "refused once" and len(reasons) >= 2:
                    break
    assert any("HTTP 401" in r for r in reasons), reasons
    if how == "refused once":
        assert connected_valid and sim.faults.counters["refused"] == 1  # type: ignore[attr-defined]
    else:
        assert feed.stats.messages == 0 and not any(b.valid for b in feed.books.values())


async def test_unknown_market_is_rejected_others_stream(sim: object) -> None:
    tickers = sorted(sim.markets)[:3]  # type: ignore[attr-defined]
    feed = KalshiFeed(
        sim.ws_url, creds_of(sim), [*tickers[:2], "KXNOPE-26NOV24-T1"], reconnect_delay=0.05
    )  # type: ignore[attr-defined]
    async with feed:
        await until(lambda: all(feed.books[t].valid for t in tickers[:2]), 20, "the known markets")
        await feed.add_markets(["KXNOPE-26NOV24-T2", tickers[2]])
        await until(lambda: feed.books[tickers[2]].valid, 20, "the added market")
        assert set(feed.protocol.rejected) == {"KXNOPE-26NOV24-T1", "KXNOPE-26NOV24-T2"}
        assert feed.markets == tickers
        sim.pause()  # type: ignore[attr-defined]
        await until(lambda: not mismatches(feed, sim, tickers), 20, "books to match")
        assert feed.stats.reconnects == 0


async def test_use_yes_price_books_equal_native(sim: object) -> None:
    import orjson

    tickers = sorted(sim.markets)[:10]  # type: ignore[attr-defined]
    frames: list[bytes] = []
    feed = KalshiFeed(
        sim.ws_url,  # type: ignore[attr-defined]
        creds_of(sim),
        tickers,
        use_yes_price=True,
        reconnect_delay=0.05,
        on_frame=lambda data, _ts: frames.append(data),
    )
    async with feed:
        await until(lambda: feed.stats.books_valid == 10, 20, "snapshots")
        await until(lambda: feed.stats.deltas > 300, 20, "deltas")
        sim.pause()  # type: ignore[attr-defined]
        await until(lambda: not mismatches(feed, sim, tickers), 20, "books to match")
        for t in tickers:
            no = sim.book_levels(t)["no"]  # type: ignore[attr-defined]
            assert feed.books[t].best_ask == (1 - max(p for p, _ in no) if no else None)
    # The feed converted YES-scale NO levels back to native; had the wire been native, the
    # books above could not equal the simulator's. Check the wire directly too: a YES-scale NO
    # level p of the first snapshot is the native NO bid 1 - p, which the book holds.
    snaps = [orjson.loads(f) for f in frames if b'"orderbook_snapshot"' in f]
    assert snaps and any(s["msg"].get("no_dollars_fp") for s in snaps)
    first = next(s["msg"] for s in snaps if s["msg"].get("no_dollars_fp"))
    native = book_from(first).levels()["no"]
    assert [(1 - p, q) for p, q in reversed(native)] == [
        (Decimal(p), Decimal(q))
        for p, q in sorted(first["no_dollars_fp"], key=lambda lv: Decimal(lv[0]))
    ]


async def test_stalled_simulator_is_detected_and_books_recover(sim: object) -> None:
    tickers = sorted(sim.markets)[:5]  # type: ignore[attr-defined]
    feed = KalshiFeed(
        sim.ws_url,  # type: ignore[attr-defined]
        creds_of(sim),
        tickers,
        reconnect_delay=0.05,
        stale_after=0.8,
    )
    async with feed:
        await until(lambda: feed.stats.books_valid == 5, 20, "snapshots")
        assert sim.faults.stall(3.0) == 1  # type: ignore[attr-defined]
        await until(lambda: feed.stats.stale_reconnects >= 1, 10, "staleness to be noticed")
        await until(
            lambda: feed.stats.reconnects >= 1 and feed.stats.books_valid == 5, 20, "recovery"
        )
        sim.pause()  # type: ignore[attr-defined]
        await until(lambda: not mismatches(feed, sim, tickers), 20, "books to match")


async def test_subscribe_on_a_live_channel_is_merged_and_answered_ok(sim: object) -> None:
    import orjson

    tickers = sorted(sim.markets)[:4]  # type: ignore[attr-defined]
    frames: list[dict[str, object]] = []
    feed = KalshiFeed(
        sim.ws_url,  # type: ignore[attr-defined]
        creds_of(sim),
        tickers,
        reconnect_delay=0.05,
        on_frame=lambda data, _ts: frames.append(orjson.loads(data)),
    )
    async with feed:
        await until(lambda: feed.stats.books_valid == 4, 20, "snapshots")
        sid = feed.protocol.sids["orderbook_delta"]
        before = len(frames)
        # A subscribe re-sent on a live channel (as after a reply the client gave up on):
        # the exchange merges it into the subscription it has and answers ok with its sid.
        feed.protocol._subscribe(feed.protocol._subs["orderbook_delta"])
        await feed._after_input()
        await until(lambda: feed.protocol.pending_commands == 0, 10, "the ok")
        after = frames[before:]
        assert [f for f in after if f.get("type") == "ok" and f.get("sid") == sid], "no ok"
        assert not [f for f in after if f.get("type") == "subscribed"]  # no new sid
        assert feed.protocol.sids["orderbook_delta"] == sid
        await until(lambda: feed.stats.deltas > 200, 20, "deltas after the merge")
        sim.pause()  # type: ignore[attr-defined]
        await until(lambda: not mismatches(feed, sim, tickers), 20, "books to match")
        assert feed.stats.gaps == 0 and feed.stats.reconnects == 0  # the ok took the next seq


async def test_get_snapshot_is_answered_by_snapshots_alone(sim: object) -> None:
    import orjson

    tickers = sorted(sim.markets)[:6]  # type: ignore[attr-defined]
    frames: list[dict[str, object]] = []
    feed = KalshiFeed(
        sim.ws_url,  # type: ignore[attr-defined]
        creds_of(sim),
        tickers,
        reconnect_delay=0.05,
        snapshot_timeout=2.0,
        on_frame=lambda data, _ts: frames.append(orjson.loads(data)),
    )
    async with feed:
        await until(lambda: feed.stats.books_valid == 6, 20, "snapshots")
        sim.faults.skip_seq(1)  # type: ignore[attr-defined]
        await until(lambda: feed.stats.gaps >= 1, 10, "the gap")
        await until(
            lambda: feed.protocol.recovery_level is None and feed.stats.books_valid == 6,
            20,
            "the recovery",
        )
        await until(lambda: feed.protocol.pending_commands == 0, 10, "no command pending")
        sim.pause()  # type: ignore[attr-defined]
        await until(lambda: not mismatches(feed, sim, tickers), 20, "books to match")
        assert feed.stats.reconnects == 0
    answered = {f["id"] for f in frames if f.get("type") == "orderbook_snapshot" and f.get("id")}
    assert answered, "no snapshot carried the get_snapshot's id"
    # ... and no ok answered that command.
    assert not [f for f in frames if f.get("type") == "ok" and f.get("id") in answered]
