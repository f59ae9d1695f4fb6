"""Benchmark: marketData:applyUpdates with 200 changed markets and 1,000 live subscriptions.

Runs the real engine (SQLite file in a temp dir) in-process with the marketData module; the
engine counts query runs (``Engine.query_runs``). 1,000 subscriptions are spread over getPrice,
getOrderbook and getRecentTrades of 250 markets; each batch changes 200 of them (a 10-level
book each, a ticker update for every 2nd, a trade for every 5th), as the worker's flush does.

Figures: commit time per batch (p50/p99, the awaited mutation including the re-runs and listener
calls it causes), query re-runs per batch, listener notifications per batch (the engine's
"result changed" calls: what becomes Transitions on the sockets), and sustained batches/s.
Baselines in the same run: the same batches with no subscription (the cost of reactivity), and
the re-runs a one-document-per-market layout would cause (every subscribed query of a changed
market; computed, not run).

    python bench/marketdata_apply.py [--quick]

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _batches import batch, ticker

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from marketpulse.marketdata.functions import marketData
from marketpulse.reactive.engine import Engine, Identity
from marketpulse.reactive.persistence import open_persistence
from marketpulse.testing import percentile

MARKETS = 250
CHANGED = 200
SUBSCRIPTIONS = 1000
QUERIES = ("getPrice", "getOrderbook", "getRecentTrades")


class Listener:
    def __init__(self) -> None:
        self.updates = 0

    def on_query_updated(self, q: Any) -> None:
        self.updates += 1


async def seed_books(engine: Engine, markets: int, subscribers: int) -> None:
    """``markets`` markets with a book each, and ``subscribers`` live ``getOrderbook``
    subscriptions spread over them (the set-up of ``commit_path.py`` and ``durability.py``)."""
    admin = Identity.admin()
    rows = [{"ticker": ticker(i), "title": f"m{i}", "status": "active"} for i in range(markets)]
    await engine.run_mutation("marketData:upsertMarkets", {"markets": rows}, admin)
    seed = {"batch": batch(0, list(range(markets)), packed=False)}
    assert (await engine.run_mutation("marketData:applyUpdates", seed, admin)).success
    for s in range(subscribers):
        args = {"ticker": ticker(s % markets), "depth": 10}
        engine.subscribe("marketData:getOrderbook", args, Identity.anonymous(), Listener())


async def run(batches: int, subscriptions: int, directory: Path, tag: str) -> dict[str, Any]:
    engine = await Engine.open(open_persistence(f"sqlite:{directory / f'{tag}.db'}"), [marketData])
    admin, anon = Identity.admin(), Identity.anonymous()
    try:
        await engine.run_mutation(
            "marketData:upsertMarkets",
            {
                "markets": [
                    {"ticker": ticker(i), "title": f"Bench market {i}", "status": "active"}
                    for i in range(MARKETS)
                ]
            },
            admin,
        )
        seed = await engine.run_mutation(
            "marketData:applyUpdates",
            {"batch": batch(0, list(range(MARKETS)), packed=False)},
            admin,
        )
        assert seed.success, seed.error_message
        listeners: list[Listener] = []
        subs: list[Any] = []
        per_market: dict[int, set[tuple[str, int]]] = {}
        for s in range(subscriptions):
            name = QUERIES[s % 3]
            market = (s * 7) % MARKETS
            args: dict[str, Any] = {"ticker": ticker(market)}
            listener = Listener()
            subs.append(engine.subscribe(f"marketData:{name}", args, anon, listener))
            listeners.append(listener)
            per_market.setdefault(market, set()).add((name, market))
        runs_before = engine.query_runs
        commit_ms: list[float] = []
        naive_reruns = 0
        started = time.perf_counter()
        cpu_started = time.process_time()
        for n in range(1, batches + 1):
            changed = [(n * 37 + k) % MARKETS for k in range(CHANGED)]
            naive_reruns += sum(len(per_market.get(m, ())) for m in set(changed))
            body = {"batch": batch(n, changed, packed=False)}
            t = time.perf_counter()
            r = await engine.run_mutation("marketData:applyUpdates", body, admin)
            await asyncio.sleep(0)  # let anything the engine schedules after the commit run
            commit_ms.append((time.perf_counter() - t) * 1000)
            assert r.success, r.error_message
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
        reruns = engine.query_runs - runs_before
        return {
            "batches": batches,
            "subscriptions": subscriptions,
            "distinct_queries": len(
                {(QUERIES[s % 3], (s * 7) % MARKETS) for s in range(subscriptions)}
            ),
            "commit_p50_ms": round(statistics.median(commit_ms), 3),
            "commit_p99_ms": round(percentile(commit_ms, 99), 3),
            "batches_per_s": round(batches / elapsed, 2),
            # CPU time of this process: less sensitive than wall time to other load on the machine.
            "cpu_ms_per_batch": round(cpu * 1000 / batches, 3),
            "reruns_per_batch": round(reruns / batches, 1),
            "naive_reruns_per_batch": round(naive_reruns / batches, 1),
            "notifications_per_batch": round(sum(lis.updates for lis in listeners) / batches, 1),
        }
    finally:
        await engine.close()


async def wait_quiet(clients: list[Any], quiet_s: float = 0.05, limit_s: float = 10.0) -> None:
    """Until no client has received a Transition for ``quiet_s``."""
    deadline = time.perf_counter() + limit_s
    seen = -1
    while time.perf_counter() < deadline:
        total = sum(len(c.transitions) for c in clients)
        if total == seen:
            return
        seen = total
        await asyncio.sleep(quiet_s)


async def run_server(batches: int, directory: Path) -> dict[str, Any] | None:
    """The same batches through a real ``marketpulse serve`` (HTTP mutations with the admin key),
    1,000 subscriptions over 50 WebSocket connections of the light sync client."""
    try:
        from marketpulse.reactive.sync.client import LightSyncClient
        from marketpulse.testing import AsyncAdminClient, StoreProcess
    except ImportError:
        return None
    store = StoreProcess(directory / "server.db").start()
    url = store.url
    clients: list[Any] = []
    try:
        async with AsyncAdminClient(url, store.admin_key) as http:
            mutate = http.mutation
            await mutate(
                "marketData:applyUpdates", {"batch": batch(0, list(range(MARKETS)), packed=False)}
            )
            for c in range(50):
                client = await LightSyncClient(LightSyncClient.ws_url(url)).connect()
                clients.append(client)
                for s in range(c * 20, c * 20 + 20):
                    q = await client.subscribe(
                        f"marketData:{QUERIES[s % 3]}", {"ticker": ticker((s * 7) % MARKETS)}
                    )
                    await client.wait_for(q, timeout=30)
            await wait_quiet(clients)

            def received() -> tuple[int, int]:
                return (
                    sum(len(c.transitions) for c in clients),
                    sum(len(t.modifications) for c in clients for t in c.transitions),
                )

            # One batch at a time: commit as the worker sees it, and until every push arrived.
            commit_ms: list[float] = []
            delivered_ms: list[float] = []
            before = received()
            for n in range(1, batches + 1):
                marks = [len(c.transitions) for c in clients]
                t0 = time.perf_counter()
                await mutate(
                    "marketData:applyUpdates",
                    {
                        "batch": batch(
                            n, [(n * 37 + k) % MARKETS for k in range(CHANGED)], packed=False
                        )
                    },
                )
                commit_ms.append((time.perf_counter() - t0) * 1000)
                await wait_quiet(clients, 0.03)
                arrivals = [
                    t.received_at
                    for c, m in zip(clients, marks, strict=True)
                    for t in c.transitions[m:]
                ]
                delivered_ms.append((max(arrivals, default=t0) - t0) * 1000)
            after = received()
            # Back to back: the sustained rate; slow sockets may skip to the latest version.
            t0 = time.perf_counter()
            for n in range(batches + 1, 2 * batches + 1):
                await mutate(
                    "marketData:applyUpdates",
                    {
                        "batch": batch(
                            n, [(n * 37 + k) % MARKETS for k in range(CHANGED)], packed=False
                        )
                    },
                )
            sustained = batches / (time.perf_counter() - t0)
            await wait_quiet(clients)
            final = received()
    finally:
        for client in clients:
            await client.close()
        store.stop()
    return {
        "batches": batches,
        "subscriptions": SUBSCRIPTIONS,
        "connections": len(clients),
        "http_commit_p50_ms": round(statistics.median(commit_ms), 3),
        "http_commit_p99_ms": round(percentile(commit_ms, 99), 3),
        "delivered_p50_ms": round(statistics.median(delivered_ms), 3),
        "delivered_p99_ms": round(percentile(delivered_ms, 99), 3),
        "transitions_per_batch": round((after[0] - before[0]) / batches, 1),
        "query_updates_per_batch": round((after[1] - before[1]) / batches, 1),
        "sustained_batches_per_s": round(sustained, 2),
        "sustained_transitions_per_batch": round((final[0] - after[0]) / batches, 1),
    }


async def main_async(quick: bool) -> dict[str, Any]:
    batches = 20 if quick else 200
    with tempfile.TemporaryDirectory() as tmp:
        base = await run(batches, 0, Path(tmp), "baseline")
        live = await run(batches, SUBSCRIPTIONS, Path(tmp), "live")
        server = await run_server(batches, Path(tmp))
    return {
        "server": server,
        "quick": quick,
        "markets": MARKETS,
        "changed_per_batch": CHANGED,
        "baseline": base,
        "live": live,
        "reactivity_overhead_p50": round(live["commit_p50_ms"] / base["commit_p50_ms"], 2),
        "reruns_vs_naive": round(
            live["reruns_per_batch"] / max(live["naive_reruns_per_batch"], 1), 3
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 batches instead of 200")
    args = parser.parse_args()
    result = asyncio.run(main_async(args.quick))
    base, live = result["baseline"], result["live"]
    rows = [
        ("commit p50 (ms)", base["commit_p50_ms"], live["commit_p50_ms"]),
        ("commit p99 (ms)", base["commit_p99_ms"], live["commit_p99_ms"]),
        ("sustained batches/s", base["batches_per_s"], live["batches_per_s"]),
        ("CPU ms / batch (this process)", base["cpu_ms_per_batch"], live["cpu_ms_per_batch"]),
        ("query re-runs / batch", base["reruns_per_batch"], live["reruns_per_batch"]),
        (
            "re-runs / batch, one-doc-per-market layout (computed)",
            "-",
            live["naive_reruns_per_batch"],
        ),
        (
            "listener notifications / batch",
            base["notifications_per_batch"],
            live["notifications_per_batch"],
        ),
    ]
    print(
        f"applyUpdates: {CHANGED} changed markets of {MARKETS}, {live['batches']} batches, "
        f"{live['subscriptions']} subscriptions ({live['distinct_queries']} distinct queries)"
    )
    print(f"{'figure':<56}{'no subscriptions':>18}{'1,000 subscriptions':>22}")
    for label, b, v in rows:
        print(f"{label:<56}{b!s:>18}{v!s:>22}")
    server = result["server"]
    if server is None:
        print("through marketpulse serve: skipped (the server is not on this branch)")
    else:
        print(
            f"through marketpulse serve: {server['subscriptions']} subscriptions on "
            f"{server['connections']} WebSocket connections (light sync client)"
        )
        for label, value in [
            (
                "HTTP applyUpdates round trip p50 / p99 (ms)",
                f"{server['http_commit_p50_ms']} / {server['http_commit_p99_ms']}",
            ),
            (
                "send -> last Transition received p50 / p99 (ms)",
                f"{server['delivered_p50_ms']} / {server['delivered_p99_ms']}",
            ),
            ("Transitions received / batch", server["transitions_per_batch"]),
            ("QueryUpdated received / batch", server["query_updates_per_batch"]),
            ("sustained batches/s (back to back)", server["sustained_batches_per_s"]),
            ("Transitions / batch when back to back", server["sustained_transitions_per_batch"]),
        ]:
            print(f"{label:<56}{value!s:>40}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
