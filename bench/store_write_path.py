"""The worker's write path: one mutation round trip over HTTP vs over the sync WebSocket.

The pipeline writes every batch with one mutation and waits for it before the next, so the
round trip is on the end-to-end latency path. This runs ``bench:stamp`` back to back against
one ``marketpulse serve``: over HTTP (the pipeline's ``StoreClient``, httpx, keep-alive) and
over a sync WebSocket (``Mutation`` → ``MutationResponse``), alternating blocks of calls so
both see the same machine. Prints p50/p99 per transport, the server CPU per call of each and
the ratios.

    python bench/store_write_path.py [--calls 2000] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import BENCH, cpu_seconds, emit, print_table, summarize_with_cpu
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--quick", action="store_true")
    opts = parser.parse_args()
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
