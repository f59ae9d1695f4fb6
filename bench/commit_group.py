"""One commit group of the market data stream, in process, stage by stage, before vs after.

By default a group changes 200 of 250 markets, a 10,000 msg/s group when the store committed
~16 a second (issue 15); it now commits 100-170 groups a second there, of ~60-120 messages each,
and ``--changed 6`` is about a 1,000 msg/s group, where a group's fixed costs weigh more. Books
are packed as the worker sends them. This runs that commit on the real engine (SQLite file,
the ``marketData`` module) with 1,000 live subscriptions (getPrice, getOrderbook and
getRecentTrades of 250 markets, as ``marketdata_apply.py``), each watched by a real sync
protocol core (``SyncProtocol``, one per subscriber, as a socket has) whose Transition is
encoded after each group with one shared cache, as the store's ``Flusher`` does (no socket
writes: the encoding only). Batches are built before timing. Per group: the engine's own
stages (``Engine.timings``: execute, apply, re-run; the write is off the loop), the fan-out
encoding, the wall time of ``run_mutation`` and the event loop thread's CPU.

``--before SRC`` runs the same batches on another checkout's code (e.g. ``../before/src``)
in alternated child processes of the same run (``--rounds``), or with ``--together`` both at
the same time (each on a core, under the same load from the rest of the host), and prints
before / after.

    python bench/commit_group.py [--batches 150] [--rounds 2] [--changed 200]
        [--before ../main/src [--together]] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _batches import batch, ticker
from _sync_watch import Subscriber, subscribe

MARKETS = 250
CHANGED = 200
"""Markets each group changes, by default (``--changed``)."""
SUBSCRIPTIONS = 1000
QUERIES = ("getPrice", "getOrderbook", "getRecentTrades")
STAGES = (
    "execute_ms",
    "apply_ms",
    "rerun_ms",
    "fanout_encode_ms",
    "commit_wall_ms",
    "commit_cpu_ms",
    "fanout_cpu_ms",
)
"""Per group: the engine's stages (wall, from ``Engine.timings``), the fan-out encoding (wall),
``run_mutation``'s wall time (median), and the loop thread's CPU in the commit and in the
fan-out (mean): on a loaded host the CPU figures are the ones to compare."""

CHECKS = ("frames_per_group", "query_runs_per_group")
"""Work done per group, which must be the same before and after."""


async def child(batches: int, changed: int, directory: Path) -> dict[str, Any]:
    from marketpulse.marketdata.functions import marketData
    from marketpulse.reactive.engine import Engine, Identity
    from marketpulse.reactive.limits import RunLimits
    from marketpulse.reactive.persistence import open_persistence

    # A loaded host can stretch a 200-market group past the default 1 s limits.
    limits = RunLimits(query_time_limit=30.0, mutation_time_limit=30.0)
    persistence = open_persistence(f"sqlite:{directory / 'group.db'}")
    engine = await Engine.open(persistence, [marketData], limits=limits)
    admin = Identity.admin()
    bodies = [
        {"batch": batch(n, [(n * 37 + k) % MARKETS for k in range(changed)])}
        for n in range(1, batches + 1)
    ]
    try:
        rows = [{"ticker": ticker(i), "title": f"m{i}", "status": "active"} for i in range(MARKETS)]
        await engine.run_mutation("marketData:upsertMarkets", {"markets": rows}, admin)
        seed = {"batch": batch(0, list(range(MARKETS)))}
        assert (await engine.run_mutation("marketData:applyUpdates", seed, admin)).success
        dirty: dict[Subscriber, None] = {}
        subscribers: list[Subscriber] = []
        for s in range(SUBSCRIPTIONS):
            name, market = QUERIES[s % 3], (s * 7) % MARKETS
            args = {"ticker": ticker(market)}
            subscribers.append(subscribe(engine, f"s{s}", f"marketData:{name}", args, dirty))
        dirty.clear()
        # As serve's SurvivorFreezer: the long-lived set-up is frozen, so full collections
        # walk only what the groups promote.
        gc.collect()
        gc.freeze()
        t = engine.timings
        before = (t.execute, t.apply, t.rerun, t.groups)
        runs_before = engine.query_runs
        wall: list[float] = []
        fanout: list[float] = []
        commit_cpu = fanout_cpu = 0.0
        frames = 0
        for body in bodies:
            cpu0 = time.thread_time()
            started = time.perf_counter()
            result = await engine.run_mutation("marketData:applyUpdates", body, admin)
            wall.append((time.perf_counter() - started) * 1000)
            assert result.success, result.error_message
            cpu1 = time.thread_time()
            commit_cpu += cpu1 - cpu0
            f0 = time.perf_counter()
            shared: dict[Any, Any] = {}
            ts = engine.ts
            for sub in dirty:
                if sub.protocol.send_transition(ts, {0: sub.query.result}, shared=shared):
                    frames += len(sub.protocol.data_to_send())
            dirty.clear()
            fanout.append((time.perf_counter() - f0) * 1000)
            fanout_cpu += time.thread_time() - cpu1
            await asyncio.sleep(0)
        groups = t.groups - before[3]
        return {
            "batches": batches,
            "groups": groups,
            "execute_ms": (t.execute - before[0]) * 1000 / groups,
            "apply_ms": (t.apply - before[1]) * 1000 / groups,
            "rerun_ms": (t.rerun - before[2]) * 1000 / groups,
            "fanout_encode_ms": statistics.median(fanout),
            "commit_wall_ms": statistics.median(wall),
            "commit_cpu_ms": commit_cpu * 1000 / batches,
            "fanout_cpu_ms": fanout_cpu * 1000 / batches,
            "frames_per_group": frames / batches,
            "query_runs_per_group": (engine.query_runs - runs_before) / batches,
        }
    finally:
        await engine.close()


def start_child(src: str | None, batches: int, changed: int) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env["COMMIT_GROUP_SRC"] = src or str(Path(__file__).resolve().parents[1] / "src")
    return subprocess.Popen(
        [sys.executable, __file__, "--child", "--batches", str(batches), "--changed", str(changed)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish_child(child: subprocess.Popen[str], src: str | None) -> dict[str, Any]:
    out, err = child.communicate()
    if child.returncode != 0:
        raise RuntimeError(f"child failed ({src}):\n{err[-3000:]}")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--changed", type=int, default=CHANGED, help="markets each group changes")
    parser.add_argument("--before", help="another checkout's src/ for the 'before' runs")
    parser.add_argument(
        "--together",
        action="store_true",
        help="run before and after at the same time, one core each: both see the same host",
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    batches = 20 if opts.quick else opts.batches
    if opts.child:
        sys.path.insert(0, os.environ["COMMIT_GROUP_SRC"])
        with tempfile.TemporaryDirectory(prefix="bench-group-") as tmp:
            print(json.dumps(asyncio.run(child(batches, opts.changed, Path(tmp)))))
        return

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import emit, print_table

    load_before = os.getloadavg()[0]
    variants = {"after": None} if not opts.before else {"before": opts.before, "after": None}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    for _ in range(1 if opts.quick else opts.rounds):
        if opts.together:
            started = {
                name: start_child(src, batches, opts.changed) for name, src in variants.items()
            }
            for name, process in started.items():
                runs[name].append(finish_child(process, variants[name]))
            continue
        for name, src in variants.items():
            runs[name].append(finish_child(start_child(src, batches, opts.changed), src))
    load_after = os.getloadavg()[0]
    # Each stage's best round: the rounds share a loaded host, the minimum is the code's cost.
    figures = {
        name: {k: round(min(r[k] for r in rs), 3) for k in (*STAGES, *CHECKS)}
        for name, rs in runs.items()
    }
    rows = []
    for stage in (*STAGES, *CHECKS):
        row: list[Any] = [stage]
        row += [figures[name][stage] for name in variants]
        if "before" in figures:
            row.append(f"x{figures['before'][stage] / max(figures['after'][stage], 1e-9):.2f}")
        rows.append(row)
    headers = ["per commit group", *variants] + (["before / after"] if opts.before else [])
    print_table(
        f"applyUpdates of {opts.changed} markets, {SUBSCRIPTIONS} subscriptions each with its own "
        f"protocol core; {batches} groups x {len(runs['after'])} "
        f"{'simultaneous' if opts.together else 'alternated'} rounds (best round); "
        f"load {load_before:.2f} -> {load_after:.2f}",
        headers,
        rows,
    )
    emit(
        {
            "bench": "commit_group",
            "batches": batches,
            "rounds": len(runs["after"]),
            "before_src": opts.before,
            "together": opts.together,
            "figures": figures,
            "runs": runs,
            "load_1m": [load_before, load_after],
        }
    )


if __name__ == "__main__":
    main()
