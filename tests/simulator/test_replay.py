"""Record a simulator's feed, replay it through another one, and get the same books."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import orjson

from marketpulse.simulator import Simulator
from marketpulse.simulator.replay import ReplaySource, read_recording

from .conftest import Client, connect, make_config
from .test_server import RefBook, drain


async def record(sim: Simulator, path: Path, seconds: float) -> RefBook:
    c = Client(await connect(sim))
    i = await c.send(
        "subscribe",
        {"channels": ["orderbook_delta", "trade", "ticker"], "market_tickers": list(sim.markets)},
    )
    lines: list[bytes] = []
    ref = RefBook()
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    paused = False
    async with asyncio.timeout(30):
        while True:
            if not paused and loop.time() > end:
                sim.pause()
                paused = True
                i = await c.send("list_subscriptions")
            raw = await c.ws.recv()
            lines.append(orjson.dumps({"ts_ms": int(time.time() * 1000), "frame": raw}))
            f = json.loads(raw)
            if f["type"].startswith("orderbook"):
                ref.apply(f)
            if paused and f.get("id") == i and f["type"] == "ok":
                break
    # a recorded duplicate, junk and a command response must all be skipped by the replay
    delta_line = next(
        ln for ln in lines if json.loads(orjson.loads(ln)["frame"])["type"] == "orderbook_delta"
    )
    k = lines.index(delta_line)
    lines.insert(k + 1, delta_line)
    lines.insert(3, b"not json at all")
    lines.insert(4, orjson.dumps({"ts_ms": 1, "frame": "{broken"}))
    path.write_bytes(b"\n".join(lines) + b"\n")
    await c.ws.close()
    return ref


async def test_replay_reproduces_the_recorded_books(key_dir: Path, tmp_path: Path) -> None:
    source = Simulator(make_config(key_dir, markets=6, rate=3000))
    await source.start()
    path = tmp_path / "rec.jsonl"
    try:
        recorded = await record(source, path, 1.0)
        expected = {t: source.book_levels(t) for t in source.markets}
    finally:
        await source.stop()
    for t, levels in expected.items():
        assert recorded.levels(t) == levels
    frames, skipped = read_recording(path)
    assert skipped >= 4  # junk, broken frame, duplicate, responses
    assert frames

    replay = Simulator(make_config(key_dir, replay=str(path), speed=4.0))
    assert set(replay.markets) == set(expected)
    await replay.start()
    try:
        c = Client(await connect(replay))
        i = await c.send(
            "subscribe", {"channels": ["orderbook_delta"], "market_tickers": list(replay.markets)}
        )
        await c.response(i)
        src = replay.replay_source
        assert isinstance(src, ReplaySource)
        async with asyncio.timeout(20):
            while not src.done:
                await asyncio.sleep(0.05)
        await drain(c)
        ref = RefBook()
        last = 0
        for f in [*c.frames]:
            if f["type"] in ("orderbook_snapshot", "orderbook_delta"):
                assert f["seq"] == last + 1  # re-sequenced: contiguous on this connection
                last = f["seq"]
                ref.apply(f)
        assert last > len(expected)
        for t, levels in expected.items():
            assert replay.book_levels(t) == levels
            assert ref.levels(t) == levels
        await c.ws.close()
    finally:
        await replay.stop()


async def test_replay_speed_scales_time(key_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "slow.jsonl"
    t = "KXTEST-26NOV24-T1"
    snap = {
        "type": "orderbook_snapshot",
        "sid": 1,
        "seq": 1,
        "msg": {"market_ticker": t, "yes_dollars_fp": [["0.4000", "10.00"]]},
    }
    delta = {
        "type": "orderbook_delta",
        "sid": 1,
        "seq": 2,
        "msg": {"market_ticker": t, "price_dollars": "0.4000", "delta_fp": "5.50", "side": "yes"},
    }
    path.write_text(
        "\n".join(
            json.dumps({"ts_ms": ts, "frame": json.dumps(f)})
            for ts, f in ((1_000, snap), (3_000, delta))
        )
        + "\n"
    )
    replay = Simulator(make_config(key_dir, replay=str(path), speed=4.0))
    await replay.start()
    try:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        src = replay.replay_source
        async with asyncio.timeout(10):
            while not src.done:
                await asyncio.sleep(0.01)
        elapsed = loop.time() - t0
        assert elapsed >= 0.4  # 2 s recorded / 4
        levels = replay.book_levels(t)
        assert [(str(p), str(s)) for p, s in levels["yes"]] == [("0.4000", "15.50")]
        assert replay.markets[t].event_ticker == "KXTEST-26NOV24"
    finally:
        await replay.stop()


def _write(path: Path, frames: list[dict[str, object]]) -> None:
    path.write_bytes(
        b"".join(
            orjson.dumps({"ts_ms": 1_795_000_000_000 + i, "frame": orjson.dumps(f).decode()})
            + b"\n"
            for i, f in enumerate(frames)
        )
    )


def test_replayed_markets_list_a_grid_that_holds_their_prices(
    key_dir: Path, tmp_path: Path
) -> None:
    from decimal import Decimal

    from marketpulse.kalshi.book import price_problem
    from marketpulse.simulator._rest import handle

    edge, fine, cents = "KXA-26DEC07-EDGE", "KXMVE-26DEC07-FINE", "KXB-26DEC07-CENT"
    path = tmp_path / "rec.jsonl"
    recorded = {
        # $0.0001 ticks near 0 and 1 (Kalshi since 2026-08-13), $0.001 between
        edge: (["0.0005", "0.0120"], ["0.9950"], "0.0013"),
        fine: (["0.4567"], ["0.5001"], "0.4568"),  # $0.0001 everywhere (combos)
        cents: (["0.4500"], ["0.5000"], "0.4600"),
    }
    frames: list[dict[str, object]] = []
    for ticker, (yes, no, delta) in recorded.items():
        frames.append(
            {
                "type": "orderbook_snapshot",
                "sid": 1,
                "seq": len(frames) + 1,
                "msg": {
                    "market_ticker": ticker,
                    "yes_dollars_fp": [[p, "10.00"] for p in yes],
                    "no_dollars_fp": [[p, "10.00"] for p in no],
                },
            }
        )
        frames.append(
            {
                "type": "orderbook_delta",
                "sid": 1,
                "seq": len(frames) + 1,
                "msg": {
                    "market_ticker": ticker,
                    "price_dollars": delta,
                    "delta_fp": "1.00",
                    "side": "yes",
                },
            }
        )
    _write(path, frames)
    sim = Simulator(make_config(key_dir, replay=str(path)))
    for ticker, (yes, no, delta) in recorded.items():
        status, body = handle(sim, "GET", f"/trade-api/v2/markets/{ticker}", {}, b"")
        assert status == 200
        grid = tuple(
            (Decimal(r["start"]), Decimal(r["end"]), Decimal(r["step"]))
            for r in body["market"]["price_ranges"]
        )
        # A client checks every level against the listed grid: none may look off the tick.
        assert [price_problem(Decimal(p), grid) for p in [*yes, *no, delta]] == [None] * (
            len(yes) + len(no) + 1
        ), (ticker, body["market"]["price_level_structure"])
    structures = {t: sim.catalog.markets[t].structure for t in recorded}
    assert structures == {
        edge: "center_deci_edge_centi_cent",
        fine: "centi_cent",
        cents: "deci_cent",  # what a replayed market always listed
    }


async def test_replayed_lifecycle_events_change_the_listed_market(
    key_dir: Path, tmp_path: Path
) -> None:
    from marketpulse.simulator._rest import handle

    paused, settled = "KXA-26DEC07-P", "KXA-26DEC07-S"
    path = tmp_path / "rec.jsonl"

    seq = iter(range(1, 100))

    def lifecycle(ticker: str, event_type: str, **fields: object) -> dict[str, object]:
        msg = {"market_ticker": ticker, "event_type": event_type, **fields}
        return {"type": "market_lifecycle_v2", "sid": 2, "seq": next(seq), "msg": msg}

    _write(
        path,
        [
            lifecycle(paused, "deactivated", is_deactivated=True),
            lifecycle(paused, "deactivated", is_deactivated=False),  # resumed
            lifecycle(paused, "deactivated", is_deactivated=True),
            lifecycle(settled, "close_date_updated", close_ts=1_795_000_000),
            lifecycle(settled, "determined", result="no", settlement_value="0.0000"),
            lifecycle(settled, "settled", result="no", settled_ts=1_795_000_100),
        ],
    )
    sim = Simulator(make_config(key_dir, replay=str(path), speed=1000.0))
    await sim.start()
    try:
        assert sim.replay_source is not None
        async with asyncio.timeout(10):
            while not sim.replay_source.done:
                await asyncio.sleep(0.01)

        def listed(ticker: str) -> dict[str, object]:
            status, body = handle(sim, "GET", f"/trade-api/v2/markets/{ticker}", {}, b"")
            assert status == 200
            market: dict[str, object] = body["market"]
            return market

        assert listed(paused)["status"] == "inactive"
        m = listed(settled)
        assert (m["status"], m["result"], m["settlement_value_dollars"]) == (
            "finalized",
            "no",
            "0.0000",
        )
        assert m["close_time"] == "2026-11-18T11:06:40Z"
        assert m["settlement_ts"] == "2026-11-18T11:08:20Z"
        # and the status filter agrees
        _, body = handle(sim, "GET", "/trade-api/v2/markets", {"status": "settled"}, b"")
        assert [x["ticker"] for x in body["markets"]] == [settled]
    finally:
        await sim.stop()


def test_a_looped_replay_makes_new_trade_ids_each_round(key_dir: Path, tmp_path: Path) -> None:
    # The store keeps one trade per id: with the recorded ids again, every round after the
    # first would be dropped.
    ticker = "KXB-26DEC07-CENT"
    path = tmp_path / "rec.jsonl"
    snapshot = {
        "type": "orderbook_snapshot",
        "sid": 1,
        "seq": 1,
        "msg": {
            "market_ticker": ticker,
            "yes_dollars_fp": [["0.4500", "10.00"]],
            "no_dollars_fp": [["0.5000", "10.00"]],
        },
    }
    trade = {
        "type": "trade",
        "sid": 2,
        "seq": 1,
        "msg": {
            "market_ticker": ticker,
            "trade_id": "5f0a1b2c-0000-4000-8000-000000000001",
            "yes_price_dollars": "0.4600",
            "count_fp": "3.00",
            "taker_side": "yes",
        },
    }
    _write(path, [snapshot, trade])
    sim = Simulator(make_config(key_dir, replay=str(path)))
    source = ReplaySource(path, loop=True)
    ids = []
    for round_ in range(5):
        for event in source.due(sim.model, now=float(round_), now_ms=1_795_000_000_000):
            if hasattr(event, "trade_id"):
                ids.append(event.trade_id)
    assert ids[0] == trade["msg"]["trade_id"]  # the first round is the recording's
    assert len(ids) >= 3 and len(set(ids)) == len(ids)
