"""Commit-to-receipt latency of one query's updates fanned out to many WebSocket subscribers.

A real ``marketpulse serve`` runs in a subprocess (fresh SQLite file). Subscriber processes open
N WebSockets with the lean spec client (``RawSubscriber`` in marketpulse.reactive.sync.client,
websockets' sans-I/O protocol; a test checks it sees what the official client sees), all
subscribed to ``bench:latest``, each Transition timestamped as its bytes are parsed. A writer commits
``bench:stamp`` once per round, spaced so rounds don't overlap; the mutation stamps wall-clock
time inside itself, and each subscriber records when the Transition carrying that stamp
arrived. Baseline in the same run: the same rounds with a single subscriber.

    python bench/sync_latency.py [--quick] [--subscribers 1000] [--rounds N] [--procs 2]

Prints a table, then one JSON line with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
sys.path.insert(0, str(SRC))

import httpx  # noqa: E402

from _clients import _exit_with_parent, _quiet_gc  # noqa: E402
from _common import FLEET_FLAGS, emit, loop_summary, scrape_loop  # noqa: E402
from marketpulse.reactive.sync.client import LightSyncClient, RawSubscriber  # noqa: E402
from marketpulse.testing import StoreProcess, percentile  # noqa: E402


async def _subscribers(url: str, n: int, ready: Any, go: Any, out: Any, rounds: int) -> None:
    receipts: list[tuple[int, int]] = []
    done = asyncio.Event()
    finished = 0  # subscribers that saw the last round (a count: O(1) per receipt)

    def on_transition(message: dict[str, Any], received_ns: int) -> None:
        nonlocal finished
        for mod in message["modifications"]:
            value = mod.get("value")
            if isinstance(value, dict) and "stampNs" in value:
                seq = int(value["seq"])
                receipts.append((seq, received_ns - int(value["stampNs"])))
                if seq == rounds:
                    finished += 1
                    if finished == n:
                        done.set()

    loop = asyncio.get_running_loop()
    host_port = url.split("//", 1)[1].split("/", 1)[0]
    host, port = host_port.rsplit(":", 1)
    subscribers = []
    for _ in range(n):
        _, sub = await loop.create_connection(
            lambda: RawSubscriber(url, "bench:latest", {}, on_transition),
            host,
            int(port),
        )
        subscribers.append(sub)
    await asyncio.gather(*(s.subscribed for s in subscribers))
    _quiet_gc()  # as bench/_clients.py's fleets: no collector pauses in the receipts
    ready.set()
    await loop.run_in_executor(None, go.wait)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done.wait(), timeout=30 + rounds)
    out.send([r for r in receipts if r[0] > 0])
    for sub in subscribers:
        sub.close()


def subscriber_proc(url: str, n: int, ready: Any, go: Any, out: Any, rounds: int) -> None:
    _exit_with_parent()
    asyncio.run(_subscribers(url, n, ready, go, out, rounds))


async def _write_rounds(url: str, rounds: int, gap_s: float) -> None:
    writer = await LightSyncClient(url, keep_transitions=False).connect()
    for seq in range(1, rounds + 1):
        response = await writer.request("Mutation", "bench:stamp", {"seq": seq})
        if not response["success"]:
            raise RuntimeError(response)
        await asyncio.sleep(gap_s)
    await writer.close()


def fanout_seconds(http_url: str) -> tuple[float, float, float]:
    """The server's own fan-out figures from /metrics: (wall s sum, count, cpu s sum)."""
    text = httpx.get(http_url + "/metrics", timeout=10).text
    values = {}
    for line in text.splitlines():
        for name in ("fanout_seconds_sum", "fanout_seconds_count", "fanout_cpu_seconds_total"):
            if line.startswith("marketpulse_sync_" + name + " "):
                values[name] = float(line.split()[-1])
    return (
        values.get("fanout_seconds_sum", 0.0),
        values.get("fanout_seconds_count", 0.0),
        values.get("fanout_cpu_seconds_total", 0.0),
    )


