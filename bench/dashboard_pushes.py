"""What the dashboard's big subscriptions cost the store per tick, as they were and as they are.

In process, on the real engine (SQLite file, the ``marketData`` module), N viewers, each a real
sync protocol core whose Transitions are encoded after every step with one shared cache, as
the store's fan-out does (no socket writes). Two scenarios, each with the old layout (the
baseline) and the new one in alternated rounds of the same run:

* ``chart``: one market with a day of 1-minute history (``upsertCandles``) and a trade every
  3 s of exchange time (a new minute every 20 trades). Before: ``getCandles {limit: 1500}``,
  re-run and pushed whole on every trade. Now (``web/src/hooks/useCandles.ts``): ``getCandles
  {limit: 64}`` plus ``getCandles {limit: 1500, before}`` ending in the live window's middle,
  moved (a new subscription) when the window slides past it, as the hook does: once in 700
  trades (its first run and Transitions count in that step's fan-out).
* ``list``: 100 markets with prices, and batches that move 5 of their prices (the 1,000 msg/s
  shape). Before: ``listMarkets {limit: 100}``, which reads every listed price and is pushed
  whole on every batch. Now (``MarketList.tsx``): ``listMarkets {limit: 100, prices: false}``;
  the rows' own ``getPrice`` subscriptions are the same in both layouts and left out.

Per step: the process's CPU in ``applyUpdates`` with the re-runs it causes (the engine's
off-loop worker included), in the fan-out encoding, and the bytes pushed to each viewer.

    python bench/dashboard_pushes.py [--steps 700] [--viewers 100] [--rounds 2] [--quick]

Goal: a step costs the store's commit (with its re-runs) and each viewer's bytes at most x0.2
of the old layout's; the fan-out's encoding is printed beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _batches import ticker
from _common import emit, print_table
from _sync_watch import Subscriber, subscribe

MIN = 60_000.0
DAY_START = 1_700_000_000_000.0 - 1_700_000_000_000.0 % (60 * MIN)
HISTORY = 1440
"""A day of 1-minute candles from the exchange, before the first trade."""
LIVE, LIMIT = 64, 1500
"""The chart hook's live window and history limit (``useCandles.ts``)."""
LISTED, MOVED = 100, 5
"""The market list's length and the prices a batch moves."""
GOAL_RATIO = 0.2
GOALS = ("commit_cpu_us", "bytes_per_viewer")
KEYS = ("commit_cpu_us", "fanout_cpu_us", "bytes_per_viewer")
CHART = "CHART-1"
LAYOUTS = {"chart": ("one query", "live window"), "list": ("with prices", "prices: false")}


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
            "ticker": CHART,
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
    trade = {
        "id": f"{CHART}-{n}",
        "ticker": CHART,
        "side": "buy" if n % 2 else "sell",
        "price": 0.4 + (n % 20) / 100,
        "size": 1.0 + n % 4,
        "timestamp": ts,
    }
    return {"batch": {"trades": [trade]}}


def price_batch(n: int, markets: range) -> dict[str, Any]:
    prices = [
        {"ticker": ticker(i), "yesBid": 0.3 + (n % 40) / 100, "yesAsk": 0.75, "ts": DAY_START + n}
        for i in markets
    ]
    return {"batch": {"prices": prices}}


@dataclass
class Layout:
    """One layout's subscriptions and what each step does to them."""

    engine: Any
    viewers: int
    dirty: dict[Subscriber, None] = field(default_factory=dict)
    watched: list[list[Subscriber]] = field(default_factory=list)
    moves: int = 0

    def watch(self, udf: str, args: dict[str, Any]) -> list[Subscriber]:
        subs = [subscribe(self.engine, f"v{v}", udf, args, self.dirty) for v in range(self.viewers)]
        self.watched.append(subs)
        return subs

    def drop(self, subs: list[Subscriber]) -> None:
        for sub in subs:
            self.engine.unsubscribe(sub.query, sub)
        self.watched.remove(subs)

    async def settled(self) -> None:
        """Until every watched query is current: one slower than a slice of the loop re-runs
        on the engine's off-loop worker, after the mutation has returned."""
        for _ in range(10_000):
            if all(subs[0].query.rerun is None for subs in self.watched):
                return
            await asyncio.sleep(0.0002)
        raise TimeoutError("a re-run did not finish in 2 s")


Setup = tuple[Callable[[int], dict[str, Any]], Callable[[], None] | None]
"""What a scenario's set-up returns: step ``n``'s ``applyUpdates`` arguments, and what to do
to the subscriptions after each step (None: nothing)."""


async def chart(layout: str, lay: Layout, admin: Any) -> Setup:
    engine = lay.engine
    await engine.run_mutation("marketData:upsertCandles", {"candles": exchange_day()}, admin)
    assert (await engine.run_mutation("marketData:applyUpdates", a_trade(0), admin)).success
    udf, base = "marketData:getCandles", {"ticker": CHART, "interval": "1m"}
    if layout == "one query":
        lay.watch(udf, {**base, "limit": LIMIT})
        return a_trade, None
    live = lay.watch(udf, {**base, "limit": LIVE})
    end = history_end(live[0].query.result.value, None)
    history = lay.watch(udf, {**base, "limit": LIMIT, "before": end})

    def after_step() -> None:
        # As the hook: the history moves (a new subscription) once the window slid past.
        nonlocal end, history
        moved = history_end(live[0].query.result.value, end)
        if moved != end:
            end, lay.moves = moved, lay.moves + 1
            lay.drop(history)
            history = lay.watch(udf, {**base, "limit": LIMIT, "before": end})

    return a_trade, after_step


