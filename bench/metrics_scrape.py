"""What a ``/metrics`` scrape costs the store's event loop: loop lag under scrapes alone.

An idle ``marketpulse serve`` (SQLite) is scraped ``--rate`` times a second for ``--seconds``;
its loop-lag histogram (``marketpulse_event_loop_lag_seconds``, sampled every 10 ms) between
the first and the last scrape holds only what the scrapes cost it. Rendering the page is 1-3 ms
of Python; the store renders it on a worker thread, so the loop keeps its turns (the GIL is
handed back every switch interval). The latency benchmarks scrape four times a second, so a
scrape held on the loop shows in their loop lag p999.

Baseline in the same run: ``--before SRC`` runs the same scrapes against a store from another
checkout's ``src/`` (e.g. one from before the change), alternated with this one (``--rounds``).

    python bench/metrics_scrape.py [--rate 40] [--seconds 15] [--rounds 2] [--before ../main/src]

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from _common import (
    LAG,
    _delta,
    bucket_quantile,
    emit,
    loop_summary,
    print_table,
    scrape_loop,
)
from marketpulse.testing import StoreProcess

GOAL_P999_MS = 5.0
"""Issue 15's loop-lag goal, here for the scrapes alone."""


def _share_above(lag: dict[float, float], ms: float) -> float:
    """Percent of the samples of a lag histogram (upper bound s -> count) longer than ``ms``."""
    total = lag[float("inf")]
    within = lag[min((le for le in lag if le >= ms / 1000), default=float("inf"))]
    return round(100 * (total - within) / max(total, 1.0), 2)


def run_once(src: str | None, rate: float, seconds: float, directory: Path) -> dict[str, Any]:
    pythonpath = [src] if src else []
    with (
        StoreProcess(directory / "scrape.sqlite", pythonpath=pythonpath) as store,
        httpx.Client(timeout=10) as http,
    ):
        time.sleep(1.0)  # past the start-up
        first = scrape_loop(http, store.url)
        started, scrapes = time.monotonic(), 0
        while time.monotonic() - started < seconds:
            http.get(f"{store.url}/metrics").raise_for_status()
            scrapes += 1
            time.sleep(max(0.0, started + scrapes / rate - time.monotonic()))
        last = scrape_loop(http, store.url)
    summary = loop_summary(first, last)
    lag = _delta(first[LAG], last[LAG])
    return {
        "scrapes_per_s": round(scrapes / seconds, 1),
        "lag_p50_ms": summary["p50_ms"],
        "lag_p99_ms": summary["p99_ms"],
        "lag_p999_ms": summary["p999_ms"],
        "lag_max_le_ms": summary["max_le_ms"],
        "lag_p90_ms": round(bucket_quantile(lag, 0.9) * 1000, 3),
        "over_2ms_pct": _share_above(lag, 2.0),
        "over_3ms_pct": _share_above(lag, 3.0),
        "samples": summary["n"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=40.0, help="scrapes a second")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--before", help="another checkout's src/ for the baseline store")
    parser.add_argument("--quick", action="store_true", help="one round of 5 s")
    opts = parser.parse_args()
    seconds, rounds = (5.0, 1) if opts.quick else (opts.seconds, opts.rounds)
    variants: dict[str, str | None] = {"this": None}
    if opts.before:
        variants = {"before": opts.before, **variants}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory(prefix="bench-scrape-") as tmp:
        for n in range(rounds):
            for name, src in variants.items():
                directory = Path(tmp) / f"{name}{n}"
                directory.mkdir()
                runs[name].append(run_once(src, opts.rate, seconds, directory))
    keys = ("lag_p50_ms", "lag_p90_ms", "lag_p99_ms", "lag_p999_ms", "over_2ms_pct", "over_3ms_pct")
    rows = [
        [f"{name} #{i + 1}", r["scrapes_per_s"], *(r[k] for k in keys), f"<= {GOAL_P999_MS:g}"]
        for name, rs in runs.items()
        for i, r in enumerate(rs)
    ]
    print_table(
        f"store event-loop lag under /metrics scrapes alone (idle store, {seconds:g} s a run)",
        [
            "store",
            "scrapes/s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "p999 ms",
            "> 2 ms %",
            "> 3 ms %",
            "goal p999 ms",
        ],
        rows,
    )
    emit(
        {
            "bench": "metrics_scrape",
            "rate": opts.rate,
            "seconds": seconds,
            "before_src": opts.before,
            "goal_p999_ms": GOAL_P999_MS,
            "runs": runs,
        }
    )


if __name__ == "__main__":
    main()
