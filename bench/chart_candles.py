"""The dashboard chart's store cost per trade: one 1,500-candle query against a live window.

In process, on the real engine (SQLite file, the ``marketData`` module): one market with a day
of 1-minute history (``upsertCandles``), watched by N chart viewers, each a real sync protocol
core whose Transitions are encoded after every trade with one shared cache, as the store's
fan-out does (no socket writes). Two layouts, in alternated rounds of the same run:

* ``one query`` (the baseline, the chart before): ``getCandles {limit: 1500}``, re-run and
  pushed whole on every trade;
* ``live window`` (``web/src/hooks/useCandles.ts``): ``getCandles {limit: 64}`` plus
  ``getCandles {limit: 1500, before}`` ending in the live window's middle, moved (a new
  subscription) when the window slides past it, as the hook does.

Trades come every 3 s of exchange time: a new minute every 20 trades, so the live window
slides, and the history moves once in 700 trades (after 32 minutes; its new subscription's
first run and Transitions count in that trade's fan-out). Per trade: the loop thread's CPU in ``applyUpdates`` with the
re-runs it causes (the off-loop worker's included: process CPU), in the fan-out encoding, and the bytes pushed to each viewer.

    python bench/chart_candles.py [--trades 700] [--viewers 100] [--rounds 2] [--quick]

Goal: a trade costs the store's commit (with its re-runs) and each viewer's bytes at most x0.2
of re-sending 1,500 candles; the fan-out's encoding is printed beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import emit, print_table
from _sync_watch import Subscriber, subscribe

MIN = 60_000.0
DAY_START = 1_700_000_000_000.0 - 1_700_000_000_000.0 % (60 * MIN)
HISTORY = 1440
"""A day of 1-minute candles from the exchange, before the first trade."""
LIVE, LIMIT = 64, 1500
"""The hook's live window and history limit (``useCandles.ts``)."""
GOAL_RATIO = 0.2
GOALS = ("commit_cpu_us", "bytes_per_viewer")
TICKER = "CHART-1"


