"""Bench (a): time to find the subscriptions a commit affects, at 1,000 and 100,000 subscriptions.

Each subscription is a distinct query reading its own index range (``items.by_k`` with
``k in [i*10, i*10+10)``). Each measured commit writes one document inside one range; we time
``engine.affected_queries(writes)`` (the interval-tree lookup over the old and new key of every
index of the written document) and report p50/p99 over many commits, plus the ratio 100k/1k
(goal < 2). Baseline in the same run: the naive linear scan over every read set. The set-up
objects are frozen out of the cyclic GC (``gc.freeze()``) before measuring, so the p99 shows
the lookup rather than collector passes over the 100k subscriptions.

Usage: python bench/subscriptions_find.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from marketpulse.reactive import FunctionModule, QueryCtx, Schema, Table
from marketpulse.reactive.engine import Engine, SharedQuery
from marketpulse.reactive.engine._store import Write
from marketpulse.reactive.persistence import open_persistence
from marketpulse.testing import percentile

WIDTH = 10.0

items = FunctionModule("items", schema=Schema({"items": Table(indexes={"by_k": ["k"]})}))


@items.query(name="range")
def range_(ctx: QueryCtx, lo: float, hi: float) -> list[float]:
    docs = ctx.db.query("items").with_index("by_k", lambda q: q.gte("k", lo).lt("k", hi)).collect()
    return [d["k"] for d in docs]


class Listener:
    def on_query_updated(self, query: SharedQuery) -> None:
        pass


def fake_write(k: float, rnd: random.Random) -> list[Write]:
    doc_id = f"bench{rnd.getrandbits(64):016x}"
    old = {"_id": doc_id, "_creationTime": 1.0, "k": k}
    new = {"_id": doc_id, "_creationTime": 1.0, "k": k + 0.5}
    return [Write("items", doc_id, old, new)]


async def measure(
    n_subs: int, commits: int, baseline_commits: int, rnd: random.Random
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        engine = await Engine.open(open_persistence(f"sqlite:{tmp}/b.sqlite3"), [items])
        listener = Listener()
        t0 = time.perf_counter()
        subs = [
            engine.subscribe(
                "items:range", {"lo": i * WIDTH, "hi": i * WIDTH + WIDTH}, None, listener
            )
            for i in range(n_subs)
        ]
        subscribe_s = time.perf_counter() - t0
        # Move the set-up objects out of the collector's reach so that p99 measures the lookup,
        # not a full GC pass over 100k subscriptions (a server would do the same after start-up).
        gc.collect()
        gc.freeze()
        find_us: list[float] = []
        for _ in range(commits):
            k = rnd.randrange(n_subs) * WIDTH + 1.0
            writes = fake_write(k, rnd)
            t = time.perf_counter_ns()
            found = engine.affected_queries(writes)
            find_us.append((time.perf_counter_ns() - t) / 1000)
            assert len(found) == 1, len(found)
        # Baseline: a linear scan over every subscription's read set.
        linear_us: list[float] = []
        for _ in range(baseline_commits):
            k = rnd.randrange(n_subs) * WIDTH + 1.0
            writes = fake_write(k, rnd)
            points = engine._written_keys(writes)
            t = time.perf_counter_ns()
            hits = [s for s in subs if any(s.read_set.contains(*p) for p in points)]
            linear_us.append((time.perf_counter_ns() - t) / 1000)
            assert len(hits) == 1
        # A real commit end to end: durable write, apply, find, re-run one query, notify.
        commit_ms: list[float] = []
        for i in range(min(commits, 200)):
            mod_k = rnd.randrange(n_subs) * WIDTH + 2.0
            t = time.perf_counter_ns()
            await engine.run_mutation("items:put", {"k": mod_k + i * 1e-6}, None)
            commit_ms.append((time.perf_counter_ns() - t) / 1e6)
        await engine.close()
    gc.unfreeze()
    return {
        "subs": n_subs,
        "subscribe_s": round(subscribe_s, 2),
        "find_p50_us": round(statistics.median(find_us), 2),
        "find_p99_us": round(percentile(find_us, 99), 2),
        "linear_p50_us": round(statistics.median(linear_us), 1),
        "commit_p50_ms": round(statistics.median(commit_ms), 3),
        "commit_p99_ms": round(percentile(commit_ms, 99), 3),
    }


@items.mutation
def put(ctx: Any, k: float) -> str:
    result: str = ctx.db.insert("items", {"k": k})
    return result


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer commits (same sizes)")
    args = parser.parse_args()
    commits = 500 if args.quick else 5000
    baseline = 5 if args.quick else 30
    rnd = random.Random(1)
    rows = [await measure(n, commits, baseline, rnd) for n in (1_000, 100_000)]
    small, large = rows
    ratio_p50 = large["find_p50_us"] / small["find_p50_us"]
    ratio_p99 = large["find_p99_us"] / small["find_p99_us"]
    header = f"{'subs':>8} {'subscribe s':>12} {'find p50 us':>12} {'find p99 us':>12} {'linear p50 us':>14} {'commit p50 ms':>14} {'commit p99 ms':>14}"
    print(header)
    for r in rows:
        print(
            f"{r['subs']:>8} {r['subscribe_s']:>12} {r['find_p50_us']:>12} {r['find_p99_us']:>12} "
            f"{r['linear_p50_us']:>14} {r['commit_p50_ms']:>14} {r['commit_p99_ms']:>14}"
        )
    print(
        f"ratio 100k/1k: p50 {ratio_p50:.2f}, p99 {ratio_p99:.2f} (goal < 2); commits measured: {commits}"
    )
    print(
        json.dumps(
            {
                "bench": "subscriptions_find",
                "quick": args.quick,
                "commits": commits,
                "rows": rows,
                "ratio_100k_1k_p50": round(ratio_p50, 3),
                "ratio_100k_1k_p99": round(ratio_p99, 3),
                "goal_ratio": 2.0,
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
