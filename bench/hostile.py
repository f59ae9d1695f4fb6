"""Hostile clients (issue 16): what one anonymous client does to everyone else.

A real ``marketpulse serve``; a bystander (the official PyPI ``convex`` client, pushed a stamp
committed 20 times a second from 127.0.0.1); then each attack of issue 16's table from
127.0.0.2 at full size. For each: the bystander's push latency p50/p99/p999/max during it
beside a quiet baseline from the same run, and the server's RSS before / at peak / after.
``--quick`` runs the attacks at a tenth of their size.

    python bench/hostile.py [--quick] [--attacks NAME ...]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _common import emit, print_table
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
    args = parser.parse_args()
    scale = 0.1 if args.quick else 1.0
    figures: dict[str, dict[str, object]] = {}
    rows = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        StoreProcess(
            Path(tmp) / "store.sqlite", functions=HOSTILE_FUNCTIONS, extra=FLAGS,
            env={"MARKETPULSE_LOG_LEVEL": "warning"},
        ) as store,
        Bystander(store.url) as bystander,
    ):  # fmt: skip
        start = time.time() * 1000.0
        time.sleep(3.0 if args.quick else args.baseline_s)
        quiet = summarize_ms(bystander.latencies_between(start, time.time() * 1000.0))
        figures["quiet"] = quiet
        rows.append(["quiet baseline", quiet["p50_ms"], quiet["p99_ms"], quiet["p999_ms"], quiet["max_ms"],
                     quiet["n"], "", "", "", ""])  # fmt: skip
        for name in args.attacks:
            result = run_attack(store.pid, store.url, bystander, name, scale)
            lat = summarize_ms(result.latencies_ms) if result.latencies_ms else {}
            figures[name] = {
                **lat,
                "rss_before_mib": round(result.rss_before_kib / 1024, 1),
                "rss_peak_mib": round(result.rss_peak_kib / 1024, 1),
                "rss_after_mib": round(result.rss_after_kib / 1024, 1),
                "details": result.details,
            }
            rows.append([
                name, lat.get("p50_ms", "-"), lat.get("p99_ms", "-"), lat.get("p999_ms", "-"),
                lat.get("max_ms", "-"), lat.get("n", 0), round(result.rss_before_kib / 1024, 1),
                round(result.rss_peak_kib / 1024, 1), round(result.rss_after_kib / 1024, 1),
                str(result.details)[:60],
            ])  # fmt: skip
        figures["bystander_errors"] = {"errors": len(bystander.errors),
                                       "write_failures": bystander.write_failures}  # fmt: skip
    print_table(
        f"Bystander push latency (ms) during each attack; goal p99 <= {GOAL_P99_MS:g} ms; "
        f"server RSS MiB",
        ["attack", "p50", "p99", "p999", "max", "n", "rss before", "rss peak", "rss after",
         "outcome"],
        rows,
    )  # fmt: skip
    emit({"goal_p99_ms": GOAL_P99_MS, "scale": scale, "attacks": figures})


if __name__ == "__main__":
    main()