async def market_list(layout: str, lay: Layout, admin: Any) -> Setup:
    engine = lay.engine
    rows = [
        {"ticker": ticker(i), "title": f"Market {i}", "status": "active"} for i in range(LISTED)
    ]
    await engine.run_mutation("marketData:upsertMarkets", {"markets": rows}, admin)
    assert (
        await engine.run_mutation("marketData:applyUpdates", price_batch(0, range(LISTED)), admin)
    ).success
    lay.watch("marketData:listMarkets", {"limit": LISTED, "prices": layout == "with prices"})
    return (lambda n: price_batch(n, range(n * MOVED % LISTED, n * MOVED % LISTED + MOVED))), None


SCENARIOS = {"chart": chart, "list": market_list}


async def run_layout(
    scenario: str, layout: str, steps: int, viewers: int, directory: Path
) -> dict[str, Any]:
    from marketpulse.marketdata.functions import marketData
    from marketpulse.reactive.engine import Engine, Identity
    from marketpulse.reactive.persistence import open_persistence

    admin = Identity.admin()
    directory.mkdir(parents=True, exist_ok=True)
    persistence = open_persistence(f"sqlite:{directory / f'{scenario}-{layout}.db'}")
    engine = await Engine.open(persistence, [marketData])
    try:
        lay = Layout(engine, viewers)
        step_args, after_step = await SCENARIOS[scenario](layout, lay, admin)
        lay.dirty.clear()
        gc.collect()
        commit_cpu = fanout_cpu = 0.0
        pushed = 0
        for n in range(1, steps + 1):
            cpu0 = time.process_time()
            result = await engine.run_mutation("marketData:applyUpdates", step_args(n), admin)
            assert result.success, result.error_message
            await lay.settled()
            cpu1 = time.process_time()
            commit_cpu += cpu1 - cpu0
            if after_step is not None:
                after_step()
            shared: dict[Any, Any] = {}
            pushed += sum(sub.push(engine.ts, shared) for sub in lay.dirty)
            lay.dirty.clear()
            fanout_cpu += time.process_time() - cpu1
        return {
            "commit_cpu_us": commit_cpu / steps * 1e6,
            "fanout_cpu_us": fanout_cpu / steps * 1e6,
            "bytes_per_viewer": pushed / steps / viewers,
            "moves": lay.moves,
            "shown": sum(len(subs[0].query.result.value) for subs in lay.watched),
        }
    finally:
        await engine.close()


async def scenario_figures(
    scenario: str, steps: int, viewers: int, rounds: int, directory: Path
) -> dict[str, Any]:
    layouts = LAYOUTS[scenario]
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in layouts}
    for r in range(rounds):
        for name in layouts if r % 2 == 0 else reversed(layouts):
            result = await run_layout(scenario, name, steps, viewers, directory / str(r))
            runs[name].append(result)
    figures = {
        name: {key: statistics.median(run[key] for run in results) for key in (*KEYS, "moves")}
        for name, results in runs.items()
    }
    old, new = (figures[name] for name in layouts)
    ratios = {key: round(new[key] / old[key], 3) for key in KEYS}
    rows = [
        (
            key,
            old[key],
            new[key],
            f"x{ratios[key]:.3f}",
            f"<= x{GOAL_RATIO}" if key in GOALS else "",
        )
        for key in KEYS
    ]
    if scenario == "chart":
        rows.append(("history moves", old["moves"], new["moves"], "", ""))
    print_table(
        f"{scenario}: the store's cost per step, {steps} steps, {viewers} viewers "
        f"(median of {rounds} rounds)",
        ["per step", f"{layouts[0]} (baseline)", layouts[1], "ratio", "goal"],
        rows,
    )
    return {
        "layouts": list(layouts),
        "figures": figures,
        "ratios": ratios,
        "met": all(ratios[key] <= GOAL_RATIO for key in GOALS),
        "shown": {name: runs[name][0]["shown"] for name in layouts},
    }


async def main_async(steps: int, viewers: int, rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        scenarios = {
            name: await scenario_figures(name, steps, viewers, rounds, Path(tmp) / name)
            for name in SCENARIOS
        }
    return {
        "bench": "dashboard_pushes",
        "steps": steps,
        "viewers": viewers,
        "rounds": rounds,
        "goal_ratio": GOAL_RATIO,
        "goals": list(GOALS),
        "scenarios": scenarios,
        "met": all(s["met"] for s in scenarios.values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=700)
    parser.add_argument("--viewers", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="120 steps, 20 viewers, 1 round")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.viewers, args.rounds = 120, 20, 1
    emit(asyncio.run(main_async(args.steps, args.viewers, args.rounds)))


if __name__ == "__main__":
    main()
