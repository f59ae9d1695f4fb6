"""A small, real WebSocket exchange for feed tests: signed handshake, sids, seqs, faults.

It speaks just enough of Kalshi WS v2 (subscribe / update_subscription / unsubscribe /
list_subscriptions; snapshots, deltas, trades) to drive :class:`KalshiFeed` over a real socket.
The full simulator lives in ``marketpulse.simulator``; this one is tiny and fully scripted.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from marketpulse.kalshi import (
    KalshiCredentials,
    generate_private_key_pem,
    load_public_key,
    verify_headers,
)


@dataclass
class _Conn:
    ws: ServerConnection
    sids: dict[int, tuple[str, set[str]]] = field(default_factory=dict)
    seq: dict[int, int] = field(default_factory=dict)


class StubExchange:
    def __init__(self) -> None:
        self.creds = KalshiCredentials.from_pem("stub-key", generate_private_key_pem())
        self._pub = load_public_key(self.creds.public_key_pem())
        self.books: dict[str, dict[str, dict[Decimal, Decimal]]] = {}
        self.conns: list[_Conn] = []
        self.commands: list[dict[str, Any]] = []
        self.handshakes_refused = 0
        self.connections_total = 0
        self.stalled = False
        self._server: Server | None = None
        self.url = ""

    def add_market(self, ticker: str, yes: dict[str, str], no: dict[str, str]) -> None:
        self.books[ticker] = {
            "yes": {Decimal(p): Decimal(s) for p, s in yes.items()},
            "no": {Decimal(p): Decimal(s) for p, s in no.items()},
        }

    def freeze(self) -> None:
        """Hang every connection like a dead peer: stop reading, so pings go unanswered."""
        self.stalled = True
        for c in self.conns:
            c.ws.transport.pause_reading()

    def levels(self, ticker: str) -> dict[str, list[tuple[Decimal, Decimal]]]:
        b = self.books[ticker]
        return {side: sorted(b[side].items()) for side in ("yes", "no")}

    async def start(self) -> None:
        self._server = await serve(
            self._handler, "127.0.0.1", 0, process_request=self._auth, ping_interval=None
        )
        port = next(iter(self._server.sockets)).getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}/trade-api/ws/v2"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def _auth(self, conn: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if not verify_headers(self._pub, request.headers, "GET", path, key_id=self.creds.key_id):
            self.handshakes_refused += 1
            return conn.respond(401, "authentication required\n")
        return None

    async def _send(
        self, c: _Conn, obj: dict[str, Any], sid: int | None = None, skip: bool = False
    ) -> None:
        if sid is not None:
            c.seq[sid] = c.seq.get(sid, 0) + (2 if skip else 1)
            obj["sid"], obj["seq"] = sid, c.seq[sid]
        with contextlib.suppress(Exception):
            await c.ws.send(orjson.dumps(obj).decode())

    def _snapshot(self, ticker: str) -> dict[str, Any]:
        msg: dict[str, Any] = {"market_ticker": ticker, "market_id": "m-" + ticker}
        for side in ("yes", "no"):
            lv = sorted(self.books[ticker][side].items())
            if lv:  # empty sides are omitted, like the exchange does
                msg[f"{side}_dollars_fp"] = [[f"{p:.4f}", f"{s:.2f}"] for p, s in lv]
        return {"type": "orderbook_snapshot", "msg": msg}

    async def _handler(self, ws: ServerConnection) -> None:
        c = _Conn(ws)
        self.conns.append(c)
        self.connections_total += 1
        next_sid = 1
        try:
            async for raw in ws:
                cmd = orjson.loads(raw)
                self.commands.append(cmd)
                cid, params = cmd.get("id"), cmd.get("params", {})
                if cmd["cmd"] == "subscribe":
                    for ch in params["channels"]:
                        sid, next_sid = next_sid, next_sid + 1
                        tickers = set(params.get("market_tickers", []))
                        c.sids[sid] = (ch, tickers)
                        await self._send(
                            c, {"id": cid, "type": "subscribed", "msg": {"channel": ch, "sid": sid}}
                        )
                        if ch == "orderbook_delta":
                            for t in params["market_tickers"]:
                                await self._send(c, self._snapshot(t), sid)
                elif cmd["cmd"] == "update_subscription":
                    sid = params["sids"][0]
                    ch, tickers = c.sids[sid]
                    action = params["action"]
                    if action == "add_markets":
                        tickers.update(params["market_tickers"])
                        await self._send(
                            c,
                            {"id": cid, "type": "ok", "msg": {"market_tickers": sorted(tickers)}},
                            sid,
                        )
                        if ch == "orderbook_delta":
                            for t in params["market_tickers"]:
                                await self._send(c, self._snapshot(t), sid)
                    elif action == "delete_markets":
                        tickers.difference_update(params["market_tickers"])
                        await self._send(
                            c,
                            {"id": cid, "type": "ok", "msg": {"market_tickers": sorted(tickers)}},
                            sid,
                        )
                    elif action == "get_snapshot":
                        for t in params["market_tickers"]:
                            snap = self._snapshot(t)
                            snap["id"] = cid
                            await self._send(c, snap, sid)
                elif cmd["cmd"] == "unsubscribe":
                    for sid in params["sids"]:
                        c.sids.pop(sid, None)
                        await self._send(c, {"id": cid, "type": "unsubscribed"}, sid)
                elif cmd["cmd"] == "list_subscriptions":
                    subs = [{"channel": ch, "sid": s} for s, (ch, _) in c.sids.items()]
                    await self._send(c, {"id": cid, "type": "ok", "msg": subs})
        except Exception:
            pass
        finally:
            self.conns.remove(c)

    async def delta(
        self,
        ticker: str,
        side: str,
        price: str,
        d: str,
        *,
        skip: bool = False,
        duplicate: bool = False,
    ) -> None:
        p, dd = Decimal(price), Decimal(d)
        lv = self.books[ticker][side]
        new = lv.get(p, Decimal(0)) + dd
        assert new >= 0
        if new:
            lv[p] = new
        else:
            lv.pop(p, None)
        for c in list(self.conns):
            for sid, (ch, tickers) in list(c.sids.items()):
                if ch == "orderbook_delta" and ticker in tickers and not self.stalled:
                    frame = {
                        "type": "orderbook_delta",
                        "msg": {
                            "market_ticker": ticker,
                            "market_id": "m",
                            "price_dollars": f"{p:.4f}",
                            "delta_fp": f"{dd:.2f}",
                            "side": side,
                            "ts_ms": 1,
                        },
                    }
                    await self._send(c, frame, sid, skip=skip)
                    if duplicate:
                        c.seq[sid] -= 1
                        await self._send(c, dict(frame), sid)

    async def trade(self, ticker: str, n: int) -> None:
        for c in list(self.conns):
            for sid, (ch, tickers) in list(c.sids.items()):
                if ch == "trade" and ticker in tickers:
                    await self._send(
                        c,
                        {
                            "type": "trade",
                            "msg": {
                                "trade_id": f"t{n}",
                                "market_ticker": ticker,
                                "yes_price_dollars": "0.5000",
                                "no_price_dollars": "0.5000",
                                "count_fp": "1.00",
                                "taker_outcome_side": "yes",
                                "ts_ms": n,
                            },
                        },
                        sid,
                    )

    async def drop_all(self) -> None:
        for c in list(self.conns):
            await c.ws.close()