def history_end(live: list[dict[str, Any]], current: float | None) -> float | None:
    """``historyEnd`` of ``useCandles.ts``."""
    if len(live) < LIVE:
        return current
    if current is not None and live[0]["start"] < current:
        return current
    return float(live[len(live) // 2]["start"])


def exchange_day() -> list[dict[str, Any]]:
    return [
        {
            "ticker": TICKER,
            "interval": "1m",
            "start": DAY_START + i * MIN,
            "open": 0.5,
            "high": 0.5 + (i % 7) / 100,
            "low": 0.45,
            "close": 0.5 + (i % 5) / 100,
            "volume": 10.0 + i % 3,
        }
        for i in range(HISTORY)
    ]


def a_trade(n: int) -> dict[str, Any]:
    ts = DAY_START + HISTORY * MIN + n * 3_000.0
    return {
        "batch": {
            "trades": [
                {
                    "id": f"{TICKER}-{n}",
                    "ticker": TICKER,
                    "side": "buy" if n % 2 else "sell",
                    "price": 0.4 + (n % 20) / 100,
                    "size": 1.0 + n % 4,
                    "timestamp": ts,
                }
            ]
        }
    }


async def settled(watched: list[Subscriber]) -> None:
    """Until every watched query is current: a query slower than a slice of the loop re-runs
    on the engine's off-loop worker, after the mutation has returned."""
    for _ in range(10_000):
        if all(sub.query.rerun is None for sub in watched):
            return
        await asyncio.sleep(0.0002)
    raise TimeoutError("a re-run did not finish in 2 s")


async def run_layout(layout: str, trades: int, viewers: int, directory: Path) -> dict[str, Any]:
    from marketpulse.marketdata.functions import marketData
    from marketpulse.reactive.engine import Engine, Identity
    from marketpulse.reactive.persistence import open_persistence

    admin = Identity.admin()
    engine = await Engine.open(
        open_persistence(f"sqlite:{directory / f'{layout}.db'}"), [marketData]
    )
    try:
        await engine.run_mutation("marketData:upsertCandles", {"candles": exchange_day()}, admin)
        assert (await engine.run_mutation("marketData:applyUpdates", a_trade(0), admin)).success
        dirty: dict[Subscriber, None] = {}
        udf = "marketData:getCandles"
        base = {"ticker": TICKER, "interval": "1m"}

        def watch(args: dict[str, Any]) -> list[Subscriber]:
            return [
                subscribe(engine, f"v{v}", udf, {**base, **args}, dirty) for v in range(viewers)
            ]

        history: list[Subscriber] = []
        end: float | None = None
        if layout == "one query":
            live = watch({"limit": LIMIT})
        else:
            live = watch({"limit": LIVE})
            end = history_end(live[0].query.result.value, None)
            history = watch({"limit": LIMIT, "before": end})
        moves = 0
        dirty.clear()
        gc.collect()
        commit_cpu = fanout_cpu = 0.0
        pushed = 0
        for n in range(1, trades + 1):
            cpu0 = time.process_time()
            result = await engine.run_mutation("marketData:applyUpdates", a_trade(n), admin)
            assert result.success, result.error_message
            await settled([*live[:1], *history[:1]])
            cpu1 = time.process_time()
            commit_cpu += cpu1 - cpu0
            if layout == "live window":
                # As the hook: the history moves (a new subscription) once the window slid past.
                moved = history_end(live[0].query.result.value, end)
                if moved != end:
                    end, moves = moved, moves + 1
                    for sub in history:
                        engine.unsubscribe(sub.query, sub)
                    history = watch({"limit": LIMIT, "before": end})
            shared: dict[Any, bytes] = {}
            pushed += sum(sub.push(engine.ts, shared) for sub in dirty)
            dirty.clear()
            fanout_cpu += time.process_time() - cpu1
        return {
            "commit_cpu_us": commit_cpu / trades * 1e6,
            "fanout_cpu_us": fanout_cpu / trades * 1e6,
            "bytes_per_viewer": pushed / trades / viewers,
            "history_moves": moves,
            "candles": len(live[0].query.result.value)
            + (len(history[0].query.result.value) if history else 0),
        }
    finally:
        await engine.close()


async def main_async(trades: int, viewers: int, rounds: int) -> dict[str, Any]:
    layouts = ("one query", "live window")
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in layouts}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for name in layouts if r % 2 == 0 else reversed(layouts):
                runs[name].append(await run_layout(name, trades, viewers, Path(tmp) / f"{r}"))
    figures = {
        name: {
            key: statistics.median(run[key] for run in results)
            for key in ("commit_cpu_us", "fanout_cpu_us", "bytes_per_viewer", "history_moves")
        }
        for name, results in runs.items()
    }
    old, new = figures["one query"], figures["live window"]
    keys = ("commit_cpu_us", "fanout_cpu_us", "bytes_per_viewer")
    ratios = {key: round(new[key] / old[key], 3) for key in keys}
    rows = [
        (
            key,
            old[key],
            new[key],
            f"x{ratios[key]:.3f}",
            f"<= x{GOAL_RATIO}" if key in GOALS else "",
        )
        for key in keys
    ]
    rows.append(("history moves", old["history_moves"], new["history_moves"], "", ""))
    print_table(
        f"chart store cost per trade: {trades} trades, {viewers} viewers, a day of history "
        f"(median of {rounds} rounds)",
        ["per trade", "one query (baseline)", "live window", "ratio", "goal"],
        rows,
    )
    return {
        "bench": "chart_candles",
        "trades": trades,
        "viewers": viewers,
        "rounds": rounds,
        "figures": figures,
        "ratios": ratios,
        "goal_ratio": GOAL_RATIO,
        "met": all(ratios[key] <= GOAL_RATIO for key in GOALS),
        "candles_shown": {name: runs[name][0]["candles"] for name in layouts},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=700)
    parser.add_argument("--viewers", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="120 trades, 20 viewers, 1 round")
    args = parser.parse_args()
    if args.quick:
        args.trades, args.viewers, args.rounds = 120, 20, 1
    emit(asyncio.run(main_async(args.trades, args.viewers, args.rounds)))


if __name__ == "__main__":
    main()
