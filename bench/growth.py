"""Growth: the fan-out scenario at 1x, 2x and 4x markets and clients, reported as ratios.

Each level runs ``fanout.compare`` with markets and clients both multiplied and the same price
changes per market per second, so the work (pushes/s) grows with the level. Reported per level
and as a ratio to 1x: pushes/s delivered (goal: grows like the level), the store's CPU per
push and memory per connection (goal: flat, i.e. cost linear in the work), and p50/p99
latency (goal: flat). The Redis pub/sub baseline runs at every level too (not in --quick).

How the changes arrive matters for per-event latency, so both ways are measured:

* ``stream`` (the headline): batches of the same size at every level, the batch rate growing
  with the level, as a feed's events arrive: each event's latency is its own batch's commit
  and fan-out plus whatever queueing the higher load causes.
* ``bursts`` (``--bursts``; also run in a full run): 20 batches/s at every level, each batch
  growing with the level, so at 4x every event waits behind a fan-out 4x as long. Redis's
  latency grows the same way there (p50 x2.38 in the 2026-11-24 runs, bench/results/HISTORY.md): it measures the burst length.
"""

from __future__ import annotations

import argparse
from typing import Any

from _common import emit, print_table
from fanout import batch_size, compare

LEVELS = (1, 2, 4)


def _ratio(value: float, base: float) -> float | None:
    return round(value / base, 2) if base else None


def measure(
    mode: str, clients: int, markets: int, seconds: float, with_redis: bool
) -> dict[str, Any]:
    """Every level in one arrival ``mode``; prints its table, returns its runs and ratios."""
    per_market = 0.5  # price changes per market per second
    fixed = batch_size(per_market * markets, markets) if mode == "stream" else None
    runs = []
    for level in LEVELS:
        runs.append(
            {
                "level": level,
                **compare(
                    clients * level,
                    seconds,
                    markets * level,
                    updates_per_s=per_market * markets * level,
                    with_redis=with_redis,
                    per_batch=fixed,
                ),
            }
        )
    base = runs[0]["ours"]
    rows = []
    for run in runs:
        ours = run["ours"]
        run["ratios"] = {
            key: _ratio(ours[key], base[key])
            for key in (
                "pushes_per_s",
                "server_cpu_s",
                "server_cpu_us_per_push",
                "kib_per_idle_connection",
                "p50_ms",
                "p99_ms",
            )
        }
        redis = run["redis"]
        base_redis = runs[0]["redis"]
        if redis and base_redis:
            # The baseline's own growth on the same machine: how much of ours is the load.
            run["redis_ratios"] = {
                key: _ratio(redis[key], base_redis[key]) for key in ("p50_ms", "p99_ms")
            }
        rows.append(
            [
                f"{run['level']}x",
                run["markets"],
                run["clients"],
                f"{run['updates_per_s'] / run['batch_size']:g} x {run['batch_size']}",
                f"{ours['pushes_per_s']:,.0f} ({run['ratios']['pushes_per_s']}x)",
                f"{ours['server_cpu_us_per_push']:.0f} ({run['ratios']['server_cpu_us_per_push']}x)",
                f"{ours['kib_per_idle_connection']:.1f} "
                f"({run['ratios']['kib_per_idle_connection']}x)",
                f"{ours['p50_ms']:.2f} ({run['ratios']['p50_ms']}x)",
                f"{ours['p99_ms']:.2f} ({run['ratios']['p99_ms']}x)",
                f"{redis['p50_ms']:.2f} / {redis['p99_ms']:.2f} "
                f"({run['redis_ratios']['p50_ms']}x / {run['redis_ratios']['p99_ms']}x)"
                if redis and "redis_ratios" in run
                else "-",
            ]
        )
    print_table(
        f"growth, {mode}: ratio to 1x in brackets (goals: pushes/s ~ level, CPU/push, "
        "memory/conn and latency ~ 1.0x)",
        [
            "level",
            "markets",
            "clients",
            "batches/s x changes",
            "pushes/s",
            "CPU us/push",
            "KiB/idle conn",
            "p50 ms",
            "p99 ms",
            "redis p50 / p99 ms",
        ],
        rows,
    )
    return {"runs": runs, "at_4x": runs[-1]["ratios"], "redis_at_4x": runs[-1].get("redis_ratios")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--clients", type=int, help="clients at 1x")
    parser.add_argument("--markets", type=int, help="markets at 1x")
    parser.add_argument("--seconds", type=float)
    parser.add_argument(
        "--bursts", action="store_true", help="also the bursts mode (always in a full run)"
    )
    opts = parser.parse_args()
    clients = opts.clients or (50 if opts.quick else 500)
    markets = opts.markets or (50 if opts.quick else 200)
    seconds = opts.seconds or (1.0 if opts.quick else 10.0)
    modes = ["stream"] + (["bursts"] if opts.bursts or not opts.quick else [])
    results = {m: measure(m, clients, markets, seconds, not opts.quick) for m in modes}
    top = results["stream"]["at_4x"]
    emit(
        {
            "bench": "growth",
            "quick": opts.quick,
            "modes": results,
            "at_4x": top,
            "redis_at_4x": results["stream"]["redis_at_4x"],
            "goals": {
                "pushes_per_s_ratio_goal": 4.0,
                "flat_ratio_goal": "<= 1.5",
                "met_linear_cost": (top["server_cpu_us_per_push"] or 9) <= 1.5,
                "met_flat_latency": (top["p99_ms"] or 9) <= 1.5 and (top["p50_ms"] or 9) <= 1.5,
            },
        }
    )


if __name__ == "__main__":
    main()
