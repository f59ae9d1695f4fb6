"""The store's commit path, in process: one small ``applyUpdates`` batch, run → durable → re-run.

At 1,000 msgs/s the pipeline's batches carry ~6 updates, and each one's commit sits on the
end-to-end latency path: run the mutation, write it to SQLite (fsync), apply it in memory,
re-run the subscribed queries it touched. This measures that path on the real engine and an
SQLite file with 1,000 live ``getOrderbook`` subscriptions (200 markets), and compares, in
alternating blocks of the same run, a commit written on the SQLite thread with one written on
the event loop's thread (``SqlitePersistence.inline_max_writes``). The inline mode keeps its
safety valve: after a write slower than 10 ms it writes on the thread for 10 s, as it does in
the store, so a stalling disk shows up here as a smaller difference.

Prints p50/p99 of ``run_mutation`` (wall, until durable and re-run) and the CPU per batch of
each, and their ratios.

    python bench/commit_path.py [--batches 4000] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit, print_table, summarize_with_cpu
from marketdata_apply import batch, seed_books
from marketpulse.marketdata.functions import marketData
from marketpulse.reactive.engine import Engine, Identity
from marketpulse.reactive.persistence.sqlite import SqlitePersistence

MARKETS = 200
SUBSCRIBERS = 1000
PER_BATCH = 6
BLOCK = 100
INLINE_BOUND = 64
"""The inline mode's bound (the store's default until issue 15 moved every write off the loop)."""
MODES = {"SQLite thread": 0, "loop thread (inline)": INLINE_BOUND}


async def run(batches: int, directory: Path) -> dict[str, dict[str, float]]:
    persistence = SqlitePersistence(directory / "commit.db")
    engine = await Engine.open(persistence, [marketData])
    admin = Identity.admin()
    # applyUpdates is declared relaxed (bench/durability.py compares the two): this bench
    # measures the durable path, written before the answer.
    durable = dataclasses.replace(engine.functions["marketData:applyUpdates"], durability="durable")
    try:
        await seed_books(engine, MARKETS, SUBSCRIBERS)
        wall: dict[str, list[float]] = {name: [] for name in MODES}
        cpu: dict[str, float] = dict.fromkeys(MODES, 0.0)
        n = 0
        for _ in range(max(1, batches // (BLOCK * len(MODES)))):
            for name, inline in MODES.items():
                persistence.inline_max_writes = inline
                started_cpu = time.process_time()
                for _ in range(BLOCK):
                    n += 1
                    body = {"batch": batch(n, [(n * 37 + k) % MARKETS for k in range(PER_BATCH)])}
                    start = time.perf_counter()
                    result = await engine.run_mutation_spec(durable, body, admin)
                    wall[name].append((time.perf_counter() - start) * 1000)
                    assert result.success, result.error_message
                cpu[name] += time.process_time() - started_cpu
        return summarize_with_cpu(wall, cpu, "cpu_us_per_batch")
    finally:
        await engine.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=4000)
    parser.add_argument("--quick", action="store_true")
    opts = parser.parse_args()
    batches = 800 if opts.quick else opts.batches
    with tempfile.TemporaryDirectory(prefix="bench-commit-") as tmp:
        figures = asyncio.run(run(batches, Path(tmp)))
    thread, inline = (figures[name] for name in MODES)
    print_table(
        f"commit path: applyUpdates of {PER_BATCH} markets, {SUBSCRIBERS} subscriptions, "
        f"run -> durable -> re-run ({batches} batches, alternating blocks of {BLOCK})",
        ["write on", "p50 ms", "p99 ms", "CPU µs / batch"],
        [[name, f["p50_ms"], f["p99_ms"], f["cpu_us_per_batch"]] for name, f in figures.items()],
    )
    ratios: dict[str, Any] = {
        "p50": round(inline["p50_ms"] / thread["p50_ms"], 2),
        "p99": round(inline["p99_ms"] / thread["p99_ms"], 2),
    }
    print(f"inline / thread: p50 x{ratios['p50']}, p99 x{ratios['p99']}")
    emit({"bench": "commit_path", "batches": batches, "modes": figures, "inline_vs_thread": ratios})


if __name__ == "__main__":
    main()
