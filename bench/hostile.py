"""Hostile clients (issue 16): what one anonymous client does to everyone else.

A real ``marketpulse serve``; a bystander (the official PyPI ``convex`` client, pushed a stamp
committed 20 times a second from 127.0.0.1); then each attack of issue 16's table from
127.0.0.2 at full size. For each: the bystander's push latency p50/p99/p999/max during it
beside a quiet baseline from the same run, the server's RSS before / at peak / after, and the
server's own event-loop lag (p50/p99/p999 and the bucket of its largest sample) and longest
garbage-collection pause over the same window, from its ``/metrics`` histograms: a bystander's
tail that the loop's lag does not show was not the server's loop. ``--quick`` runs the attacks
at a tenth of their size.

    python bench/hostile.py [--quick] [--attacks NAME ...]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from _common import emit, loop_summary, print_table, scrape_loop
from marketpulse.testing import StoreProcess, summarize_ms
from marketpulse.testing._hostile import ATTACKS, HOSTILE_FUNCTIONS, Bystander, run_attack

GOAL_P99_MS = 50.0
FLAGS = ["--header-timeout", "2", "--body-timeout", "2", "--connect-timeout", "2",
         "--message-timeout", "2", "--idle-timeout", "4"]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--attacks", nargs="*", default=list(ATTACKS))
    parser.add_argument("--baseline-s", type=float, default=10.0)
    parser.add_argument(
        "--profile", metavar="FILE", help="profile the server (MARKETPULSE_PROFILE=FILE)"
    )
    args = parser.parse_args()
    scale = 0.1 if args.quick else 1.0
    figures: dict[str, dict[str, object]] = {}
    rows = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        StoreProcess(
            Path(tmp) / "store.sqlite", functions=HOSTILE_FUNCTIONS, extra=FLAGS,
            env={"MARKETPULSE_LOG_LEVEL": "warning",
                 **({"MARKETPULSE_PROFILE": args.profile} if args.profile else {})},
        ) as store,
        Bystander(store.url) as bystander,
        httpx.Client(timeout=30) as http,
    ):  # fmt: skip
        start = time.time() * 1000.0
        scraped = scrape_loop(http, store.url)
        time.sleep(3.0 if args.quick else args.baseline_s)
        quiet = summarize_ms(bystander.latencies_between(start, time.time() * 1000.0))
        loop = loop_summary(scraped, scrape_loop(http, store.url))
        figures["quiet"] = {**quiet, "loop": loop}
        rows.append(["quiet baseline", quiet["p50_ms"], quiet["p99_ms"], quiet["p999_ms"], quiet["max_ms"],
                     quiet["n"], "", "", "", *_loop_cells(loop)])  # fmt: skip
        for name in args.attacks:
            scraped = scrape_loop(http, store.url)
            result = run_attack(store.pid, store.url, bystander, name, scale)
            loop = loop_summary(scraped, scrape_loop(http, store.url))
            lat = summarize_ms(result.latencies_ms) if result.latencies_ms else {}
            figures[name] = {
                **lat,
                "rss_before_mib": round(result.rss_before_kib / 1024, 1),
                "rss_peak_mib": round(result.rss_peak_kib / 1024, 1),
                "rss_after_mib": round(result.rss_after_kib / 1024, 1),
                "loop": loop,
                "details": result.details,
            }
            rows.append([
                name, lat.get("p50_ms", "-"), lat.get("p99_ms", "-"), lat.get("p999_ms", "-"),
                lat.get("max_ms", "-"), lat.get("n", 0), round(result.rss_before_kib / 1024, 1),
                round(result.rss_peak_kib / 1024, 1), round(result.rss_after_kib / 1024, 1),
                *_loop_cells(loop),
            ])  # fmt: skip
        figures["bystander_errors"] = {"errors": len(bystander.errors),
                                       "write_failures": bystander.write_failures}  # fmt: skip
    print_table(
        f"Bystander push latency (ms) during each attack; goal p99 <= {GOAL_P99_MS:g} ms; "
        f"server RSS MiB; the server's loop lag p50/p99/p999 and max (<= bucket bound) ms; "
        f"its longest GC pause (<= bucket bound, any generation) ms and gen-2 passes",
        ["attack", "p50", "p99", "p999", "max", "n", "rss before", "rss peak", "rss after",
         "lag p50", "lag p99", "lag p999", "lag max", "gc max", "gen2"],
        rows,
    )  # fmt: skip
    emit({"goal_p99_ms": GOAL_P99_MS, "scale": scale, "attacks": figures})


def _loop_cells(loop: dict[str, Any]) -> list[Any]:
    return [loop["p50_ms"], loop["p99_ms"], loop["p999_ms"], f"<={loop['max_le_ms']:g}",
            f"<={loop['gc_max_le_ms']:g}", int(loop["gc2_pauses"])]  # fmt: skip


if __name__ == "__main__":
    main()
