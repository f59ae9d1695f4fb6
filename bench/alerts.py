"""Benchmark: what checking price alerts adds to marketData:applyUpdates (issue 17).

Goal: with 10,000 armed alerts over 200 markets, checking them costs at most 10 % of
``applyUpdates``' time. Runs two real engines in process (SQLite files in a temp dir) with the
app's modules: one with no alert (the baseline) and one with 10,000 alerts created through
``alerts:create`` by 200 signed-in users (50 per market, levels spread outside the prices' band,
so they stay armed). Both get the same batches, interleaved, so load on the machine hits both
alike: every batch moves all 200 markets' prices (each ticker is checked every batch, the worst
case) and books (10 levels a side), as the worker's flush does.

Figures: ``applyUpdates`` time per batch (the awaited mutation) with 0 and with 10,000 alerts,
p50/p99/p999/max; the overhead (p50 with alerts / p50 baseline - 1); and the time spent inside
the alert check itself (``_alerts.fire_alerts``) as a share of the batch's time.

    python bench/alerts.py [--quick] [--batches N]

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit, print_table
from marketpulse.marketdata import _alerts
from marketpulse.marketdata import functions as app
from marketpulse.reactive.engine import Engine, Identity
from marketpulse.reactive.persistence import open_persistence
from marketpulse.testing import summarize_ms

MARKETS = 200
ALERTS = 10_000
GOAL_SHARE = 0.10
MODULES = [app.marketData, app.watchlists, app.alerts, app.settings]
T0 = 1_700_000_000_000.0
ISSUER = "http://127.0.0.1:1/bench"


def ticker(i: int) -> str:
    return f"ALERT-{i:03d}"


def user(i: int) -> Identity:
    return Identity.for_user(
        {"tokenIdentifier": f"{ISSUER}|u{i}", "subject": f"u{i}", "issuer": ISSUER}
    )


def batch(n: int, rng: random.Random) -> dict[str, Any]:
    """Every market's price moves inside [0.40, 0.60] and its book is rewritten."""
    ts = T0 + n * 10.0
    prices, books = [], []
    for i in range(MARKETS):
        mid = round(rng.uniform(0.41, 0.59), 2)
        prices.append(
            {
                "ticker": ticker(i),
                "price": mid,
                "yesBid": mid - 0.01,
                "yesAsk": mid + 0.01,
                "ts": ts,
            }
        )
        books.append(
            {
                "ticker": ticker(i),
                "bids": [[round(mid - 0.01 - j / 100, 2), 10.0 + j] for j in range(10)],
                "asks": [[round(mid + 0.01 + j / 100, 2), 5.0 + j] for j in range(10)],
                "ts": ts,
                "valid": True,
            }
        )
    return {"prices": prices, "books": books}


async def open_engine(directory: Path, tag: str) -> Engine:
    engine = await Engine.open(open_persistence(f"sqlite:{directory / f'{tag}.db'}"), MODULES)
    markets = [
        {"ticker": ticker(i), "title": f"market {i}", "status": "active"} for i in range(MARKETS)
    ]
    r = await engine.run_mutation(
        "marketData:upsertMarkets", {"markets": markets}, Identity.admin()
    )
    assert r.success, r.error_message
    r = await engine.run_mutation(
        "marketData:applyUpdates", {"batch": batch(0, random.Random(0))}, Identity.admin()
    )
    assert r.success, r.error_message
    return engine


async def create_alerts(engine: Engine, count: int) -> None:
    """``count`` alerts through ``alerts:create``: 200 users, levels outside [0.40, 0.60]."""
    rng = random.Random(1)
    users = [user(u) for u in range(200)]

    async def one(k: int) -> None:
        if k % 2:
            args = {"ticker": ticker(k % MARKETS), "above": round(rng.uniform(0.62, 0.99), 3)}
        else:
            args = {"ticker": ticker(k % MARKETS), "below": round(rng.uniform(0.01, 0.38), 3)}
        r = await engine.run_mutation("alerts:create", args, users[k % len(users)])
        assert r.success, r.error_message

    for start in range(0, count, 500):
        await asyncio.gather(*(one(k) for k in range(start, min(start + 500, count))))


