"""bench/cluster_fanout.py runs end to end in a tiny configuration: real ``serve`` nodes on a
PostgreSQL database, sockets spread over the nodes and over several 127.0.0.x source
addresses, pushes delivered on every node count, nothing dropped."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

BENCH = Path(__file__).resolve().parents[2] / "bench" / "cluster_fanout.py"


def test_bench_steps_node_counts_and_spreads_sources(postgres_url: str) -> None:
    server = postgres_url.rsplit("/", 1)[0]  # the fixture skips when no server answers
    out = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            *("--pg", server, "--nodes", "1", "2", "--clients", "20", "--markets", "10"),
            *("--steps", "100", "--seconds", "1", "--connections", "40", "--per-source", "10"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert [run["nodes"] for run in figures["capacity"]] == [1, 2]
    for run in figures["capacity"]:
        assert run["dropped"] == run["failed_queries"] == 0
        (step,) = run["steps"]
        assert step["pushes"] > 0 and step["sent_pushes_per_s"] > 0
        assert 0 < step["p50_ms"] <= step["p99_ms"] <= step["max_ms"]
    conn = figures["connections"]
    assert conn["nodes"] == 4 and conn["connections"] == 40
    assert conn["source_addresses"] == 4
    assert conn["dropped"] == conn["failed_queries"] == 0
    assert conn["pushes"] > 0 and conn["p50_ms"] <= conn["p99_ms"]
    assert figures["load_average_before"] and figures["fd_limit"] > 0
