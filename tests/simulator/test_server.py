"""The simulator over real sockets, driven by a raw ``websockets`` client."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from marketpulse.kalshi import KalshiCredentials, generate_private_key_pem
from marketpulse.simulator import Simulator
from marketpulse.simulator._model import Trade

from .conftest import WS_PATH, Client, connect, creds, make_config, subscribed


async def refused_status(sim: Simulator, headers: dict[str, str] | None) -> int:
    with pytest.raises(InvalidStatus) as info:
        await websockets.connect(sim.ws_url, additional_headers=headers or {})
    return info.value.response.status_code


async def test_signed_handshake_accepted_unsigned_and_wrong_refused(sim: Simulator) -> None:
    ws = await connect(sim)
    await ws.close()
    assert await refused_status(sim, None) == 401
    other = KalshiCredentials.from_pem(sim.key_id or "", generate_private_key_pem())
    assert await refused_status(sim, other.headers("GET", WS_PATH)) == 401
    good = creds(sim).headers("GET", WS_PATH)
    assert await refused_status(sim, {**good, "KALSHI-ACCESS-KEY": "not-the-key"}) == 401
    assert await refused_status(sim, {**good, "KALSHI-ACCESS-TIMESTAMP": "123"}) == 401
    signed_rest = creds(sim).headers("GET", "/trade-api/v2/markets")
    assert await refused_status(sim, signed_rest) == 401


async def test_given_public_key_and_anonymous_mode(key_dir: Path, tmp_path: Path) -> None:
    pem = generate_private_key_pem()
    user = KalshiCredentials.from_pem("my-key", pem)
    pub = tmp_path / "pub.pem"
    pub.write_bytes(user.public_key_pem())
    sim = Simulator(make_config(key_dir, public_key_path=str(pub), allow_anonymous=True, rate=0))
    await sim.start()
    try:
        assert sim.private_key_path is None
        ws = await websockets.connect(sim.ws_url, additional_headers=user.headers("GET", WS_PATH))
        await ws.close()
        # anonymous: connects, but the private orderbook channel says "Authentication required"
        c = Client(await websockets.connect(sim.ws_url))
        ticker = next(iter(sim.markets))
        i = await c.send("subscribe", {"channels": ["orderbook_delta"], "market_ticker": ticker})
        err = await c.response(i)
        assert err["type"] == "error" and err["msg"]["code"] == 9
        i = await c.send("subscribe", {"channels": ["ticker"], "market_ticker": ticker})
        assert (await c.response(i))["type"] == "subscribed"
        await c.ws.close()
        # a wrong signature is still refused
        other = KalshiCredentials.from_pem("my-key", generate_private_key_pem())
        assert await refused_status(sim, other.headers("GET", WS_PATH)) == 401
    finally:
        await sim.stop()


class RefBook:
    """A tiny reference model of a Kalshi book from snapshots and deltas (native terms)."""

    def __init__(self) -> None:
        self.books: dict[str, dict[str, dict[Decimal, Decimal]]] = {}

    def apply(self, frame: dict[str, Any]) -> None:
        msg = frame["msg"]
        if frame["type"] == "orderbook_snapshot":
            self.books[msg["market_ticker"]] = {
                side: {Decimal(p): Decimal(s) for p, s in msg.get(f"{side}_dollars_fp", [])}
                for side in ("yes", "no")
            }
        elif frame["type"] == "orderbook_delta":
            side = self.books[msg["market_ticker"]][msg["side"]]
            price = Decimal(msg["price_dollars"])
            new = side.get(price, Decimal(0)) + Decimal(msg["delta_fp"])
            assert new >= 0
            if new == 0:
                side.pop(price, None)
            else:
                side[price] = new

    def levels(self, ticker: str) -> dict[str, list[tuple[Decimal, Decimal]]]:
        return {s: sorted(self.books[ticker][s].items()) for s in ("yes", "no")}


async def drain(c: Client) -> None:
    """Read until a fresh list_subscriptions answer: everything sent before it has arrived."""
    i = await c.send("list_subscriptions")
    await c.response(i, ("ok",))


async def test_snapshot_then_deltas_rebuild_the_exact_book(sim: Simulator) -> None:
    tickers = list(sim.markets)
    c = Client(await connect(sim))
    i = await c.send("subscribe", {"channels": ["orderbook_delta"], "market_tickers": tickers})
    sub = await c.response(i)
    assert sub == {"id": i, "type": "subscribed", "msg": {"channel": "orderbook_delta", "sid": 1}}
    ref = RefBook()
    seen: set[str] = set()
    last_seq = 0
    deltas = 0
    while deltas < 3000:
        f = await c.recv()
        if f["type"] not in ("orderbook_snapshot", "orderbook_delta"):
            continue
        assert f["sid"] == 1 and f["seq"] == last_seq + 1
        last_seq = f["seq"]
        t = f["msg"]["market_ticker"]
        if f["type"] == "orderbook_snapshot":
            seen.add(t)
            for side in ("yes_dollars_fp", "no_dollars_fp"):
                prices = [Decimal(p) for p, _ in f["msg"].get(side, [])]
                assert prices == sorted(prices)
        else:
            assert t in seen, "delta before its snapshot"
            deltas += 1
            assert len(f["msg"]["price_dollars"].split(".")[1]) == 4
            assert len(f["msg"]["delta_fp"].split(".")[1]) == 2
            assert isinstance(f["msg"]["ts_ms"], int)
            assert "price" not in f["msg"] and "delta" not in f["msg"]
        ref.apply(f)
    assert seen == set(tickers)
    sim.pause()
    await drain(c)
    # apply whatever arrived while draining
    for f in c.frames:
        if f.get("seq", 0) > last_seq and f["type"] in ("orderbook_snapshot", "orderbook_delta"):
            assert f["seq"] == last_seq + 1
            last_seq = f["seq"]
            ref.apply(f)
    for t in tickers:
        assert ref.levels(t) == sim.book_levels(t), t
    await c.ws.close()


async def test_ticker_trade_and_use_yes_price(sim: Simulator) -> None:
    ticker = next(iter(sim.markets))
    c = Client(await connect(sim))
    i = await c.send(
        "subscribe",
        {"channels": ["ticker"], "market_tickers": [ticker], "send_initial_snapshot": True},
    )
    assert (await c.response(i))["msg"]["channel"] == "ticker"
    first = await c.until(lambda f: f["type"] == "ticker")
    assert "seq" not in first and first["msg"]["market_ticker"] == ticker
    i = await c.send("subscribe", {"channels": ["trade"]})  # no filter: every market
    trade_sid = (await c.response(i))["msg"]["sid"]
    i = await c.send(
        "subscribe",
        {"channels": ["orderbook_delta"], "market_ticker": ticker, "use_yes_price": True},
    )
    book_sid = (await c.response(i))["msg"]["sid"]
    snap = await c.until(lambda f: f["type"] == "orderbook_snapshot")
    assert snap["sid"] == book_sid == 3 and snap["seq"] == 1
    native = sim.book_levels(ticker)
    # use_yes_price: NO levels arrive as YES-ask prices (1 - p)
    got_no = sorted((Decimal(p), Decimal(s)) for p, s in snap["msg"].get("no_dollars_fp", []))
    assert got_no == sorted((1 - p, s) for p, s in native["no"])
    trades = []
    async with asyncio.timeout(20):
        while len(trades) < 5:
            f = await c.recv()
            if f["type"] == "trade":
                trades.append(f)
    seqs = [f["seq"] for f in trades]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    for f in trades:
        assert f["sid"] == trade_sid
        m = f["msg"]
        assert Decimal(m["yes_price_dollars"]) + Decimal(m["no_price_dollars"]) == 1
        assert m["taker_book_side"] == ("bid" if m["taker_outcome_side"] == "yes" else "ask")
    tickers = [f for f in c.frames if f["type"] == "ticker"]
    for f in tickers:
        m = f["msg"]
        assert Decimal(m["yes_bid_dollars"]) < Decimal(m["yes_ask_dollars"])
    await c.ws.close()


async def test_commands_and_error_codes(sim: Simulator) -> None:
    sim.pause()
    tickers = list(sim.markets)
    c = Client(await connect(sim))

    async def error_code(text: str) -> int:
        await c.ws.send(text)
        f = await c.until(lambda f: f["type"] == "error")
        return int(f["msg"]["code"])

    assert await error_code("not json") == 1
    assert await error_code("[1,2]") == 1
    assert await error_code('{"id":"x","cmd":"list_subscriptions"}') == 1
    assert await error_code('{"id":1,"cmd":"subscribe"}') == 2
    assert await error_code('{"id":1,"cmd":"subscribe","params":{"channels":[]}}') == 3
    assert await error_code('{"id":1,"cmd":"unsubscribe","params":{"other":1}}') == 4
    assert await error_code('{"id":1,"cmd":"fly"}') == 5
    assert await error_code('{"id":1,"cmd":"unsubscribe","params":{"sids":[99]}}') == 7
    assert (
        await error_code('{"id":1,"cmd":"subscribe","params":{"channels":["multivariate"]}}') == 8
    )
    bad = {"channels": ["ticker"], "market_ticker": tickers[0], "market_tickers": tickers}
    assert await error_code(json.dumps({"id": 1, "cmd": "subscribe", "params": bad})) == 11
    unknown = {"channels": ["ticker"], "market_tickers": ["NOPE-1"]}
    assert await error_code(json.dumps({"id": 1, "cmd": "subscribe", "params": unknown})) == 11
    assert (
        await error_code('{"id":1,"cmd":"subscribe","params":{"channels":["orderbook_delta"]}}')
        == 14
    )
    assert (
        await error_code('{"id":1,"cmd":"subscribe","params":{"channels":["cfbenchmarks_value"]}}')
        == 24
    )
    assert await error_code('{"id":1,"cmd":"subscribe","params":{"channels":["pyth_value"]}}') == 28
    for params, code in [
        ({"channels": ["communications"], "shard_factor": 0}, 19),
        ({"channels": ["communications"], "shard_key": 1}, 20),
        ({"channels": ["communications"], "shard_factor": 2, "shard_key": 2}, 21),
        ({"channels": ["communications"], "shard_factor": 101}, 22),
    ]:
        assert await error_code(json.dumps({"id": 1, "cmd": "subscribe", "params": params})) == code

    i = await c.send(
        "subscribe", {"channels": ["orderbook_delta", "ticker"], "market_tickers": tickers[:2]}
    )
    s1 = await c.response(i)
    s2 = await c.response(i)
    assert (s1["msg"], s2["msg"]) == (
        {"channel": "orderbook_delta", "sid": 1},
        {"channel": "ticker", "sid": 2},
    )
    snaps = [await c.until(lambda f: f["type"] == "orderbook_snapshot") for _ in range(2)]
    assert [s["seq"] for s in snaps] == [1, 2]

    def upd(**params: Any) -> str:
        return json.dumps({"id": 50, "cmd": "update_subscription", "params": params})

    assert await error_code(upd(sids=[1], market_tickers=tickers[2:3])) == 15
    assert await error_code(upd(action="add_markets", market_tickers=tickers[2:3])) == 4
    assert (
        await error_code(upd(sids=[1, 2], action="add_markets", market_tickers=tickers[2:3])) == 12
    )
    assert await error_code(upd(sid=1, sids=[1], action="add_markets")) == 12
    assert await error_code(upd(sid=1, action="rename", market_tickers=tickers[2:3])) == 13
    assert await error_code(upd(sid=2, action="get_snapshot", market_tickers=tickers[:1])) == 13
    assert await error_code(upd(sid=9, action="add_markets", market_tickers=tickers[2:3])) == 7
    assert await error_code(upd(sid=1, action="add_markets")) == 14

    i = await c.send(
        "update_subscription",
        {"sids": [1], "action": "add_markets", "market_tickers": [tickers[2]]},
    )
    ok = await c.response(i)
    # the error 14 above consumed seq 3 on sid 1
    assert ok == {"id": i, "sid": 1, "seq": 4, "type": "ok", "msg": {"market_tickers": tickers[:3]}}
    snap = await c.until(lambda f: f["type"] == "orderbook_snapshot")
    assert snap["seq"] == 5 and snap["msg"]["market_ticker"] == tickers[2] and "id" not in snap

    i = await c.send(
        "update_subscription", {"sid": 1, "action": "get_snapshot", "market_tickers": tickers[:2]}
    )
    # Answered by the snapshots alone, carrying the command's id: no ok before them.
    snaps = [await c.until(lambda f: f.get("id") == i) for _ in range(2)]
    assert [(s["type"], s["seq"], s["msg"]["market_ticker"]) for s in snaps] == [
        ("orderbook_snapshot", 6, tickers[0]),
        ("orderbook_snapshot", 7, tickers[1]),
    ]

    i = await c.send(
        "update_subscription",
        {"sid": 1, "action": "delete_markets", "market_tickers": [tickers[0]]},
    )
    assert (await c.response(i))["msg"]["market_tickers"] == tickers[1:3]

    # A second subscribe on a subscribed channel merges into it: ok with the same sid, the
    # sid's next seq, the full market list, then a snapshot of the market that was new.
    i = await c.send("subscribe", {"channels": ["orderbook_delta"], "market_tickers": tickers[:2]})
    assert (await c.response(i)) == {
        "id": i,
        "sid": 1,
        "seq": 9,
        "type": "ok",
        "msg": {"market_tickers": [tickers[1], tickers[2], tickers[0]]},
    }
    snap = await c.until(lambda f: f["type"] == "orderbook_snapshot")
    assert (snap["seq"], snap["msg"]["market_ticker"]) == (10, tickers[0])

    i = await c.send("list_subscriptions")
    assert (await c.response(i)) == {
        "id": i,
        "type": "ok",
        "msg": [{"channel": "orderbook_delta", "sid": 1}, {"channel": "ticker", "sid": 2}],
    }

    i = await c.send("unsubscribe", {"sids": [1]})
    assert (await c.response(i)) == {"id": i, "sid": 1, "seq": 11, "type": "unsubscribed"}
    i = await c.send("list_subscriptions")
    assert (await c.response(i))["msg"] == [{"channel": "ticker", "sid": 2}]
    # sids keep counting up on the connection
    i = await c.send("subscribe", {"channels": ["trade"]})
    assert (await c.response(i))["msg"]["sid"] == 3
    await c.ws.close()


async def test_rest_endpoints_and_pagination(sim: Simulator) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=sim.rest_url, timeout=10) as http:
        seen: list[str] = []
        cursor = ""
        while True:
            r = await http.get("/markets", params={"limit": 5, "cursor": cursor})
            assert r.status_code == 200
            body = r.json()
            assert len(body["markets"]) <= 5
            seen += [m["ticker"] for m in body["markets"]]
            cursor = body["cursor"]
            if not cursor:
                break
        assert seen == list(sim.markets)
        m = (await http.get(f"/markets/{seen[0]}")).json()["market"]
        assert m["ticker"] == seen[0] and m["status"] == "active"
        for key in (
            "yes_bid_dollars",
            "yes_ask_dollars",
            "last_price_dollars",
            "previous_price_dollars",
        ):
            assert len(m[key].split(".")[1]) == 4
        assert (
            "yes_bid" not in m
            and "volume" not in m
            and m["volume_fp"].endswith(tuple("0123456789"))
        )
        sim.pause()
        ob = (await http.get(f"/markets/{seen[0]}/orderbook")).json()["orderbook_fp"]
        native = sim.book_levels(seen[0])
        assert [(Decimal(p), Decimal(s)) for p, s in ob["yes_dollars"]] == native["yes"]
        assert [(Decimal(p), Decimal(s)) for p, s in ob["no_dollars"]] == native["no"]
        top = (await http.get(f"/markets/{seen[0]}/orderbook", params={"depth": 2})).json()
        assert top["orderbook_fp"]["yes_dollars"] == ob["yes_dollars"][-2:]
        assert (
            await http.get(f"/markets/{seen[0]}/orderbook", params={"depth": 500})
        ).status_code == 400
        assert (await http.get("/markets/NOPE")).status_code == 404
        assert (await http.get("/markets", params={"status": "active"})).status_code == 400
        assert len((await http.get("/markets", params={"status": "open"})).json()["markets"]) == 12
        assert (await http.get("/markets", params={"status": "settled"})).json()["markets"] == []
        ev = m["event_ticker"]
        by_event = (await http.get("/markets", params={"event_ticker": ev})).json()["markets"]
        assert by_event and all(x["event_ticker"] == ev for x in by_event)
        two = (await http.get("/markets", params={"tickers": ",".join(seen[:2])})).json()["markets"]
        assert [x["ticker"] for x in two] == seen[:2]
        series = m["event_ticker"].split("-")[0]
        assert all(
            x["ticker"].startswith(series)
            for x in (await http.get("/markets", params={"series_ticker": series})).json()[
                "markets"
            ]
        )
        trades = (await http.get("/markets/trades", params={"limit": 3})).json()
        assert len(trades["trades"]) == 3 and trades["cursor"]
        t0 = trades["trades"][0]
        assert Decimal(t0["yes_price_dollars"]) + Decimal(t0["no_price_dollars"]) == 1
        events = (await http.get("/events", params={"with_nested_markets": "true"})).json()[
            "events"
        ]
        assert {x["ticker"] for e in events for x in e["markets"]} == set(sim.markets)
        one = (await http.get(f"/events/{ev}")).json()
        assert one["event"]["event_ticker"] == ev and one["markets"]
        assert (await http.get("/series")).json()["series"]
        assert (await http.get(f"/series/{series}")).json()["series"]["ticker"] == series
        status = (await http.get("/exchange/status")).json()
        assert status["exchange_active"] is True and status["trading_active"] is False
        # control API
        book = (await http.get(f"{sim.base_url}/_sim/book/{seen[0]}")).json()
        assert [(Decimal(p), Decimal(s)) for p, s in book["yes"]] == native["yes"]
        listed = (await http.get(f"{sim.base_url}/_sim/markets")).json()
        assert listed["markets"] == seen
        r = await http.post(f"{sim.base_url}/_sim/control", json={"action": "resume"})
        assert r.status_code == 200 and not sim.paused
        r = await http.post(f"{sim.base_url}/_sim/control", json={"action": "explode"})
        assert r.status_code == 400
        r = await http.post(f"{sim.base_url}/_sim/control", content=b"{nope")
        assert r.status_code == 400


async def test_faults_happen(sim: Simulator) -> None:
    ticker = next(iter(sim.markets))
    c = await subscribed(sim)

    async def next_seq() -> int:
        f = await c.until(lambda f: f["type"] == "orderbook_delta")
        return int(f["seq"])

    async def next_step(previous: int) -> tuple[int, int]:
        seq = await next_seq()
        return seq, seq - previous

    # The fault lands on the next frame sent, which may be behind many already in flight on a
    # loaded host: read (a bounded number) until the chain breaks, then check how.
    seq = await next_seq()
    sim.faults.skip_seq()
    for _ in range(2_000):
        seq, step = await next_step(seq)
        if step != 1:
            break
    assert step == 2
    for _ in range(30):  # one number skipped, once
        seq, step = await next_step(seq)
        assert step == 1
    sim.faults.duplicate()
    for _ in range(2_000):
        seq, step = await next_step(seq)
        if step != 1:
            break
    assert step == 0
    sim.faults.malformed()
    async with asyncio.timeout(10):
        while True:
            raw = await c.ws.recv()
            try:
                json.loads(raw)
            except json.JSONDecodeError:
                break
    # a stall: nothing at all for a while (after what was already in flight), then the backlog
    sim.faults.stall(1.0)
    loop = asyncio.get_running_loop()
    last = loop.time()
    longest = 0.0
    async with asyncio.timeout(10):
        while longest < 0.6:
            await c.ws.recv()
            now = loop.time()
            longest = max(longest, now - last)
            last = now
    assert sim.faults.counters["stalled"] == 1
    # drop
    assert sim.faults.drop_connection() == 1
    with pytest.raises(ConnectionClosed):
        async with asyncio.timeout(5):
            while True:
                await c.ws.recv()
    # refuse auth once, then accept again
    sim.faults.refuse_auth()
    with pytest.raises(InvalidStatus) as info:
        await connect(sim)
    assert info.value.response.status_code == 401
    ws = await connect(sim)
    await ws.close()
    assert sim.faults.counters["refused"] == 1
    assert ticker in sim.markets


async def test_overflow_gives_error_25_and_drops_the_subscription(key_dir: Path) -> None:
    sim = Simulator(make_config(key_dir, rate=20000, max_buffer_bytes=64 * 1024))
    await sim.start()
    try:
        c = await subscribed(sim)
        sim.faults.stall(1.0)  # nothing leaves; the buffer fills
        err = await c.until(lambda f: f["type"] == "error", timeout=15)
        assert err["msg"]["code"] == 25 and err["sid"] == 1
        i = await c.send("list_subscriptions")
        assert (await c.response(i))["msg"] == []
        await c.ws.close()
    finally:
        await sim.stop()


async def test_command_replies_count_against_the_buffer_bound(key_dir: Path) -> None:
    import socket

    limit = 64 * 1024
    sim = Simulator(make_config(key_dir, rate=0, markets=50, max_buffer_bytes=limit))
    await sim.start()
    try:
        c = await subscribed(sim)
        c.ws.transport.get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_RCVBUF, 4096
        )
        c.ws.transport.pause_reading()  # a client that stops reading, and asks for snapshots
        ask = {"sid": 1, "action": "get_snapshot", "market_tickers": list(sim.markets)}
        for _ in range(400):
            await c.send("update_subscription", ask)
        (conn,) = sim._connections
        async with asyncio.timeout(10):
            while conn.session is not None and conn.session.subs:
                await asyncio.sleep(0.01)
        # Past the bound the subscription ended with error 25, as it does for data frames;
        # it used to hold every reply (the buffer grew without bound while nothing traded).
        c.ws.transport.resume_reading()
        err = await c.until(lambda f: f["type"] == "error", timeout=15)
        assert err["msg"]["code"] == 25 and err["sid"] == 1
        await c.ws.close()
    finally:
        await sim.stop()


async def test_ping_heartbeat(key_dir: Path) -> None:
    sim = Simulator(make_config(key_dir, rate=0, ping_interval=0.1))
    await sim.start()
    try:
        ws = await connect(sim)
        got = asyncio.get_running_loop().create_future()
        # websockets answers pings itself; watch for one through the protocol's event hook.
        orig = ws.protocol.recv_frame

        def spy(frame: Any) -> None:
            if frame.opcode.name == "PING" and not got.done():
                got.set_result(bytes(frame.data))
            orig(frame)

        ws.protocol.recv_frame = spy  # type: ignore[method-assign]
        reader = asyncio.create_task(ws.recv())
        assert await asyncio.wait_for(got, 5) == b"heartbeat"
        reader.cancel()
        await ws.close()
    finally:
        await sim.stop()


async def test_bad_http_and_non_upgrade(sim: Simulator) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
    writer.write(b"GARBAGE\r\n\r\n")
    data = await asyncio.wait_for(reader.read(), 5)
    assert data.startswith(b"HTTP/1.1 400")
    writer.close()
    import httpx

    async with httpx.AsyncClient() as http:
        r = await http.get(sim.ws_url.replace("ws://", "http://"))
        assert r.status_code == 426
    sig = base64.b64encode(b"x").decode()
    assert (
        await refused_status(
            sim,
            {
                "KALSHI-ACCESS-KEY": sim.key_id or "",
                "KALSHI-ACCESS-TIMESTAMP": "1",
                "KALSHI-ACCESS-SIGNATURE": sig,
            },
        )
        == 401
    )


async def test_http_control_drives_faults_of_a_running_simulator(sim: Simulator) -> None:
    import httpx

    c = Client(await connect(sim))
    i = await c.send("subscribe", {"channels": ["trade"]})
    await c.response(i)
    async with httpx.AsyncClient(base_url=sim.base_url, timeout=10) as http:

        async def control(**body: Any) -> Any:
            r = await http.post("/_sim/control", json=body)
            assert r.status_code == 200, r.text
            return r.json()["result"]

        await control(action="pause")
        await drain(c)
        assert await control(action="advance", count=500) >= 500
        await control(action="skip_seq", count=1)
        await control(action="duplicate", count=1)
        await control(action="advance", count=500)
        await drain(c)
        seqs = [f["seq"] for f in c.frames if f["type"] == "trade"]
        assert len(seqs) > 10
        steps = [b - a for a, b in itertools.pairwise(seqs)]
        assert steps.count(2) == 1 and steps.count(0) == 1 and set(steps) <= {0, 1, 2}
        t = next(iter(sim.markets))
        await control(action="set_status", ticker=t, status="closed")
        assert sim.markets[t].status == "closed"
        closed = (await http.get("/trade-api/v2/markets", params={"status": "closed"})).json()
        assert [m["ticker"] for m in closed["markets"]] == [t]
        await control(action="set_rate", rate=123)
        assert sim.config.rate == 123
        assert (
            await http.post("/_sim/control", json={"action": "set_rate", "rate": -1})
        ).status_code == 400
        assert (
            await http.post("/_sim/control", json={"action": "skip_seq", "count": "x"})
        ).status_code == 400
        assert (await http.post("/_sim/control", json={"action": "set_status"})).status_code == 400
        await control(action="refuse_auth", count=-1)
        for _ in range(2):
            with pytest.raises(InvalidStatus):
                await connect(sim)
        await control(action="clear_faults")
        await (await connect(sim)).close()
        assert await control(action="stall", seconds=0.1) >= 1
        assert await control(action="drop_connection") >= 1
        stats = (await http.get("/_sim/stats")).json()
        assert stats["faults"]["refused"] == 2 and stats["faults"]["dropped"] >= 1
        assert (await http.get("/_sim/book/NOPE")).status_code == 404
        assert (await http.get("/_sim/control")).status_code == 405


async def test_standing_faults_from_settings(key_dir: Path) -> None:
    from marketpulse.simulator import FaultSettings

    settings = FaultSettings(
        drop_every=300, malformed_every=100, stall_every=0.3, stall_seconds=0.05
    )
    sim = Simulator(make_config(key_dir, rate=4000, faults=settings))
    await sim.start()
    try:
        c = await subscribed(sim)
        bad = 0
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(20):
                while True:
                    raw = await c.ws.recv()
                    try:
                        json.loads(raw)
                    except json.JSONDecodeError:
                        bad += 1
        assert bad >= 1
        assert sim.faults.counters["dropped"] == 1 and sim.faults.counters["malformed"] >= 1
        ws = await connect(sim)  # reconnecting works; the new connection gets its own budget
        async with asyncio.timeout(5):
            while sim.faults.counters["stalled"] == 0:
                await asyncio.sleep(0.05)
        await ws.close()
    finally:
        await sim.stop()


async def test_clients_leaving_mid_stream_do_not_disturb_others(key_dir: Path) -> None:
    sim = Simulator(make_config(key_dir, rate=10000))
    await sim.start()
    try:
        stayer = await subscribed(sim, ("orderbook_delta", "trade"))
        for k in range(6):
            c = await subscribed(sim, ("orderbook_delta", "trade"))
            if k % 2:
                await c.ws.close()  # a clean close while frames are flowing
            else:
                c.ws.transport.abort()  # a vanished client
        async with asyncio.timeout(10):
            while sim.connections > 1:
                await asyncio.sleep(0.02)
        before = len(stayer.frames)
        for _ in range(500):
            await stayer.recv()
        assert len(stayer.frames) == before + 500
        assert sim._task is not None and not sim._task.done()
        # (no clean close: with a full receive queue the client's close handshake waits 10 s)
        stayer.ws.transport.abort()
    finally:
        await sim.stop()


async def test_rest_signatures_batch_books_and_limits(sim: Simulator) -> None:
    import httpx

    from marketpulse.kalshi.rest import KalshiRestClient

    sim.pause()
    tickers = list(sim.markets)[:3]
    async with KalshiRestClient(sim.rest_url, creds(sim)) as rest:  # signs every request
        book = await rest.get_orderbook(tickers[0])
        assert [(p, s) for p, s in book.yes] == sim.book_levels(tickers[0])["yes"]
    async with httpx.AsyncClient(base_url=sim.base_url, timeout=10) as http:
        path = "/trade-api/v2/markets"
        assert (await http.get(path)).status_code == 200  # public data: unsigned is fine
        good = creds(sim).headers("GET", path)
        assert (await http.get(path, headers=good, params={"limit": 1})).status_code == 200
        wrong = KalshiCredentials.from_pem(sim.key_id or "", generate_private_key_pem())
        r = await http.get(path, headers=wrong.headers("GET", path))
        assert r.status_code == 401
        r = await http.get(path, headers=creds(sim).headers("GET", "/trade-api/v2/events"))
        assert r.status_code == 401  # signed for another path
        q = [("tickers", tickers[0]), ("tickers", tickers[1])]
        books = (await http.get("/trade-api/v2/markets/orderbooks", params=q)).json()["orderbooks"]
        assert [b["ticker"] for b in books] == tickers[:2]
        assert books[1]["orderbook_fp"]["no_dollars"] == [
            [str(p), str(s)] for p, s in sim.book_levels(tickers[1])["no"]
        ]
        r = await http.get("/trade-api/v2/markets/orderbooks", params={"tickers": "NOPE"})
        assert r.status_code == 404
        r = await http.post("/_sim/control", content=b"x" * (2 << 20))
        assert r.status_code == 413


async def test_stale_signature_refused_when_a_skew_window_is_set(key_dir: Path) -> None:
    import time

    async with Simulator(make_config(key_dir, rate=0, max_skew_ms=5000)) as sim:
        old = creds(sim).headers("GET", WS_PATH, timestamp_ms=int(time.time() * 1000) - 60_000)
        assert await refused_status(sim, old) == 401
        ws = await connect(sim)
        await ws.close()


async def test_rest_limits_and_trade_pagination(sim: Simulator) -> None:
    import httpx

    await asyncio.sleep(0.3)  # some trades
    sim.pause()
    async with httpx.AsyncClient(base_url=sim.rest_url, timeout=10) as http:
        assert len((await http.get("/markets", params={"limit": 0})).json()["markets"]) == 12
        assert (await http.get("/markets", params={"limit": 1001})).status_code == 400
        assert (await http.get("/markets", params={"limit": "x"})).status_code == 400
        assert (await http.get("/markets", params={"cursor": "%%%"})).status_code == 400
        assert (await http.get("/markets/trades", params={"limit": 0})).status_code == 400
        assert (await http.get("/events", params={"limit": 201})).status_code == 400
        ids: list[str] = []
        cursor = ""
        while True:
            body = (
                await http.get("/markets/trades", params={"limit": 50, "cursor": cursor})
            ).json()
            ids += [t["trade_id"] for t in body["trades"]]
            cursor = body["cursor"]
            if not cursor:
                break
        assert len(ids) == len(set(ids)) == len(sim.model.trades)
        one = sim.model.trades[-1].ticker
        mine = (await http.get("/markets/trades", params={"ticker": one, "limit": 1000})).json()
        assert mine["trades"] and all(t["ticker"] == one for t in mine["trades"])


async def test_trade_pages_stay_put_while_trades_keep_coming(sim: Simulator) -> None:
    import base64

    import httpx

    await asyncio.sleep(0.3)  # some trades
    sim.pause()
    one = sim.model.trades[-1].ticker
    async with httpx.AsyncClient(base_url=sim.rest_url, timeout=10) as http:
        for params in ({}, {"ticker": one}):
            expected = [  # newest first
                t.trade_id
                for t in reversed(sim.model.trades)
                if t.ticker == params.get("ticker", t.ticker)
            ]
            ids: list[str] = []
            cursor = ""
            for _ in range(1000):
                body = (
                    await http.get(
                        "/markets/trades", params={**params, "limit": 7, "cursor": cursor}
                    )
                ).json()
                ids += [t["trade_id"] for t in body["trades"]]
                cursor = body["cursor"]
                if not cursor:
                    break
                sim.advance(200)  # new trades land on top between two pages
            # Every trade held when paging began, once, newest first: none repeated because
            # newer ones pushed it down, none skipped.
            assert ids == expected
        bad = base64.urlsafe_b64encode(b"-5").decode()
        assert (await http.get("/markets/trades", params={"cursor": bad})).status_code == 400
        assert (await http.get("/markets", params={"cursor": bad})).status_code == 400


def test_overrides_do_not_touch_the_callers_config(key_dir: Path) -> None:
    cfg = make_config(key_dir)
    sim = Simulator(cfg, rate=5.0, markets=3)
    assert (sim.config.rate, len(sim.markets)) == (5.0, 3)
    assert (cfg.rate, cfg.markets) == (2000.0, 12)
    with pytest.raises(TypeError):
        Simulator(cfg, nonsense=1)


async def test_garbage_on_the_port_never_hurts_the_server(sim: Simulator) -> None:
    import random

    import httpx

    rnd = random.Random(4)
    junk = [
        b"\x00\x01\x02" * 100,
        b"GET / HTTP/1.1\r\n" + b"X: " + b"y" * 70_000 + b"\r\n\r\n",
        b"GET /trade-api/ws/v2 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        b"POST /_sim/control HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{",
        b"GET /trade-api/v2/markets HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        bytes(rnd.getrandbits(8) for _ in range(4096)),
    ]
    for payload in junk:
        reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
        writer.write(payload)
        with contextlib.suppress(ConnectionError, TimeoutError):
            await asyncio.wait_for(reader.read(65536), 1.0)
        writer.close()
    # a signed client whose frames are garbage gets errors, then works normally
    c = Client(await connect(sim))
    await c.ws.send(b"\xff\xfe binary junk")
    assert (await c.until(lambda f: f["type"] == "error"))["msg"]["code"] == 1
    i = await c.send("list_subscriptions")
    assert (await c.response(i))["msg"] == []
    await c.ws.close()
    async with httpx.AsyncClient(timeout=10) as http:
        assert (await http.get(sim.rest_url + "/exchange/status")).status_code == 200
    assert sim._task is not None and not sim._task.done()


async def test_a_body_in_tiny_chunks_is_read_in_linear_time(sim: Simulator) -> None:
    # The body's size was summed over every chunk received so far at each chunk: 40,000
    # one-byte chunks (240 KB) held the simulator's loop 36 s, every client with it.
    reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
    writer.write(b"POST /_sim/control HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    writer.write(b"1\r\n \r\n" * 60_000 + b"0\r\n\r\n")
    started = time.monotonic()
    await writer.drain()
    answer = await asyncio.wait_for(reader.readline(), 30)
    assert answer.startswith(b"HTTP/1.1 400")  # a body of spaces is not a command
    assert time.monotonic() - started < 5.0
    writer.close()


async def test_send_log_gives_each_stamp_its_sub_millisecond_send_time(sim: Simulator) -> None:
    import httpx

    c = Client(await connect(sim))
    i = await c.send("subscribe", {"channels": ["trade"]})
    await c.response(i)
    sim.pause()
    await drain(c)
    before = time.time() * 1000
    sim.advance(50)
    await asyncio.sleep(0.002)
    sim.advance(50)
    after = time.time() * 1000
    await drain(c)
    stamps = {f["msg"]["ts_ms"] for f in c.frames if f["type"] == "trade"}
    async with httpx.AsyncClient(base_url=sim.base_url, timeout=10) as http:
        # From a while before: a trade sent just before the pause may reach the client late.
        since = int(before) - 5_000
        sends = (await http.get("/_sim/sends", params={"since": since})).json()["sends"]
        assert (await http.get("/_sim/sends", params={"since": "x"})).status_code == 400
    logged = dict((int(stamp), at) for stamp, at in sends)
    assert stamps and stamps <= set(logged)
    for stamp in stamps:
        # Sent within the stamp's millisecond or just after it, never before it.
        assert stamp <= logged[stamp] <= after and logged[stamp] - stamp < 50


def test_a_restarted_simulator_makes_new_trade_ids(key_dir: Path) -> None:
    # A store outlives a simulator restart (`marketpulse dev` run again on its data dir) and
    # skips a trade id it already holds: the same seed's run made the last run's ids again,
    # so every trade of the new run was dropped until it outgrew the old one.
    def trade_ids(epoch_ms: int) -> list[str]:
        sim = Simulator(make_config(key_dir, epoch_ms=epoch_ms))
        events = sim.model.generate(3000, epoch_ms)
        return [e.trade_id for e in events if isinstance(e, Trade)]

    first, again, restarted = (
        trade_ids(1_795_000_000_000),
        trade_ids(1_795_000_000_000),
        trade_ids(1_795_000_060_000),
    )
    assert first and first == again  # one seed and epoch: the same run, ids included
    assert not set(first) & set(restarted)