class CheckTimer:
    """Wall time spent inside ``_alerts.fire_alerts`` (the check ``applyUpdates`` runs)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.bucket = ""
        """Which engine's mutation is running (they run one at a time)."""
        self.fired = 0
        self._real = _alerts.fire_alerts

    def __enter__(self) -> CheckTimer:
        real = self._real

        def timed(ctx: Any, prices: Any, now_ms: float | None = None) -> int:
            t = time.perf_counter()
            fired = real(ctx, prices, now_ms)
            self.seconds[self.bucket] = self.seconds.get(self.bucket, 0.0) + time.perf_counter() - t
            self.fired += fired
            return fired

        _alerts.fire_alerts = timed  # type: ignore[assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        _alerts.fire_alerts = self._real  # type: ignore[assignment]


async def main(batches: int, alerts: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        baseline = await open_engine(directory, "baseline")
        with_alerts = await open_engine(directory, "alerts")
        try:
            t = time.perf_counter()
            await create_alerts(with_alerts, alerts)
            setup_s = time.perf_counter() - t
            samples: dict[str, list[float]] = {"baseline": [], "alerts": []}
            check = CheckTimer()
            rng = random.Random(2)
            admin = Identity.admin()
            with check:
                for n in range(1, batches + 1):
                    body = {"batch": batch(n, rng)}
                    order = [("baseline", baseline), ("alerts", with_alerts)]
                    if n % 2:
                        order.reverse()
                    for name, engine in order:
                        check.bucket = name
                        start = time.perf_counter()
                        r = await engine.run_mutation("marketData:applyUpdates", body, admin)
                        samples[name].append((time.perf_counter() - start) * 1000)
                        assert r.success, r.error_message
            armed = with_alerts.run_query("alerts:list", {}, user(0)).value
            assert all(a["triggeredAt"] is None for a in armed), "an alert fired"
        finally:
            await baseline.close()
            await with_alerts.close()
    base, loaded = summarize_ms(samples["baseline"]), summarize_ms(samples["alerts"])
    check_ms = check.seconds.get("alerts", 0.0) * 1000
    share = check_ms / sum(samples["alerts"])
    overhead = loaded["p50_ms"] / base["p50_ms"] - 1
    return {
        "markets": MARKETS,
        "alerts": alerts,
        "batches": batches,
        "setup_s": round(setup_s, 1),
        "baseline_ms": base,
        "alerts_ms": loaded,
        "overhead_p50": round(overhead, 4),
        "check_share": round(share, 4),
        "check_ms_per_batch": round(check_ms / batches, 3),
        "check_ms_per_batch_baseline": round(
            check.seconds.get("baseline", 0.0) * 1000 / batches, 3
        ),
        "fired": check.fired,
        "goal_share": GOAL_SHARE,
        "met": overhead <= GOAL_SHARE and share <= GOAL_SHARE,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--batches", type=int, default=None)
    opts = parser.parse_args()
    batches = opts.batches or (60 if opts.quick else 1000)
    figures = asyncio.run(main(batches, ALERTS))
    figures["quick"] = opts.quick
    b, a = figures["baseline_ms"], figures["alerts_ms"]
    print_table(
        f"applyUpdates, {MARKETS} markets' prices and books per batch ({batches} batches)",
        ["alerts", "p50 ms", "p99 ms", "p999 ms", "max ms"],
        [
            ["0 (baseline)", b["p50_ms"], b["p99_ms"], b["p999_ms"], b["max_ms"]],
            [f"{ALERTS:,}", a["p50_ms"], a["p99_ms"], a["p999_ms"], a["max_ms"]],
        ],
    )
    print_table(
        "alert checking's cost (goal <= 10 %)",
        ["figure", "value", "goal"],
        [
            ["p50 overhead vs baseline", f"{figures['overhead_p50']:.1%}", "<= 10 %"],
            ["check time / batch time", f"{figures['check_share']:.1%}", "<= 10 %"],
            ["check ms per batch (10,000 alerts)", figures["check_ms_per_batch"], ""],
            ["check ms per batch (no alert)", figures["check_ms_per_batch_baseline"], ""],
        ],
    )
    emit(figures)
