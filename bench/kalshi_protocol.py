"""Bench: Kalshi protocol core and feed throughput.

1. Core: ``orderbook_delta`` frames per second that :class:`KalshiProtocol` parses (orjson),
   seq-checks and applies to exact Decimal books, on one core (goal >= 100,000/s). Baseline in
   the same run: bare ``orjson.loads`` of the same frames; the ratio is reported.
2. Feed: frames per second :class:`KalshiFeed` takes over loopback from a WebSocket server in
   another process that blasts pre-built delta frames (signed handshake, subscribe, snapshots,
   then deltas), until every book equals the server's. Baseline: a bare ``websockets`` client
   receiving the same frames and doing nothing with them.
3. Feed against the simulator (``marketpulse.simulator``), when it is installed: messages per
   second at its highest configured rate, and whether every book matched the simulator's.

Usage: python bench/kalshi_protocol.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import random
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import orjson

from _common import print_table
from marketpulse.kalshi import (
    KalshiCredentials,
    KalshiFeed,
    KalshiProtocol,
    generate_private_key_pem,
)

MARKETS = [f"KXBTCD-26NOV2417-T{90000 + 250 * i}.99" for i in range(50)]


def make_stream(n: int, seed: int = 7) -> tuple[list[bytes], list[bytes], dict[str, Any]]:
    """Snapshots for every market, then ``n`` valid deltas (sizes never negative), as frames."""
    rnd = random.Random(seed)
    books: dict[str, dict[str, dict[str, int]]] = {}
    snaps: list[bytes] = []
    seq = 0
    for t in MARKETS:
        yes = {f"{c / 100:.4f}": rnd.randint(1, 500) * 100 for c in range(20, 45)}
        # NO bids on the same 20-44 cent band: best YES bid + best NO bid stays under $1 (a
        # crossed book is invalid and recovered, docs/protocols/kalshi.md §5).
        no = {f"{c / 100:.4f}": rnd.randint(1, 500) * 100 for c in range(20, 45)}
        # A few sub-penny levels at the edges, as on center_deci_edge_centi_cent markets.
        yes["0.0050"] = 1000
        no["0.0075"] = 250
        books[t] = {"yes": yes, "no": no}
        seq += 1
        snaps.append(
            orjson.dumps(
                {
                    "type": "orderbook_snapshot",
                    "sid": 1,
                    "seq": seq,
                    "msg": {
                        "market_ticker": t,
                        "market_id": "m",
                        "yes_dollars_fp": [[p, f"{s / 100:.2f}"] for p, s in sorted(yes.items())],
                        "no_dollars_fp": [[p, f"{s / 100:.2f}"] for p, s in sorted(no.items())],
                    },
                }
            )
        )
    deltas: list[bytes] = []
    ts = 1_764_000_000_000
    for _ in range(n):
        t = rnd.choice(MARKETS)
        side = rnd.choice(("yes", "no"))
        lv = books[t][side]
        price = rnd.choice(list(lv)) if rnd.random() < 0.8 else f"{rnd.randint(1, 49) / 100:.4f}"
        cur = lv.get(price, 0)
        d = rnd.randint(-cur, 300 * 100) if cur else rnd.randint(1, 300 * 100)
        new = cur + d
        if new:
            lv[price] = new
        else:
            lv.pop(price, None)
        seq += 1
        ts += 1
        deltas.append(
            orjson.dumps(
                {
                    "type": "orderbook_delta",
                    "sid": 1,
                    "seq": seq,
                    "msg": {
                        "market_ticker": t,
                        "market_id": "m",
                        "price_dollars": price,
                        "delta_fp": f"{d / 100:.2f}",
                        "side": side,
                        "ts": "2026-11-24T12:00:00Z",
                        "ts_ms": ts,
                    },
                }
            )
        )
    final = {
        t: {
            side: sorted((Decimal(p), Decimal(s) / 100) for p, s in b[side].items())
            for side in ("yes", "no")
        }
        for t, b in books.items()
    }
    return snaps, deltas, final


def connected_core() -> KalshiProtocol:
    p = KalshiProtocol(MARKETS, ("orderbook_delta",))
    p.connection_made(0.0)
    cmd = json.loads(p.data_to_send()[0])
    p.receive_data(
        orjson.dumps(
            {"id": cmd["id"], "type": "subscribed", "msg": {"channel": "orderbook_delta", "sid": 1}}
        )
    )
    return p


def bench_core(n: int, repeats: int) -> dict[str, Any]:
    snaps, deltas, final = make_stream(n)
    best_core = best_base = float("inf")
    ok = True
    for _ in range(repeats):
        loads = orjson.loads
        t0 = time.perf_counter()
        for f in deltas:
            loads(f)
        best_base = min(best_base, time.perf_counter() - t0)
        p = connected_core()
        for s in snaps:
            p.receive_data(s)
        p.events_received()
        # What the driver does per frame: the frame in, then drain what happened.
        recv, drain = p.receive_data, p.events_received
        t0 = time.perf_counter()
        for f in deltas:
            recv(f)
            drain()
        best_core = min(best_core, time.perf_counter() - t0)
        ok = ok and p.stats.gaps == 0 and all(p.books[t].levels() == final[t] for t in MARKETS)
    return {
        "deltas": n,
        "core_deltas_per_s": n / best_core,
        "orjson_loads_per_s": n / best_base,
        "core_us_per_delta": best_core / n * 1e6,
        "core_vs_bare_loads": best_base / best_core,
        "books_exact": ok,
    }


# -- feed over loopback -------------------------------------------------------------------------


def _blaster(port_q: Any, pub_pem: bytes, n: int) -> None:
    """Child process: a WebSocket server that answers subscribe and then blasts deltas."""
    from websockets.asyncio.server import serve

    from marketpulse.kalshi import load_public_key, verify_headers

    snaps, deltas, _ = make_stream(n)
    pub = load_public_key(pub_pem)

    def auth(conn: Any, request: Any) -> Any:
        if not verify_headers(pub, request.headers, "GET", request.path.split("?")[0]):
            return conn.respond(401, "no\n")
        return None

    async def handler(ws: Any) -> None:
        async for raw in ws:
            cmd = orjson.loads(raw)
            if cmd.get("cmd") == "subscribe":
                await ws.send(
                    orjson.dumps(
                        {
                            "id": cmd["id"],
                            "type": "subscribed",
                            "msg": {"channel": "orderbook_delta", "sid": 1},
                        }
                    ).decode()
                )
                for f in snaps:
                    await ws.send(f.decode())
                for f in deltas:
                    await ws.send(f.decode())

    async def main() -> None:
        async with serve(
            handler, "127.0.0.1", 0, process_request=auth, ping_interval=None, max_queue=None
        ) as server:
            port_q.put(next(iter(server.sockets)).getsockname()[1])
            await asyncio.Future()

    asyncio.run(main())


async def _bare_client(url: str, creds: KalshiCredentials, total: int) -> float:
    from websockets.asyncio.client import connect

    t0 = time.perf_counter()  # same window as the feed: connect .. last frame
    async with connect(
        url,
        additional_headers=creds.headers("GET", "/trade-api/ws/v2"),
        max_size=None,
        proxy=None,
    ) as ws:
        await ws.send(
            json.dumps(
                {
                    "id": 1,
                    "cmd": "subscribe",
                    "params": {"channels": ["orderbook_delta"], "market_tickers": MARKETS},
                }
            )
        )
        await ws.recv()
        for _ in range(total):
            await ws.recv(decode=False)
        return time.perf_counter() - t0


async def _feed_client(
    url: str, creds: KalshiCredentials, n: int, final: dict[str, Any]
) -> tuple[float, bool]:
    feed = KalshiFeed(
        url, creds, MARKETS, ("orderbook_delta",), reconnect_delay=0.1, stale_after=60
    )
    t0 = time.perf_counter()  # connect .. last delta applied (polled every 2 ms)
    async with feed:
        async with asyncio.timeout(300):
            while feed.protocol.stats.deltas < n:
                feed.drain()  # a consumer that keeps up with coalesced book notifications
                await asyncio.sleep(0.002)
        elapsed = time.perf_counter() - t0
        exact = all(feed.books[t].valid and feed.books[t].levels() == final[t] for t in MARKETS)
    return elapsed, exact


def bench_feed(n: int) -> dict[str, Any]:
    pem = generate_private_key_pem()
    creds = KalshiCredentials.from_pem("bench", pem)
    _, _, final = make_stream(n)
    ctx = mp.get_context("spawn")
    out: dict[str, Any] = {"feed_frames": n + len(MARKETS)}
    for mode in ("bare", "feed"):
        q = ctx.Queue()
        proc = ctx.Process(target=_blaster, args=(q, creds.public_key_pem(), n), daemon=True)
        proc.start()
        try:
            port = q.get(timeout=60)
            url = f"ws://127.0.0.1:{port}/trade-api/ws/v2"
            if mode == "bare":
                el = asyncio.run(_bare_client(url, creds, n + len(MARKETS)))
                out["bare_websockets_frames_per_s"] = (n + len(MARKETS)) / el
            else:
                el, exact = asyncio.run(_feed_client(url, creds, n, final))
                out["feed_frames_per_s"] = (n + len(MARKETS)) / el
                out["feed_books_exact"] = exact
        finally:
            proc.terminate()
            proc.join(5)
    out["feed_vs_bare"] = out["feed_frames_per_s"] / out["bare_websockets_frames_per_s"]
    return out


async def _sim_run(seconds: float) -> dict[str, Any] | None:
    try:
        from marketpulse.simulator import Simulator, SimulatorConfig
    except ImportError:
        return None
    with tempfile.TemporaryDirectory():
        sim = Simulator(
            SimulatorConfig(host="127.0.0.1", port=0, markets=50, rate=20_000.0, seed=1)
        )
        await sim.start()
        try:
            creds = KalshiCredentials.from_file(sim.key_id, sim.private_key_path)
            tickers = sorted(sim.markets)[:50]
            feed = KalshiFeed(sim.ws_url, creds, tickers, reconnect_delay=0.1)
            async with feed:
                async with asyncio.timeout(30):
                    while feed.stats.books_valid < len(tickers):
                        feed.drain()
                        await asyncio.sleep(0.01)
                m0, t0 = feed.protocol.stats.messages, time.perf_counter()
                end = t0 + seconds
                while time.perf_counter() < end:
                    feed.drain()
                    await asyncio.sleep(0.01)
                rate = (feed.protocol.stats.messages - m0) / (time.perf_counter() - t0)
                # Recovery latency: a skipped seq on the book sid, until every book is valid
                # again (get_snapshot round trip for all 50 markets), under the same load.
                recoveries: list[float] = []
                want = 5 if seconds < 5 else 20
                for _ in range(want * 4):
                    if len(recoveries) >= want:
                        break
                    gaps = feed.protocol.stats.gaps
                    started = sum(feed.protocol.stats.recoveries.values())
                    sim.faults.skip_seq(1)
                    async with asyncio.timeout(30):
                        while feed.protocol.stats.gaps == gaps:
                            feed.drain()
                            await asyncio.sleep(0.001)
                        t_gap = time.perf_counter()
                        while feed.protocol.recovery_level is not None or (
                            feed.stats.books_valid < len(tickers)
                        ):
                            feed.drain()
                            await asyncio.sleep(0.001)
                    if sum(feed.protocol.stats.recoveries.values()) > started:
                        # the skipped frame was on the book sid (not a trade): a real recovery
                        recoveries.append((time.perf_counter() - t_gap) * 1000)
                    await asyncio.sleep(0.1)
                recoveries.sort()
                sim.pause()
                await asyncio.sleep(0.5)
                feed.drain()
                exact = all(
                    feed.books[t].valid and feed.books[t].levels() == sim.book_levels(t)
                    for t in tickers
                )
        finally:
            await sim.stop()
    return {
        "sim_messages_per_s": rate,
        "sim_books_exact": exact,
        "gap_recovery_ms_p50": recoveries[len(recoveries) // 2] if recoveries else None,
        "gap_recovery_ms_max": recoveries[-1] if recoveries else None,
        "gap_recoveries_measured": len(recoveries),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer frames")
    args = parser.parse_args()
    n_core = 50_000 if args.quick else 300_000
    n_feed = 30_000 if args.quick else 200_000
    core = bench_core(n_core, 3)
    feed = bench_feed(n_feed)
    sim = None
    try:
        sim = asyncio.run(_sim_run(3.0 if args.quick else 10.0))
    except Exception as exc:  # the simulator is another package; report, don't fail the bench
        print(f"simulator run skipped: {type(exc).__name__}: {exc}", file=sys.stderr)
    rows = [
        (
            "core: protocol parse+seq+apply",
            f"{core['core_deltas_per_s']:,.0f} deltas/s",
            f"{core['core_us_per_delta']:.2f} us/delta",
        ),
        (
            "baseline: orjson.loads only",
            f"{core['orjson_loads_per_s']:,.0f} frames/s",
            f"core/bare = {core['core_vs_bare_loads']:.2f}",
        ),
        (
            "feed over loopback (KalshiFeed)",
            f"{feed['feed_frames_per_s']:,.0f} frames/s",
            f"books exact: {feed['feed_books_exact']}",
        ),
        (
            "baseline: bare websockets recv",
            f"{feed['bare_websockets_frames_per_s']:,.0f} frames/s",
            f"feed/bare = {feed['feed_vs_bare']:.2f}",
        ),
    ]
    if sim:
        rows.append(
            (
                "feed vs simulator (rate 20k/s asked)",
                f"{sim['sim_messages_per_s']:,.0f} msgs/s",
                f"books exact: {sim['sim_books_exact']}",
            )
        )
    if sim and sim["gap_recoveries_measured"]:
        rows.append(
            (
                "gap -> all 50 books valid again",
                f"p50 {sim['gap_recovery_ms_p50']:.1f} ms",
                f"max {sim['gap_recovery_ms_max']:.1f} ms (get_snapshot, under load)",
            )
        )
    print_table("kalshi_protocol", ["measure", "throughput", "note"], rows)
    figures: dict[str, Any] = {"bench": "kalshi_protocol", "quick": args.quick, **core, **feed}
    if sim:
        figures.update(sim)
    figures["goal_core_deltas_per_s"] = 100_000
    figures["goal_met"] = core["core_deltas_per_s"] >= 100_000
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()}))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