def measure(url: str, subscribers: int, procs: int, rounds: int, gap_s: float) -> list[int]:
    """Latencies in ns of every (subscriber, round) receipt."""
    ctx = mp.get_context("spawn")
    go = ctx.Event()
    workers = []
    per = [subscribers // procs + (1 if i < subscribers % procs else 0) for i in range(procs)]
    for n in per:
        if n == 0:
            continue
        ready = ctx.Event()
        parent, child = ctx.Pipe(duplex=False)
        p = ctx.Process(target=subscriber_proc, args=(url, n, ready, go, child, rounds))
        p.start()
        workers.append((p, ready, parent))
    # The first write creates the document every subscriber then waits for (seq 0).
    asyncio.run(_seed(url))
    for _, ready, _ in workers:
        if not ready.wait(120):
            raise RuntimeError("subscribers did not get ready")
    go.set()
    time.sleep(0.3)
    asyncio.run(_write_rounds(url, rounds, gap_s))
    latencies: list[int] = []
    for p, _, parent in workers:
        latencies.extend(lat for _, lat in parent.recv())
        p.join(30)
    return latencies


async def _seed(url: str) -> None:
    writer = await LightSyncClient(url, keep_transitions=False).connect()
    await writer.request("Mutation", "bench:stamp", {"seq": 0})
    await writer.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--subscribers", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--gap", type=float, default=0.1, help="seconds between commits")
    ap.add_argument("--url", help="use a running store serving sync_latency_app instead")
    args = ap.parse_args()
    rounds = args.rounds or (20 if args.quick else 100)

    loop: dict[str, Any] = {}

    def run(http_url: str) -> tuple[list[int], list[int], float, float]:
        url = LightSyncClient.ws_url(http_url)
        base = measure(url, 1, 1, rounds, args.gap)
        before = fanout_seconds(http_url)
        with httpx.Client(timeout=10) as http:
            lag_before = scrape_loop(http, http_url)
            fan = measure(url, args.subscribers, args.procs, rounds, args.gap)
            # The store's event loop over the fan-out run (its /metrics histograms).
            loop.update(loop_summary(lag_before, scrape_loop(http, http_url)))
        after = fanout_seconds(http_url)
        # One commit per round; the histogram counts loop turns (a wide fan-out takes several).
        commits = rounds
        server_ms = (after[0] - before[0]) / commits * 1000 if commits else float("nan")
        cpu_ms = (after[2] - before[2]) / commits * 1000 if commits else float("nan")
        return base, fan, server_ms, cpu_ms

    if args.url:
        base, fan, server_ms, cpu_ms = run(args.url)
    else:
        with (
            tempfile.TemporaryDirectory() as tmp,
            StoreProcess(
                Path(tmp) / "bench.sqlite",
                functions="sync_latency_app",
                pythonpath=[HERE],
                env={"MARKETPULSE_LOG_LEVEL": "warning"},
                extra=FLEET_FLAGS,
            ) as store,
        ):
            base, fan, server_ms, cpu_ms = run(store.url)

    expected = args.subscribers * rounds
    rows = [
        ("1 subscriber (baseline)", base, rounds),
        (f"{args.subscribers} subscribers", fan, expected),
    ]
    print(f"{'case':<28}{'receipts':>12}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}")
    for name, lat, want in rows:
        print(
            f"{name:<28}{f'{len(lat)}/{want}':>12}{percentile(lat, 50) / 1e6:>10.2f}"
            f"{percentile(lat, 99) / 1e6:>10.2f}{(max(lat) / 1e6 if lat else float('nan')):>10.2f}"
        )
    print(
        f"server-side fan-out per commit (write to all {args.subscribers}): "
        f"{server_ms:.2f} ms wall, {cpu_ms:.2f} ms CPU"
    )
    if loop:
        print(
            f"store event loop during the fan-out: lag p50/p99/p999 {loop['p50_ms']:.2f} / "
            f"{loop['p99_ms']:.2f} / {loop['p999_ms']:.2f} ms, largest <= {loop['max_le_ms']:g} "
            f"ms; gen-2 GCs {loop['gc2_pauses']:g}, largest <= {loop['gc2_max_le_ms']:g} ms "
            f"(CPU <= {loop['gc2_cpu_max_le_ms']:g} ms)"
        )
    load = os.getloadavg()[0]
    print(f"load average during the run: {load:.2f} on {os.cpu_count()} cpus")
    figures = {
        "bench": "sync_latency",
        "subscribers": args.subscribers,
        "rounds": rounds,
        "client_procs": args.procs,
        "baseline_p50_ms": round(percentile(base, 50) / 1e6, 3),
        "baseline_p99_ms": round(percentile(base, 99) / 1e6, 3),
        "p50_ms": round(percentile(fan, 50) / 1e6, 3),
        "p99_ms": round(percentile(fan, 99) / 1e6, 3),
        "max_ms": round(max(fan) / 1e6, 3) if fan else None,
        "mean_ms": round(statistics.fmean(fan) / 1e6, 3) if fan else None,
        "receipts": len(fan),
        "expected_receipts": expected,
        "server_fanout_ms_per_commit": round(server_ms, 3),
        "server_fanout_cpu_ms_per_commit": round(cpu_ms, 3),
        "load_avg_1m": round(load, 2),
        "goal_p99_ms": 20,
        "cpus": os.cpu_count(),
        "loop": loop,
    }
    emit(figures)


if __name__ == "__main__":
    main()
