"""The worker's write path: one mutation round trip over HTTP vs over the sync WebSocket.

The pipeline writes every batch with one mutation and waits for it before the next, so the
round trip is on the end-to-end latency path. This runs ``bench:stamp`` back to back against
one ``marketpulse serve``: over HTTP (the pipeline's ``StoreClient``, httpx, keep-alive) and
over a sync WebSocket (``Mutation`` → ``MutationResponse``), alternating blocks of calls so
both see the same machine. Prints p50/p99 per transport, the server CPU per call of each and
the ratios.

    python bench/store_write_path.py [--calls 2000] [--quick]

``--pipelined``: one official npm ``ConvexClient`` (tests/js/pace.mjs, node) sends
``bench:stamp`` without awaiting each, paced at ``--rate`` (1,000/s) and then as fast as its
window of ``--window`` mutations in flight allows, for ``--seconds`` each, against SQLite or
PostgreSQL (``--db``): achieved rate and latency (from each mutation's paced turn to its
promise resolving) p50/p99/max. With ``--before SRC`` (e.g. ``../before/src``, a checkout
whose store ran one connection's mutations one at a time) the same runs on that code first:
figures side by side with the ratios.

    python bench/store_write_path.py --pipelined --db sqlite --before ../before/src
    python bench/store_write_path.py --pipelined --db postgres --before ../before/src
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import BENCH, ROOT, cpu_seconds, emit, print_table, summarize_with_cpu
from marketpulse.pipeline._store import StoreClient
from marketpulse.reactive.sync.client import LightSyncClient
from marketpulse.testing import StoreProcess

BLOCK = 100


async def measure(
    calls: int, pid: int, transports: dict[str, Callable[[int], Awaitable[object]]]
) -> dict[str, dict[str, float]]:
    samples: dict[str, list[float]] = {name: [] for name in transports}
    cpu: dict[str, float] = dict.fromkeys(transports, 0.0)
    seq = 0
    for _ in range(max(1, calls // BLOCK)):
        for name, call in transports.items():
            before = cpu_seconds(pid)
            for _ in range(BLOCK):
                seq += 1
                start = time.perf_counter()
                await call(seq)
                samples[name].append((time.perf_counter() - start) * 1000)
            cpu[name] += cpu_seconds(pid) - before
    return summarize_with_cpu(samples, cpu, "server_cpu_us_per_call")


async def run(calls: int) -> dict[str, object]:
    with (
        tempfile.TemporaryDirectory() as tmp,
        StoreProcess(
            Path(tmp) / "store.sqlite", functions="sync_latency_app", pythonpath=[BENCH]
        ) as store,
    ):
        url, key = store.url, store.admin_key
        http = StoreClient(url, key, transport="http")
        ws = await LightSyncClient(LightSyncClient.ws_url(url), keep_transitions=False).connect()
        await ws.authenticate("Admin", key)

        async def over_http(seq: int) -> object:
            return await http.mutation("bench:stamp", {"seq": seq})

        async def over_ws(seq: int) -> object:
            response = await ws.request("Mutation", "bench:stamp", {"seq": seq})
            if not response.get("success"):
                raise RuntimeError(str(response))
            return response

        transports = {"http": over_http, "websocket": over_ws}
        await measure(BLOCK, store.pid, transports)  # warm up both
        figures = await measure(calls, store.pid, transports)
        await http.aclose()
        await ws.close()
    h, w = figures["http"], figures["websocket"]
    return {
        "bench": "store_write_path",
        "calls": calls,
        **figures,
        "ws_vs_http_p50": round(w["p50_ms"] / h["p50_ms"], 2),
        "ws_vs_http_p99": round(w["p99_ms"] / h["p99_ms"], 2),
        "ws_vs_http_cpu": round(w["server_cpu_us_per_call"] / h["server_cpu_us_per_call"], 2),
    }


# -- --pipelined: one official-client connection sending without awaiting each ----------------

PACE = ROOT / "tests" / "js" / "pace.mjs"
GOAL_RATE = 1000.0


def _pace(url: str, rate: float, seconds: float, window: int) -> dict[str, Any]:
    out = subprocess.run(
        ["node", str(PACE), url, "bench:stamp", str(rate), str(seconds), str(window)],
        cwd=PACE.parent,
        capture_output=True,
        text=True,
        timeout=seconds + 90,
        check=True,
    )
    raw: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    raw["achieved_per_s"] = round(raw["acked"] / max(1e-9, raw["seconds"]), 1)
    for name in ("p50", "p99", "max"):
        value = raw.pop(name)
        raw[f"{name}_ms"] = round(value, 2) if value is not None else float("nan")
    return raw


@contextlib.contextmanager
def _store(db: str, folder: Path, tag: str, src: str | None, pg: str) -> Iterator[StoreProcess]:
    path = [src, BENCH] if src else [BENCH]
    if db == "sqlite":
        with StoreProcess(
            folder / f"{tag}.sqlite", functions="sync_latency_app", pythonpath=path
        ) as store:
            yield store
        return
    from cluster import database

    with (
        database(pg) as url,
        StoreProcess(
            url, functions="sync_latency_app", pythonpath=path, log_path=folder / f"{tag}.log"
        ) as store,
    ):
        yield store


def run_pipelined(
    db: str, seconds: float, rate: float, window: int, before: str | None, pg: str
) -> dict[str, Any]:
    variants = {"before": before, "after": None} if before else {"after": None}
    modes = {f"{rate:g}/s": rate, "max": 0.0}
    figures: dict[str, Any] = {"bench": "store_write_path_pipelined", "db": db}
    with tempfile.TemporaryDirectory(prefix="bench-pipelined-") as tmp:
        for tag, src in variants.items():
            with _store(db, Path(tmp), tag, src, pg) as store:
                for mode, r in modes.items():
                    figures[f"{tag} {mode}"] = _pace(store.url, r, seconds, window)
    if before:
        for mode in modes:
            b, a = figures[f"before {mode}"], figures[f"after {mode}"]
            figures[f"ratio {mode}"] = {
                "achieved": round(a["achieved_per_s"] / max(1e-9, b["achieved_per_s"]), 2),
                "p50": round(a["p50_ms"] / max(1e-9, b["p50_ms"]), 3),
                "p99": round(a["p99_ms"] / max(1e-9, b["p99_ms"]), 3),
            }
    figures.update(
        seconds=seconds, window=window, load_average=[round(x, 2) for x in os.getloadavg()]
    )
    return figures


def print_pipelined(figures: dict[str, Any]) -> None:
    rows = []
    for name, f in figures.items():
        if isinstance(f, dict) and "achieved_per_s" in f:
            rows.append(
                [
                    name,
                    f"{f['achieved_per_s']:.0f}",
                    f"{f['p50_ms']:.1f}",
                    f"{f['p99_ms']:.1f}",
                    f"{f['max_ms']:.0f}",
                    f"{f['failed']}",
                    "yes" if f["inOrder"] else "NO",
                ]
            )
    print_table(
        f"one npm ConvexClient, mutations not awaited one by one ({figures['db']},"
        f" {figures['seconds']:g} s each, window {figures['window']};"
        f" goal: {GOAL_RATE:g}/s sustained; load {figures['load_average']})",
        ["variant", "achieved /s", "p50 ms", "p99 ms", "max ms", "failed", "in order"],
        rows,
    )
    for name, r in figures.items():
        if name.startswith("ratio"):
            print(
                f"after / before, {name[6:]}: achieved x{r['achieved']},"
                f" p50 x{r['p50']}, p99 x{r['p99']}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--pipelined", action="store_true")
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rate", type=float, default=GOAL_RATE)
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--before", default=None, help="another checkout's src/ to run first")
    opts = parser.parse_args()
    if opts.pipelined:
        seconds = 5.0 if opts.quick else opts.seconds
        f = run_pipelined(opts.db, seconds, opts.rate, opts.window, opts.before, opts.pg)
        print_pipelined(f)
        emit(f)
        return
    figures = asyncio.run(run(400 if opts.quick else opts.calls))
    rows = [
        [name, f"{f['p50_ms']:.3f}", f"{f['p99_ms']:.3f}", f"{f['server_cpu_us_per_call']:.0f}"]
        for name in ("http", "websocket")
        for f in [figures[name]]
        if isinstance(f, dict)
    ]
    print_table(
        "one mutation round trip (bench:stamp), alternating blocks",
        ["transport", "p50 ms", "p99 ms", "server CPU µs/call"],
        rows,
    )
    emit(figures)


if __name__ == "__main__":
    main()
