"""Continuity through faults: time to detect, time a wrong book is served as live, trades lost.

Each fault of issue 13's table runs on a fresh local system (Temporal on a file, store,
simulator at ``--rate`` msg/s over ``--markets`` markets, worker, stream workflow) while
``BookWatch`` samples every served book against the simulator's every 0.2 s:

* detect: seconds from the fault to the first sample serving no book at all (- if never);
* stale-as-live: the longest any market was served a book differing from the truth (goal
  <= 5 s: the 3 s lease + the 1 s expiry cron + sampling);
* trades lost: trades the simulator made that the store lacks once the system healed (goal 0),
  and trades stored twice (goal 0).

``--baseline-src DIR`` runs the same faults with every child on another checkout's ``src`` (e.g.
main's), the "before" of the same run. One run per fault and variant by default
(``--repeats`` for more; the table then shows p50 and max).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import emit, print_table
from marketpulse.testing import BookWatch, LocalSystem, free_port, summarize_ms, wait_for_trades

GOAL_STALE_S = 5.0


def _until(check: Callable[[], bool], timeout: float) -> float | None:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            if check():
                return time.monotonic() - start
        except Exception:
            pass
        time.sleep(0.3)
    return None


def _worker_restarted(system: LocalSystem, tickers: list[str]) -> None:
    system.procs["worker"].kill()
    time.sleep(3)
    system.start_worker(metrics_port=free_port())
    _until(lambda: system.converged(tickers), 90)


def _worker_down(system: LocalSystem, tickers: list[str]) -> None:
    system.procs["worker"].kill()
    time.sleep(20)
    system.start_worker(metrics_port=free_port())
    _until(lambda: system.converged(tickers), 90)


def _stall(system: LocalSystem, tickers: list[str]) -> None:
    system.sim("stall", seconds=20)
    time.sleep(22)
    _until(lambda: system.converged(tickers), 60)


def _store_restarted(system: LocalSystem, tickers: list[str]) -> None:
    system.procs["store"].kill()
    time.sleep(5)
    system.restart("store")
    _until(lambda: system.converged(tickers), 60)


def _temporal_down(system: LocalSystem, tickers: list[str]) -> None:
    system.procs["temporal"].stop()
    time.sleep(15)
    system.restart("temporal")
    time.sleep(15)
    _until(lambda: system.converged(tickers), 90)


FAULTS: dict[str, Callable[[LocalSystem, list[str]], None]] = {
    "worker SIGKILLed, restarted after 3 s": _worker_restarted,
    "worker SIGKILLed, down 20 s": _worker_down,
    "exchange silent 20 s (stall)": _stall,
    "store killed, restarted after 5 s": _store_restarted,
    "Temporal down 15 s, then back": _temporal_down,
}


def run_fault(name: str, src: str | None, markets: int, rate: float, root: Path) -> dict[str, Any]:
    """One fault on a fresh system; its figures."""
    with LocalSystem(root, pythonpath=[src] if src else []) as system:
        streaming = asyncio.run(
            system.start_streaming(
                markets=markets, workflow_id="bench-continuity", rate=rate, persistent_temporal=True
            )
        )
        tickers = streaming.markets
        with BookWatch(system, tickers) as watch:
            time.sleep(2)
            at = time.monotonic()
            FAULTS[name](system, tickers)
            time.sleep(2)
        lost, twice, compared = wait_for_trades(system, tickers, timeout=30)
        return {
            "detect_s": watch.first_none_served(at),
            "stale_as_live_s": round(watch.longest_wrong_live(), 2),
            "trades_lost": lost,
            "trades_twice": twice,
            "trades_compared": compared,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two faults, no baseline")
    parser.add_argument("--markets", type=int, default=6)
    parser.add_argument("--rate", type=float, default=40.0)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--baseline-src", help="another checkout's src: the 'before'")
    parser.add_argument("--fault", action="append", choices=sorted(FAULTS), help="only these")
    args = parser.parse_args()
    faults = args.fault or (list(FAULTS)[:2] if args.quick else list(FAULTS))
    variants: dict[str, str | None] = {"this": None}
    if args.baseline_src and not args.quick:
        variants["baseline"] = str(Path(args.baseline_src).resolve())
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    rows = []
    for fault in faults:
        for variant, src in variants.items():
            runs = []
            for _ in range(args.repeats):
                with tempfile.TemporaryDirectory(prefix="continuity-") as tmp:
                    runs.append(run_fault(fault, src, args.markets, args.rate, Path(tmp)))
            results.setdefault(fault, {})[variant] = runs
            stale = summarize_ms([r["stale_as_live_s"] * 1000 for r in runs])
            detects = [r["detect_s"] for r in runs if r["detect_s"] is not None]
            rows.append(
                [
                    fault,
                    variant,
                    f"{min(detects):.1f}" if detects else "never",
                    f"{stale['p50_ms'] / 1000:.1f} / {stale['max_ms'] / 1000:.1f}",
                    f"<= {GOAL_STALE_S:g}",
                    sum(r["trades_lost"] for r in runs),
                    sum(r["trades_twice"] for r in runs),
                    sum(r["trades_compared"] for r in runs),
                ]
            )
    print_table(
        "continuity through faults (seconds; stale-as-live p50 / max over repeats)",
        ["fault", "code", "detect", "stale-as-live", "goal", "lost", "twice", "compared"],
        rows,
    )
    emit({"continuity": results, "goal_stale_s": GOAL_STALE_S})


if __name__ == "__main__":
    main()
